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


def agreement(results: pl.DataFrame, labels: pl.DataFrame, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> pl.DataFrame:
    """Per category, how often the predicted tag equals the label, over images that have a label.

    results needs blob_name and the category columns; labels needs file (the blob name) and the same columns.
    A None prediction counts as a miss. Returns category, labelled (images compared), agree, accuracy, none_share.
    """
    joined = results.join(labels.rename({c: f"{c}_label" for c in taxonomy.categories if c in labels.columns}),
                          left_on="blob_name", right_on="file", how="inner")
    rows = []
    for category in taxonomy.categories:
        if f"{category}_label" not in joined.columns:
            continue
        known = joined.filter(pl.col(f"{category}_label").cast(pl.String).fill_null("") != "")
        n = known.height
        agree = known.filter(pl.col(category) == pl.col(f"{category}_label")).height
        none = known.filter(pl.col(category).is_null()).height
        rows.append({"category": category, "labelled": n, "agree": agree,
                     "accuracy": agree / n if n else None, "none_share": none / n if n else None})
    return pl.DataFrame(rows, schema={"category": pl.String, "labelled": pl.Int64, "agree": pl.Int64,
                                      "accuracy": pl.Float64, "none_share": pl.Float64})
