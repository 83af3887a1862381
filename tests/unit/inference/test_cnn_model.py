"""The CNN backend: the shipped weights load (hash, strict keys), make sense on real photos, and the heads tag."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.inference.models import efficientnet_lite as net
from curation.inference.models.cnn import CnnModel
from curation.inference.models.heads import MANIFEST_FILE, load_heads
from curation.inference.models.labelled import REPO, load_image
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

SHARED = REPO.parent / "shared" / "datasets"
CLASSES = (Path(net.__file__).parent / "data" / "imagenet_classes.txt").read_text().splitlines()[1:]
# Road, street and rail scenes: what ImageNet classes a road or platform photo should bring to the top five.
SCENE_CLASSES = {
    "mobile home", "streetcar", "trailer truck", "moving van", "traffic light", "trolleybus", "street sign",
    "passenger car", "limousine", "beach wagon", "sports car", "cab", "minivan", "bullet train", "electric locomotive",
    "police van", "tow truck", "pickup", "jeep", "convertible", "car wheel", "grille", "racer", "school bus",
    "recreational vehicle", "garbage truck", "fire engine", "ambulance", "parking meter", "freight car",
    "steel arch bridge", "suspension bridge", "pier", "crash helmet", "motor scooter", "moped", "car mirror",
    "worm fence", "thresher", "tractor", "half track", "snowplow", "go-kart", "station wagon", "minibus",
    "jinrikisha", "barrow", "crossword puzzle", "turnstile", "subway train",
}
PHOTOS = ("intel_city_test_20357.jpg", "intel_city_train_12.jpg", "intel_city_train_8842.jpg",
          "miniplaces_highway_highway_00000210.jpg", "miniplaces_highway_highway_00000829.jpg",
          "miniplaces_inside_subway_platform_00000507.jpg")


@pytest.fixture(scope="module")
def model() -> CnnModel:
    return CnnModel()


def test_weights_hash_is_checked(tmp_path: Path) -> None:
    altered = tmp_path / net.WEIGHTS_FILE
    shutil.copyfile(net.default_weights_path(), altered)
    with open(altered, "r+b") as fh:
        fh.seek(-10, 2)
        tail = fh.read(10)
        fh.seek(-10, 2)
        fh.write(bytes(b ^ 0xFF for b in tail))
    with pytest.raises(net.WeightsError, match="SHA-256"):
        net.read_checkpoint(altered)
    with pytest.raises(net.WeightsError, match="not found"):
        net.read_checkpoint(tmp_path / "missing.pth")


def test_weights_load_strictly() -> None:
    state = net.read_checkpoint(net.default_weights_path())
    net.check_strict(state)  # the shipped checkpoint fits exactly
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    for broken, what in (({k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}, "missing"),
                         ({**state, "_blocks.99._bn0.weight": np.ones(3, np.float32)}, "unexpected"),
                         ({**state, "_conv_head.weight": np.ones((1280, 192, 1, 1), np.float32)}, "wrong shape")):
        with pytest.raises(net.WeightsError, match=what):
            net.check_strict(broken)


def _top5(model: CnnModel, images: list[Image.Image]) -> list[set[str]]:
    logits = model.imagenet_logits(images)
    return [{CLASSES[i] for i in row[:5]} for row in np.argsort(-logits, axis=1)]


@pytest.mark.skipif(not (SHARED / "real-train").is_dir(), reason="needs ../shared/datasets/real-train")
def test_imagenet_top5_make_sense_on_real_photos(model: CnnModel) -> None:
    images = [load_image(SHARED / "real-train" / "images" / name) for name in PHOTOS]
    hits = [bool(top & SCENE_CLASSES) for top in _top5(model, images)]
    assert sum(hits) == len(PHOTOS), list(zip(PHOTOS, _top5(model, images), strict=True))
    # The same check fails when the classifier's rows are out of order (a wrong class mapping).
    state = net.read_checkpoint(net.default_weights_path())
    order = np.random.default_rng(0).permutation(1000)
    state["_fc.weight"], state["_fc.bias"] = state["_fc.weight"][order], state["_fc.bias"][order]
    import onnxruntime as ort

    broken = ort.InferenceSession(net.build_graph(state).SerializeToString(), providers=["CPUExecutionProvider"])
    batch = np.stack([np.asarray(im.resize((224, 224), Image.BILINEAR)) for im in images])
    logits = broken.run(["logits"], {"image": batch})[0]
    broken_hits = [bool({CLASSES[i] for i in row[:5]} & SCENE_CLASSES) for row in np.argsort(-logits, axis=1)]
    assert sum(broken_hits) <= len(PHOTOS) // 2


def test_heads_and_manifest_are_committed_together() -> None:
    heads = load_heads()
    manifest = json.loads(MANIFEST_FILE.read_text())
    assert manifest["version"] == heads.version and manifest["weights_sha256"] == net.WEIGHTS_SHA256
    assert manifest["sources"] and all(s["photos"] > 0 for s in manifest["sources"])
    for category, head in heads.heads.items():
        assert set(head.classes) <= set(DEFAULT_TAXONOMY.classes[category])
        assert head.temperature > 0 and head.weight.shape == (len(head.classes), heads.embedding_dim)
        metrics = manifest["metrics"][category]
        assert metrics["classes"] == list(head.classes) and 0.5 < metrics["cv_accuracy"] <= 1.0
        assert all(manifest["counts"][category][c] >= 5 for c in head.classes)


def _scene(night: bool) -> Image.Image:
    rng = np.random.default_rng(1)
    sky = np.array([10, 12, 30] if night else [120, 170, 230], np.float32)
    road = np.array([15, 15, 15] if night else [90, 90, 95], np.float32)
    rows = np.linspace(0, 1, 240)[:, None, None]
    pixels = np.where(rows < 0.5, sky, road) + rng.normal(0, 6, (240, 320, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_predictions_are_tags_and_unit_embeddings(model: CnnModel) -> None:
    images = [_scene(False), _scene(True), _scene(False).resize((90, 400))]
    predictions = model.predict(images)
    assert len(predictions) == 3 and model.predict([]) == []
    for p in predictions:
        assert set(p.tags) == set(DEFAULT_TAXONOMY.categories)
        assert p.embedding.dtype == np.float32 and p.embedding.shape == (model.embedding_dim,)
        assert abs(float(np.linalg.norm(p.embedding)) - 1.0) < 1e-5
        for category, (label, confidence) in p.tags.items():
            assert 0.0 <= confidence <= 1.0
            assert label is None or label in DEFAULT_TAXONOMY.classes[category]
    again = CnnModel().predict(images[:1])[0]
    np.testing.assert_allclose(again.embedding, predictions[0].embedding, atol=1e-6)


def test_low_confidence_is_none() -> None:
    strict = CnnModel(Taxonomy(thresholds={c: 1.01 for c in DEFAULT_TAXONOMY.categories}))
    tags = strict.predict([_scene(False)])[0].tags
    assert all(label is None and confidence > 0 for label, confidence in tags.values())


def test_backend_is_cheap_to_send_to_workers(model: CnnModel) -> None:
    sent = pickle.dumps(model)
    assert len(sent) < 4096  # paths and names, never the network or the heads
    assert pickle.loads(sent).predict([_scene(True)])[0].embedding.shape == (model.embedding_dim,)


@pytest.mark.skipif(not (SHARED / "real-dev").is_dir(), reason="needs ../shared/datasets/real-dev")
def test_night_and_day_photos_are_told_apart(model: CnnModel) -> None:
    import csv

    rows = list(csv.DictReader(open(SHARED / "real-dev" / "labels.csv", encoding="utf-8")))
    picked = [r for r in rows if r["time"] == "night"][:8] + [r for r in rows if r["time"] == "day"][:8]
    preds = model.predict([load_image(SHARED / "real-dev" / "images" / r["file"]) for r in picked])
    right = sum(p.tags["time"][0] == r["time"] for p, r in zip(preds, picked, strict=True))
    assert right >= 14


@pytest.mark.skipif(not (SHARED / "real-dev").is_dir(), reason="needs ../shared/datasets/real-dev")
def test_reencoded_and_resized_copies_group_with_their_originals(model: CnnModel) -> None:
    """As the pipeline sees them: embedding, perceptual hash from the thumbnail step, the CNN's thresholds."""
    import io

    from curation.analysis.analytics import analyse, thresholds_for
    from curation.inference.thumbnails import decode_with_facts

    def jpeg(im: Image.Image, scale: float, quality: int) -> bytes:
        buf = io.BytesIO()
        im.resize((int(im.width * scale), int(im.height * scale))).save(buf, "JPEG", quality=quality)
        return buf.getvalue()

    files = sorted((SHARED / "real-dev" / "images").iterdir())
    originals = [im for im in (load_image(f) for f in files[:60]) if min(im.size) >= 300][:12]
    blobs = [jpeg(im, 1.0, 95) for im in originals] + [jpeg(im, 0.5 if i % 2 else 0.75, 70)
                                                        for i, im in enumerate(originals[:6])]
    made = [decode_with_facts(b, 256) for b in blobs]
    embedding = np.stack([p.embedding for p in model.predict([Image.open(io.BytesIO(b)).convert("RGB")
                                                              for b in blobs])])
    ids = [f"o{i}" for i in range(len(originals))] + [f"c{i}" for i in range(6)]
    result = analyse(ids, embedding, phash=[m.facts["phash"] for m in made], k=5,
                     thresholds=thresholds_for(model.embedding_name))
    group = dict(zip(result["image_id"].to_list(), result["duplicate_group"].to_list(), strict=True))
    for i in range(6):
        assert group[f"c{i}"] is not None and group[f"c{i}"] == group[f"o{i}"], f"copy {i} not with its original"
    groups = [group[f"o{i}"] for i in range(len(originals)) if group[f"o{i}"] is not None]
    assert len(groups) == len(set(groups))  # no two distinct photos in one group


def test_backend_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.inference.models.backends import load_backend
    from curation.settings import Settings

    monkeypatch.delenv("CURATION_MODEL", raising=False)
    assert Settings().model == "cnn"
    assert isinstance(load_backend("cnn"), CnnModel)
    assert load_backend("fast").name == load_backend("cpu").name == "cpu-rules-v1"
    with pytest.raises(ValueError, match="cnn \\(default\\), fast, clip"):
        load_backend("resnet")


def test_onnx_file_is_made_once_and_remade_when_damaged(tmp_path: Path) -> None:
    CnnModel(cache_dir=tmp_path)
    (made,) = tmp_path.glob("efficientnet-lite0-*.onnx")
    stamp = made.stat().st_mtime_ns
    CnnModel(cache_dir=tmp_path)
    assert made.stat().st_mtime_ns == stamp  # reused, not made again
    made.write_bytes(made.read_bytes()[:1000])  # a damaged cache file
    model = CnnModel(cache_dir=tmp_path)
    assert made.stat().st_size > 10_000_000
    assert net.file_sha256(made) == (made.parent / (made.name + ".sha256")).read_text().strip()
    assert model.predict([_scene(False)])[0].embedding.shape == (model.embedding_dim,)
