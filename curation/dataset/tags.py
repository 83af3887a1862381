"""Tag selections: which images a choice of classes per category keeps.

The metadata table holds one string column per taxonomy category, null where the model was not confident. Wherever
people pick or read classes (the viewer, SDK and CLI filters, sampling strata, reports) a null tag is the class
``NONE_LABEL`` ("None"), so a selection may name it as "None" or as None. Classes are OR-ed within a category and
categories AND-ed; a category absent from the selection is not restricted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

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


def parse_filters(items: Sequence[str], taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> dict[str, list[str | None]]:
    """Filters from `CATEGORY=CLASS[,CLASS...]` strings (the CLI's --filter), checked against the taxonomy.

    Classes may be written as the viewer writes them ("dawn/dusk", "None", any case). A category given twice takes
    the classes of both. Raises ValueError naming the category's classes for a word it does not know: a misspelt
    class would otherwise select nothing, silently.
    """
    filters: dict[str, list[str | None]] = {}
    for item in items:
        category, sep, words = item.partition("=")
        category = category.strip().lower()
        if not sep or not words.strip():
            raise ValueError(f"a filter is CATEGORY=CLASS[,CLASS...], e.g. weather=rainy,None; got {item!r}")
        if category not in taxonomy.classes:
            raise ValueError(f"filter {item!r}: no category {category!r} (categories: {', '.join(taxonomy.categories)})")
        classes = taxonomy.classes[category]
        for word in (w.strip() for w in words.split(",")):
            stored = word.lower().replace("/", "_")
            if stored == NONE_LABEL.lower():
                value: str | None = None
            elif stored in classes:
                value = stored
            else:
                known = ", ".join(class_label(c) for c in (*classes, None))
                raise ValueError(f"filter {item!r}: {category} has no class {word!r} (classes: {known})")
            if value not in filters.setdefault(category, []):
                filters[category].append(value)
    return filters


def describe_filters(filters: TagFilters) -> str:
    """Filters as one line, in the viewer's words: "weather: rainy, None; road: city"."""
    return "; ".join(f"{c}: {', '.join(class_label(v) for v in values)}" for c, values in filters.items())
