"""Dashboard views rendered server-side (no browser): escaping and the no-ledger message."""

from __future__ import annotations

from curation.registry import DatasetRecord, Status
from dashboards.datasets_view import card_html
from dashboards.gallery_view import details_html
from dashboards.usage_view import NO_LEDGER, UsageView

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
