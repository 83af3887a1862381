"""The one tag filter (curation.dataset.tags): "None" and None both select a null tag."""

from __future__ import annotations

import polars as pl
import pytest

from curation.dataset.tags import NONE_LABEL, filter_tags, stored_tag, tag_condition


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "time": ["day", "night", None, "day", None],
            "road": ["city", None, "highway", "city", "city"],
        }
    )


def ids(frame: pl.DataFrame) -> list[str]:
    return frame["image_id"].to_list()


def test_none_label_selects_null_tags(frame: pl.DataFrame) -> None:
    assert NONE_LABEL == "None"
    assert ids(filter_tags(frame, {"time": ["None"]})) == ["c", "e"]
    assert ids(filter_tags(frame, {"time": [None]})) == ["c", "e"]
    assert ids(filter_tags(frame, {"time": ["day", "None"]})) == ["a", "c", "d", "e"]
    assert ids(filter_tags(frame, {"time": ["day", None, "None"]})) == ["a", "c", "d", "e"]


def test_or_within_and_across_categories(frame: pl.DataFrame) -> None:
    assert ids(filter_tags(frame, {"time": ["day", "None"], "road": ["city"]})) == ["a", "d", "e"]
    assert ids(filter_tags(frame, {"time": ["night"], "road": ["None"]})) == ["b"]
    assert ids(filter_tags(frame, {"road": ["city"], "time": ["night"]})) == []
    assert filter_tags(frame, {"time": []}).is_empty()
    assert filter_tags(frame, {}).height == 5
    assert ids(frame.filter(tag_condition({}))) == ids(frame)


def test_unknown_category_is_an_error(frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="weather"):
        filter_tags(frame, {"weather": ["clear"]})


def test_stored_tag() -> None:
    assert stored_tag("None") is None and stored_tag(None) is None and stored_tag("day") == "day"
