"""Stage 3: the data root: the dataset catalog, registry records, results Parquet, versions, export."""
