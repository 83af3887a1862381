"""Dashboard views rendered server-side (no browser): escaping and the no-ledger message."""

from __future__ import annotations

from curation.dataset.registry import DatasetRecord, Status
from curation.dashboards.datasets_view import card_html
from curation.dashboards.gallery_view import details_html
from curation.dashboards.usage_view import NO_LEDGER, UsageView

XSS = "<img src=x onerror=alert(1)>"


def test_card_escapes_name_and_reason() -> None:
    record = DatasetRecord(id="a" * 24, name=XSS, status=Status.FAILED, failure_reason=f"bad {XSS}")
    html = card_html(record)
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Failed" in html


def test_quick_file_view_escapes_file_name_and_says_not_computed() -> None:
    details = {
        "name": XSS + ".jpg", "size": 2048, "width": 4, "height": 3, "format": "jpeg", "error": None, "src": None,
        "tags": {"time": ("day", 0.9), "weather": ("None", None)}, "analytics": False, "anomaly_score": None,
        "quality_flags": None, "kept": True,
    }
    html = details_html(details)
    assert "<img src=x" not in html and "&lt;img" in html
    assert "not computed" in html and "2.0 KB" in html and "day (0.90)" in html


def test_usage_without_ledger_says_how_to_configure() -> None:
    view = UsageView(None)
    assert NO_LEDGER.split("(")[0] in view.note.object and "CURATION_USAGE_PATH" in view.note.object


def test_teach_view_labels_image_and_page_then_teaches(tmp_path) -> None:
    import polars as pl

    from curation.dataset.catalog import Table
    from curation.dashboards.store import DataStore
    from curation.dashboards.teach_view import TeachView
    from tests.browser.dataset_builder import build_dataset

    dataset_id = build_dataset(tmp_path, 12, XSS, seed=3, analytics=False)
    store = DataStore(tmp_path)
    view = TeachView(store)
    store.open(dataset_id)
    assert view.label_image.disabled and view.teach.disabled and "No labels yet" in view.pending.object
    view._label("image")  # nothing selected: a message, not an exception
    assert 'data-kind="error"' in view.result.object and "no image selected" in view.result.object
    meta = store.catalog.dataset(dataset_id).frame(Table.METADATA)
    day = meta.filter(pl.col("time") == "day")["image_id"].to_list()
    for image_id in day[:2]:
        store.selected_image = image_id
        assert not view.label_image.disabled
        view._label("image")
    view._teach(None)  # one class only
    assert "Not taught: nothing to teach" in view.result.object
    store.selections = {**store.selections, "time": ["night"]}
    view.cls.value = "night"
    view._label("page")
    nights = meta.filter(pl.col("time") == "night").height
    assert store.pending_labels[-1]["class"] == "night" and len(store.pending_labels) == 2 + nights
    assert "<img src=x" not in view.pending.object and f"time: day 2, night {nights}" in view.pending.object
    view._teach(None)
    assert 'class="teach-meta-model">cpu-rules+probe-v1</code>' in view.result.object
    assert store.record(dataset_id).meta_model == "cpu-rules+probe-v1"
    assert store.pending_labels == [] and view.teach.disabled
    view.category.value = "road"
    assert list(view.cls.options.values()) == ["city", "highway"]
    view._clear()
    assert view.result.object == ""


def test_pending_labels_and_teach_summary_are_escaped() -> None:
    from curation.dashboards.teach_view import pending_html, summary_html

    html = pending_html([{"image_id": "a", "file": f"d/{XSS}.jpg", "category": "time", "class": "dawn_dusk"}])
    assert "<img src=x" not in html and "&lt;img src=x" in html and "dawn/dusk" in html and "time: dawn/dusk 1" in html
    summary = {"meta_model": "m<b>+probe-v1", "previous_meta_model": "m<b>", "skipped": {"road": "no labels"},
               "categories": {"time": {"labelled": {"day": 2, "night": 2}, "train_accuracy": 1.0,
                                       "tagged": {"day": 5, "night": 4}, "ignored_classes": {"dawn_dusk": 1}}}}
    html = summary_html(summary)
    assert '<code class="teach-meta-model">m&lt;b&gt;+probe-v1</code>' in html and "<b>" not in html
    assert "training accuracy 100%" in html and "not learnt (too few labels): dawn/dusk 1" in html
    assert "road" not in html  # categories without labels are not worth a line
