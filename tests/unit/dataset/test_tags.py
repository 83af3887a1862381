"""The one tag filter (curation.dataset.tags): "None" and None both select a null tag."""

from __future__ import annotations

import polars as pl
import pytest

from curation.dataset.tags import NONE_LABEL, describe_filters, filter_tags, parse_filters, stored_tag, tag_condition


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


def test_cli_filters_parse_in_the_viewers_words_and_refuse_unknown_words():
    filters = parse_filters(["weather=Rainy,None", "time=dawn/dusk", "weather=rainy"])
    assert filters == {"weather": ["rainy", None], "time": ["dawn_dusk"]}
    assert describe_filters(filters) == "weather: rainy, None; time: dawn/dusk"
    assert parse_filters([]) == {}
    with pytest.raises(ValueError, match=r"CATEGORY=CLASS.*got 'weather'"):
        parse_filters(["weather"])
    with pytest.raises(ValueError, match=r"no category 'tme' \(categories: time, weather, road, location\)"):
        parse_filters(["tme=day"])
    with pytest.raises(ValueError, match=r"weather has no class 'rain' \(classes: clear, cloudy, rainy, foggy, snowy, None\)"):
        parse_filters(["weather=rain"])
