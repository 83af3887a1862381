"""Stage 1: list storage, validate the listing, sign read-only URLs, register the dataset."""
