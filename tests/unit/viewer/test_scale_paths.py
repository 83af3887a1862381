"""Issue #18 item 8's shortcuts give the same answers as the plain paths: tables in the files table's row order are
stacked instead of joined, and facet counts come from the tag combinations instead of every image."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.taxonomy import CATEGORIES
from curation.viewer.data import attach_by_id, class_options, facet_counts, tag_combinations


def _frames(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    files = pl.DataFrame({"image_id": [f"id{i:05d}" for i in range(n)], "blob_name": [f"b{i}.jpg" for i in range(n)]})
    values = rng.normal(size=n)
    other = pl.DataFrame({"image_id": files["image_id"], "x": values})
    return files, other


def test_aligned_tables_are_stacked_and_others_joined_with_the_same_result() -> None:
    files, other = _frames(500, 1)
    joined = files.join(other, on="image_id", how="left", maintain_order="left")
    assert attach_by_id(files, other).equals(joined)
    shuffled = other.sample(fraction=1.0, shuffle=True, seed=2)
    assert attach_by_id(files, shuffled).equals(joined)  # another order: joined
    partial = other.head(300)  # rows missing: joined, nulls for the rest
    result = attach_by_id(files, partial)
    assert result.height == 500 and result["x"].null_count() == 200
    assert result.equals(files.join(partial, on="image_id", how="left", maintain_order="left"))


classes = {c: [*v[:-1], None] for c, v in class_options().items()}


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.tuples(*(st.sampled_from(classes[c]) for c in CATEGORIES)), min_size=0, max_size=60),
    picks=st.fixed_dictionaries({c: st.lists(st.sampled_from(class_options()[c]), unique=True) for c in CATEGORIES}),
)
def test_facet_counts_from_combinations_equal_those_from_every_image(rows, picks) -> None:
    frame = pl.DataFrame(rows, schema={c: pl.String for c in CATEGORIES}, orient="row")
    selections = {c: v for c, v in picks.items() if v}
    assert facet_counts(tag_combinations(frame), selections) == facet_counts(frame, selections)
