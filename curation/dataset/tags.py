"""Tag selections: which images a choice of classes per category keeps.

The metadata table holds one string column per taxonomy category, null where the model was not confident. Wherever
people pick or read classes (the viewer, SDK and CLI filters, sampling strata, reports) a null tag is the class
``NONE_LABEL`` ("None"), so a selection may name it as "None" or as None. Classes are OR-ed within a category and
categories AND-ed; a category absent from the selection is not restricted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

NONE_LABEL = "None"


def class_label(cls: str | None) -> str:
    """How every view and table writes a class: "dawn/dusk" for the stored `dawn_dusk`, "None" for a null tag."""
    return NONE_LABEL if cls is None or cls == NONE_LABEL else str(cls).replace("_", "/")

TagFilters = Mapping[str, Sequence[str | None]]


def stored_tag(value: str | None) -> str | None:
    """The tag as stored for a selected class: None (a null tag) for None or "None", else the class itself."""
    return None if value is None or value == NONE_LABEL else value


def tag_condition(filters: TagFilters) -> pl.Expr:
    """A polars condition true for the rows whose tags match `filters` (true for every row when it is empty)."""
    conditions = []
    for category, values in filters.items():
        tags = [stored_tag(v) for v in values]
        condition = pl.col(category).is_in([t for t in tags if t is not None])
        if None in tags:
            condition = condition | pl.col(category).is_null()
        conditions.append(condition.fill_null(False))
    return pl.all_horizontal(conditions) if conditions else pl.lit(True)


def filter_tags(frame: pl.DataFrame, filters: TagFilters) -> pl.DataFrame:
    """The rows of `frame` whose tags match `filters`; raises ValueError for a category that is not a column."""
    unknown = [c for c in filters if c not in frame.columns]
    if unknown:
        raise ValueError(f"no tag column for {', '.join(map(repr, unknown))}")
    return frame.filter(tag_condition(filters)) if filters else frame
