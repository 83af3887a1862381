"""Counts per class, for the CLI's and the demo's summary tables."""

from __future__ import annotations

import polars as pl

from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy


def class_counts(metadata: pl.DataFrame, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> pl.DataFrame:
    """One row per (category, class) with the number of images; null tags count as class 'None'."""
    frames = []
    for category in taxonomy.categories:
        classes = pl.DataFrame({"class": [*taxonomy.classes[category], "None"]})
        counts = metadata.select(pl.col(category).fill_null("None").alias("class")).group_by("class").len("images")
        frames.append(
            classes.join(counts, on="class", how="left")
            .with_columns(pl.col("images").fill_null(0).cast(pl.Int64), pl.lit(category).alias("category"))
            .select("category", "class", "images")
        )
    return pl.concat(frames)


def labelled_counts(labels: pl.DataFrame, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> pl.DataFrame:
    """The same table for a labels CSV (blank cells are unknown and count as 'None')."""
    cleaned = labels.with_columns(
        [pl.col(c).cast(pl.String).replace("", None) for c in taxonomy.categories if c in labels.columns]
    )
    return class_counts(cleaned, taxonomy).rename({"images": "labelled"})
