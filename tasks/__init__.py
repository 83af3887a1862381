"""Prefect tasks: thin wrappers (retries, logging, no result persistence for secrets) over library calls."""
