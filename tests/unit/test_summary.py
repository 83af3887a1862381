from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from curation.summary import class_counts, labelled_counts


def test_class_counts_list_every_class_and_none():
    meta = pl.DataFrame(
        {"time": ["day", "day", None], "weather": ["foggy", None, None], "road": ["city"] * 3, "location": [None] * 3}
    )
    counts = class_counts(meta)
    time = counts.filter(pl.col("category") == "time")
    expected = pl.DataFrame(
        {"category": ["time"] * 4, "class": ["day", "night", "dawn_dusk", "None"], "images": [2, 0, 0, 1]}
    )
    assert_frame_equal(time, expected)
    assert counts.group_by("category").agg(pl.col("images").sum()).sort("category")["images"].to_list() == [3, 3, 3, 3]


def test_labelled_counts_treat_blank_as_none():
    labels = pl.DataFrame({"file": ["a", "b"], "time": ["night", ""], "weather": ["", ""], "road": ["city", "highway"], "location": ["outside", ""]})
    counts = labelled_counts(labels)
    assert counts.filter((pl.col("category") == "time") & (pl.col("class") == "None"))["labelled"].item() == 1
