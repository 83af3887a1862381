"""The service returns each image's file facts, quality signals and thumbnail, made on the decode the model needs."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.inference import workpool
from curation.inference.imaging import at_min_side, decode_image
from curation.inference.models.base import Prediction
from curation.inference.models.cpu import CpuModel
from curation.inference.result_pages import ARROW_STREAM, FILE_COLUMNS, file_fields, from_ipc, page_schema
from curation.inference.service.jobs import predict_batch
from curation.settings import Settings
from curation.taxonomy import CATEGORIES
from curation.inference.thumbnails import decode_with_facts, signal_names
from tests.images import jpeg_bytes
from tests.unit.inference.test_service import make_client, wait_done

ARROW = {"Accept": ARROW_STREAM}
SIDE = 256
SAMPLES = {
    "landscape.jpg": jpeg_bytes(1, (1280, 720)),
    "portrait.jpg": jpeg_bytes(2, (600, 900)),
    "small.jpg": jpeg_bytes(3, (160, 120)),
    "odd.jpg": jpeg_bytes(4, (1001, 777)),
    "image.png": jpeg_bytes(5, (400, 300), fmt="PNG"),
    "broken.jpg": b"not an image",
}


class Recorder:
    """A backend that records the sizes it was given and tags by them; it crashes when told to."""

    name, embedding_name, embedding_dim = "recorder", "recorder", 2

    def __init__(self, input_side: int, crash: bool = False) -> None:
        self.input_side, self.crash, self.seen = input_side, crash, []

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        if self.crash:
            raise RuntimeError("out of cheese")
        self.seen += [im.size for im in images]
        return [Prediction({"time": ("day", 1.0)}, np.float32(im.size)) for im in images]


class Killer(Recorder):
    """Kills its worker process, as a crashing native library would."""

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        os._exit(3)


def test_one_decode_gives_the_facts_thumbnail_and_the_models_input():
    model = CpuModel()
    work = [(model, data, model.input_side, SIDE) for data in SAMPLES.values()]
    outcomes = predict_batch(work)
    assert len(outcomes) == len(SAMPLES)
    for (name, data), (pred, error, facts, thumbnail) in zip(SAMPLES.items(), outcomes, strict=True):
        made = decode_with_facts(data, SIDE)
        assert facts == made.facts and thumbnail == made.thumbnail, name
        if name == "broken.jpg":
            assert (pred, error, thumbnail) == (None, "not a recognised image format", None)
            assert facts["error"] == error and facts["content_hash"] and facts["width"] is None
            continue
        [expected] = model.predict([at_min_side(decode_image(data, min_side=SIDE), model.input_side)])
        assert error is None and pred.tags == expected.tags
        assert pred.embedding.tobytes() == expected.embedding.tobytes()
        assert set(signal_names()) <= set(facts) and Image.open(io.BytesIO(thumbnail)).format == "JPEG"


def test_the_model_input_is_a_direct_decode_when_it_needs_more_pixels_than_the_thumbnail():
    data = SAMPLES["landscape.jpg"]
    small, large = Recorder(input_side=120), Recorder(input_side=300)
    [(_, _, facts_small, _)] = predict_batch([(small, data, 120, SIDE)])
    [(pred, error, facts, thumbnail)] = predict_batch([(large, data, 300, SIDE)])
    assert small.seen == [decode_image(data, min_side=120).image.size] == [(320, 180)]
    assert large.seen == [decode_image(data, min_side=300).image.size] == [(640, 360)]
    assert error is None and facts == facts_small == decode_with_facts(data, SIDE).facts
    assert thumbnail == decode_with_facts(data, SIDE).thumbnail


def test_a_model_crash_keeps_the_facts_and_thumbnails():
    work = [(Recorder(120, crash=True), data, 120, SIDE) for data in SAMPLES.values()]
    for (name, data), (pred, error, facts, thumbnail) in zip(SAMPLES.items(), predict_batch(work), strict=True):
        made = decode_with_facts(data, SIDE)
        assert pred is None and facts == made.facts and thumbnail == made.thumbnail
        if name == "broken.jpg":
            assert error == "not a recognised image format"
        else:
            assert error == "model error: RuntimeError: out of cheese"


def test_without_a_thumbnail_side_nothing_changes():
    model = CpuModel()
    outcomes = predict_batch([(model, data, model.input_side, None) for data in SAMPLES.values()])
    for data, (pred, error, facts, thumbnail) in zip(SAMPLES.values(), outcomes, strict=True):
        assert facts is None and thumbnail is None
        if pred is None:
            assert error == "not a recognised image format"
        else:
            [expected] = model.predict([decode_image(data, min_side=model.input_side).image])
            assert pred.embedding.tobytes() == expected.embedding.tobytes() and pred.tags == expected.tags


def test_a_dying_worker_gives_the_same_shape_with_the_content_hash():
    from curation.inference.service.jobs import _worker_died

    data = SAMPLES["small.jpg"]
    work = [(Killer(120), data, 120, SIDE), (Killer(120), data, 120, None)]
    outcomes = workpool.run_batch(predict_batch, work, _worker_died, settings=Settings(work_processes=1))
    reason = "model error: the worker process died while processing this image (crash or out of memory)"
    with_side, without = outcomes
    assert with_side[:2] == (None, reason) and with_side[3] is None
    assert with_side[2] == {"content_hash": decode_with_facts(data, SIDE).facts["content_hash"], "width": None,
                            "height": None, "format": None, "error": reason}
    assert without == (None, reason, None, None)


def test_file_fields_order_and_types():
    fields = file_fields(signal_names())
    names = [f.name for f in fields]
    others = [n for n in signal_names() if n != "phash"]
    assert names == [*FILE_COLUMNS, "phash", *others]
    assert FILE_COLUMNS == ("content_hash", "width", "height", "format", "thumbnail")
    assert [f.type for f in fields[:6]] == [pa.string(), pa.int32(), pa.int32(), pa.string(), pa.binary(), pa.int64()]
    assert all(f.type == pa.float64() for f in fields[6:])
    schema = page_schema(CATEGORIES, 4, signal_names())
    assert schema.names[: schema.get_field_index("embedding") + 1] == page_schema(CATEGORIES, 4).names


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """One app, a job with a thumbnail side and one without, over the same images plus one that cannot be fetched."""
    folder = tmp_path_factory.mktemp("images")
    for name, data in SAMPLES.items():
        (folder / name).write_bytes(data)
    names = [*SAMPLES, "missing.jpg"]
    items = [{"image_id": n, "url": (folder / n).as_uri(), "size": 1} for n in names]
    client = make_client(allow_file_urls=True)
    with_side = client.post("/v1/jobs", json={"items": items, "thumbnail_side": SIDE}).json()
    without = client.post("/v1/jobs", json={"items": items}).json()
    assert (with_side["thumbnail_side"], without["thumbnail_side"]) == (SIDE, None)
    for job in (with_side, without):
        assert wait_done(client, job["job_id"])["status"] == "Completed"
    return client, with_side["job_id"], without["job_id"]


def test_an_arrow_page_carries_the_file_columns(served):
    client, job_id, _ = served
    response = client.get(f"/v1/jobs/{job_id}/results", headers=ARROW)
    table = from_ipc(response.content)
    assert table.schema == page_schema(CATEGORIES, CpuModel().embedding_dim, signal_names())
    rows = {r["image_id"]: r for r in table.to_pylist()}
    for name, data in SAMPLES.items():
        made = decode_with_facts(data, SIDE)
        row = rows[name]
        assert row["thumbnail"] == made.thumbnail
        for field in file_fields(signal_names()):
            if field.name != "thumbnail":
                assert row[field.name] == made.facts.get(field.name), (name, field.name)
    assert rows["broken.jpg"]["error"] == "not a recognised image format" and rows["broken.jpg"]["content_hash"]
    missing = rows["missing.jpg"]
    assert missing["error"] and all(missing[f.name] is None for f in file_fields(signal_names()))
    assert table["thumbnail"].null_count == 2 and table["content_hash"].null_count == 1


def test_json_results_never_carry_facts_or_thumbnails(served):
    client, job_id, _ = served
    items = client.get(f"/v1/jobs/{job_id}/results").json()["items"]
    assert len(items) == len(SAMPLES) + 1
    assert all(set(item) == {"image_id", "tags", "embedding", "error"} for item in items)


def test_a_job_without_a_thumbnail_side_has_no_file_columns(served):
    client, with_side, without = served
    table = from_ipc(client.get(f"/v1/jobs/{without}/results", headers=ARROW).content)
    assert table.schema == page_schema(CATEGORIES, CpuModel().embedding_dim)
    same = from_ipc(client.get(f"/v1/jobs/{with_side}/results", headers=ARROW).content)
    by_id = {r["image_id"]: r for r in same.to_pylist()}
    for row in table.to_pylist():  # one decode or two, the model sees near-equal pixels: the same tags here
        assert row["error"] == by_id[row["image_id"]]["error"]


@pytest.mark.parametrize("side", [8, 15, 2049, "big"])
def test_a_thumbnail_side_out_of_range_is_refused(side):
    response = make_client().post("/v1/jobs", json={"items": [], "thumbnail_side": side})
    assert response.status_code == 422


def test_an_old_journal_loads_without_facts(tmp_path):
    """A journal written before thumbnail sides existed: no thumbnail_side in job.json, no facts in the lines."""
    job = tmp_path / "state" / "oldjob"
    job.mkdir(parents=True)
    (job / "items.jsonl").write_text(json.dumps({"image_id": "a", "url": "http://example.invalid/a.jpg", "size": 1}))
    (job / "results.jsonl").write_text(json.dumps({"image_id": "a", "tags": None, "embedding": None, "error": "x"}))
    from curation.inference.service.usage import key_id
    from tests.unit.inference.test_service import KEY

    meta = {"id": "oldjob", "owner": key_id(KEY), "model": "m", "embedding_model": "e", "idempotency_key": None,
            "created": "2026-01-01T00:00:00+00:00"}
    (job / "job.json").write_text(json.dumps(meta))
    client = make_client(service_state_dir=tmp_path / "state")
    status = client.get("/v1/jobs/oldjob").json()
    assert (status["status"], status["done"], status["failed"], status["thumbnail_side"]) == ("Completed", 1, 1, None)
    table = from_ipc(client.get("/v1/jobs/oldjob/results", headers=ARROW).content)
    assert table.column_names[-1] == "embedding" and table["error"].to_pylist() == ["x"]


def test_worker_processes_read_local_files_themselves(tmp_path, monkeypatch):
    """With worker processes, the embedded service hands them file:// images to read: the bytes never pass through
    this process, and what a worker cannot read is still an error with its reason (oversize, missing)."""
    from curation.inference.service.jobs import JobRunner

    def no_reads_here(self, item):  # noqa: ANN001, ANN202
        raise AssertionError(f"read in the service process: {item.url}")

    monkeypatch.setattr(JobRunner, "_fetch", no_reads_here)
    (tmp_path / "ok.jpg").write_bytes(SAMPLES["landscape.jpg"])
    (tmp_path / "big.jpg").write_bytes(SAMPLES["landscape.jpg"] + b"\0" * 200_000)
    names = ["ok.jpg", "big.jpg", "missing.jpg"]
    items = [{"image_id": n, "url": (tmp_path / n).as_uri(), "size": 1} for n in names]
    client = make_client(allow_file_urls=True, work_processes=1, max_image_bytes=150_000)
    job = client.post("/v1/jobs", json={"items": items, "thumbnail_side": SIDE}).json()
    assert wait_done(client, job["job_id"])["status"] == "Completed"
    rows = {r["image_id"]: r for r in from_ipc(client.get(f"/v1/jobs/{job['job_id']}/results", headers=ARROW).content).to_pylist()}
    made = decode_with_facts(SAMPLES["landscape.jpg"], SIDE)
    assert rows["ok.jpg"]["error"] is None and rows["ok.jpg"]["thumbnail"] == made.thumbnail
    assert rows["ok.jpg"]["content_hash"] == made.facts["content_hash"]
    assert rows["big.jpg"]["error"] == "image is larger than the 150000-byte cap" and rows["big.jpg"]["thumbnail"] is None
    assert rows["missing.jpg"]["error"].startswith("no such file") and rows["missing.jpg"]["content_hash"] is None


def test_a_dying_worker_hashes_the_local_file_it_was_given(tmp_path):
    from curation.inference.service.jobs import LocalFile, _worker_died

    data = SAMPLES["small.jpg"]
    (tmp_path / "s.jpg").write_bytes(data)
    work = [(Killer(120), LocalFile((tmp_path / "s.jpg").as_uri(), 10**6), 120, SIDE)]
    [outcome] = workpool.run_batch(predict_batch, work, _worker_died, settings=Settings(work_processes=1))
    assert outcome[2]["content_hash"] == decode_with_facts(data, SIDE).facts["content_hash"]
