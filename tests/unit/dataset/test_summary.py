from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from curation.dataset.counts import class_counts, labelled_counts


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


def test_agreement_counts_none_as_a_miss_and_skips_unlabelled():
    from curation.dataset.counts import agreement

    results = pl.DataFrame({"blob_name": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "time": ["day", "night", None, "day"],
                            "weather": ["clear"] * 4, "road": ["city"] * 4, "location": ["outside"] * 4})
    labels = pl.DataFrame({"file": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "time": ["day", "day", "night", ""],
                           "weather": ["clear", "rainy", "", ""], "road": ["city"] * 4, "location": ["inside"] * 4})
    table = {r["category"]: r for r in agreement(results, labels).iter_rows(named=True)}
    assert (table["time"]["labelled"], table["time"]["agree"], table["time"]["none_share"]) == (3, 1, 1 / 3)
    assert (table["weather"]["labelled"], table["weather"]["agree"]) == (2, 1)
    assert table["road"]["accuracy"] == 1.0 and table["location"]["accuracy"] == 0.0
