"""The full-size viewer's reads (a path kept inside the dataset's folder, a one-blob SAS or nothing) and deep links."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from pydantic import SecretStr

from curation.dataset.registry import DatasetRecord
from curation.ingest.storage import StorageError
from curation.settings import Settings
from curation.viewer.data import (
    MAX_SIDE,
    SAS_MINUTES,
    OriginalRefused,
    class_options,
    image_data_uri,
    link_query,
    local_original_path,
    original_image,
    parse_link,
)

AZURE = {"kind": "azure", "account_name": "acct", "container_name": "images", "prefix": None}
KEY = "c2VjcmV0LWFjY291bnQta2V5"  # never in a note or a src, except inside the one signed URL


def _jpeg(path: Path, size: tuple[int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 40, 40)).save(path, format="JPEG")
    return path.read_bytes()


def _record(storage: dict) -> DatasetRecord:
    return DatasetRecord(id="0123456789abcdef01234567", name="d", storage=storage)


def _settings(**kwargs: object) -> Settings:
    """Settings without any Azure credential from the environment, plus `kwargs`."""
    keys = ("azure_account_key", "azure_sas_token", "azure_connection_string", "azure_client_secret")
    blank = {k: None for k in keys}
    return Settings(**{**blank, "azure_ad": False, **kwargs})


class FakeStorage:
    """Records what the viewer asks of the storage; fails with `error` when given."""

    def __init__(self, error: Exception | None = None) -> None:
        self.signed: list[tuple[str, datetime]] = []
        self.read: list[str] = []
        self.error = error

    def sign_url(self, name: str, expiry: datetime) -> str:
        if self.error:
            raise self.error
        self.signed.append((name, expiry))
        return f"https://acct.blob.core.windows.net/images/{name}?sp=r&sig=one-blob"

    def read_bytes(self, name: str) -> bytes:
        if self.error:
            raise self.error
        self.read.append(name)
        buf = io.BytesIO()
        Image.new("RGB", (40, 30)).save(buf, format="JPEG")
        return buf.getvalue()


# -- the path check ---------------------------------------------------------------------------------------------
def test_a_plain_name_reads_inside_the_folder(tmp_path: Path) -> None:
    _jpeg(tmp_path / "imgs" / "a" / "b.jpg", (10, 10))
    assert local_original_path(tmp_path / "imgs", "a/b.jpg") == (tmp_path / "imgs" / "a" / "b.jpg").resolve()


@pytest.mark.parametrize("name", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "", "..", "C:/x.jpg",
                                  "\\\\server\\share\\x.jpg", "a\\..\\..\\x.jpg"])
def test_a_name_leaving_the_folder_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "imgs").mkdir()
    _jpeg(tmp_path / "secret.jpg", (10, 10))
    with pytest.raises(OriginalRefused):
        local_original_path(tmp_path / "imgs", name)


def test_a_symlink_leading_out_is_refused_one_inside_is_followed(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    _jpeg(tmp_path / "outside" / "secret.jpg", (10, 10))
    _jpeg(folder / "real" / "in.jpg", (10, 10))
    (folder / "out.jpg").symlink_to(tmp_path / "outside" / "secret.jpg")
    (folder / "outdir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (folder / "alias.jpg").symlink_to(folder / "real" / "in.jpg")
    for name in ("out.jpg", "outdir/secret.jpg"):
        with pytest.raises(OriginalRefused, match="leads out"):
            local_original_path(folder, name)
    assert local_original_path(folder, "alias.jpg") == (folder / "real" / "in.jpg").resolve()
    # and the viewer says so instead of reading it
    shown = original_image(_record({"kind": "local", "path": str(folder)}), "out.jpg", _settings())
    assert shown.src is None and "refused" in shown.note and "thumbnail" in shown.note


# -- local originals ----------------------------------------------------------------------------------------------
def test_a_small_original_is_sent_as_it_is_a_large_one_downscaled(tmp_path: Path) -> None:
    small = _jpeg(tmp_path / "small.jpg", (640, 480))
    _jpeg(tmp_path / "big.jpg", (4000, 3000))
    record = _record({"kind": "local", "path": str(tmp_path), "prefix": None})
    shown = original_image(record, "small.jpg", _settings())
    assert shown.src == "data:image/jpeg;base64," + base64.b64encode(small).decode()
    assert "640 \u00d7 480" in shown.note and "downscaled" not in shown.note
    shown = original_image(record, "big.jpg", _settings())
    with Image.open(io.BytesIO(base64.b64decode(shown.src.split(",", 1)[1]))) as sent:
        assert max(sent.size) == MAX_SIDE and sent.size == (2048, 1536)
    assert "4,000 \u00d7 3,000" in shown.note and "downscaled to 2,048 px" in shown.note


def test_a_missing_or_undecodable_original_falls_back_to_the_thumbnail(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    record = _record({"kind": "local", "path": str(tmp_path)})
    missing = original_image(record, "gone.jpg", _settings())
    assert missing.src is None and "missing" in missing.note
    junk = original_image(record, "junk.jpg", _settings())
    assert junk.src is None and "cannot be decoded" in junk.note
    assert original_image(_record({}), "x.jpg", _settings()).src is None  # no storage descriptor
    with pytest.raises(OSError):
        image_data_uri(b"not an image")


# -- Azure: one blob's short SAS, or nothing ---------------------------------------------------------------------------
def test_with_an_account_key_the_browser_gets_a_short_read_sas_for_that_blob_only() -> None:
    fake, opened = FakeStorage(), []
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def opener(config, settings):
        opened.append(config)
        return fake

    shown = original_image(_record(AZURE), "cam/1.jpg", _settings(azure_account_key=SecretStr(KEY)), now=now,
                           opener=opener)
    assert fake.signed == [("cam/1.jpg", now + timedelta(minutes=SAS_MINUTES))] and SAS_MINUTES <= 15
    assert shown.src == "https://acct.blob.core.windows.net/images/cam/1.jpg?sp=r&sig=one-blob"
    assert opened[0].account_key.get_secret_value() == KEY  # the credential came from the settings (environment)
    assert KEY not in shown.note and "15 minutes" in shown.note


def test_a_credentials_block_is_asked_through_the_hook() -> None:
    fake = FakeStorage()
    asked = []

    def from_block(config):
        asked.append(config.credentials_block)
        return config.model_copy(update={"account_key": SecretStr(KEY)})

    record = _record({**AZURE, "credentials_block": "curation-azure"})
    shown = original_image(record, "a.jpg", _settings(), credentials=from_block, opener=lambda c, s: fake)
    assert asked == ["curation-azure"] and shown.src and fake.signed


def test_without_credentials_nothing_is_opened_and_the_reason_is_one_line() -> None:
    def opener(config, settings):
        raise AssertionError("the storage must not be opened without a credential")

    shown = original_image(_record(AZURE), "a.jpg", _settings(), opener=opener)
    assert shown.src is None and "No Azure credentials" in shown.note and "\n" not in shown.note


def test_a_container_sas_never_reaches_the_page_the_server_reads_the_blob() -> None:
    fake, token = FakeStorage(), "sv=2024&sp=rl&sig=CONTAINER-WIDE"
    shown = original_image(_record(AZURE), "a.jpg", _settings(azure_sas_token=SecretStr(token)),
                           opener=lambda c, s: fake)
    assert fake.signed == [] and fake.read == ["a.jpg"]
    assert shown.src.startswith("data:image/jpeg;base64,") and token not in shown.src and token not in shown.note


def test_an_unreachable_blob_falls_back_with_the_storage_s_redacted_reason() -> None:
    fake = FakeStorage(StorageError("cannot read blob 'a.jpg': could not reach https://acct.blob.core.windows.net"))
    shown = original_image(_record(AZURE), "a.jpg", _settings(azure_account_key=SecretStr(KEY)),
                           opener=lambda c, s: fake)
    assert shown.src is None and "could not reach" in shown.note and KEY not in shown.note
    other = FakeStorage(RuntimeError(f"boom {KEY}"))  # a raw SDK error: its class only, never its text
    shown = original_image(_record(AZURE), "a.jpg", _settings(azure_account_key=SecretStr(KEY)),
                           opener=lambda c, s: other)
    assert shown.src is None and "RuntimeError" in shown.note and KEY not in shown.note


# -- deep links ---------------------------------------------------------------------------------------------------
def test_a_link_round_trips_the_view() -> None:
    selections = {c: list(v) for c, v in class_options().items()}
    selections["time"] = ["day", "None"]
    query = link_query("abc", selections, 0.6, "img1", True)
    assert query == "?dataset=abc&fraction=0.6&time=day,None&image=img1&full=1"
    link = parse_link(query)
    assert (link.dataset_id, link.fraction, link.image_id, link.full, link.problems) == ("abc", 0.6, "img1", True, ())
    assert link.selections == selections
    assert link_query(None, selections, 1.0, None, False) == ""
    assert link_query("abc", {c: list(v) for c, v in class_options().items()}, 1.0, None, True) == "?dataset=abc"


def test_a_bad_link_keeps_what_it_can_and_names_the_rest() -> None:
    link = parse_link("dataset=abc&time=day,<script>&fraction=7&weather=")
    assert link.selections["time"] == ["day"] and link.selections["weather"] == []
    assert link.fraction == 1.0
    assert any("<script>" in p for p in link.problems) and any("fraction 7" in p for p in link.problems)
    assert parse_link("fraction=0.55").fraction == 0.6  # the slider's 20% steps
    assert parse_link("time=dusk").selections["time"] == class_options()["time"]  # no known class: no restriction
    assert parse_link("").dataset_id is None


def test_a_link_carries_the_drawn_region_exactly() -> None:
    from curation.viewer.region import MAX_VERTICES, Region

    everything = {c: list(v) for c, v in class_options().items()}
    lasso = Region("lasso", (0.1, 2.0000000000000004, -1e-05), (3.3333333333333335, -7.25, 1.5))
    query = link_query("abc", everything, 1.0, None, False, region=lasso)
    assert query == "?dataset=abc&region=lasso:0.1,3.3333333333333335;2.0000000000000004,-7.25;-1e-05,1.5"
    assert parse_link(query).region == lasso  # the same floats: the same images selected
    box = Region("box", (-1.5, 2.0), (0.25, 4.0))
    assert parse_link(link_query("abc", everything, 1.0, None, False, region=box)).region == box
    for bad in ("box:1,2,3", "lasso:1,2;3,4", "lasso:1,2;3,nan;5,6", "circle:1,2,3", "box:a,b,c,d",
                "lasso:" + ";".join(["1,2"] * (MAX_VERTICES + 1))):
        link = parse_link(f"dataset=abc&region={bad}")
        assert link.region is None and link.dataset_id == "abc"
        assert [p for p in link.problems if p.startswith("the region is not one the viewer draws")], bad
