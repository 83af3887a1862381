"""What a finished curation run reports: counts per class, failures by reason, duration and throughput."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from curation import registry
from curation.paths import dataset_paths
from curation.registry import Status
from curation.summary import class_counts


def _reason(error: str) -> str:
    """Group errors by kind: numbers, names and paths removed so similar failures share one line."""
    return re.sub(r"'[^']*'|\d+", "…", error)[:120]


def run_report(root: Path, dataset_id: str, seconds: float | None = None) -> dict[str, Any]:
    """A JSON-ready summary of one dataset for artifacts, events and the CLI."""
    record = registry.load(root, dataset_id)
    report: dict[str, Any] = {
        "dataset_id": dataset_id,
        "name": record.name,
        "status": record.status.value,
        "failure_reason": record.failure_reason,
        "counts": record.counts.model_dump(),
        "seconds": round(seconds, 2) if seconds else None,
        "images_per_second": round(record.counts.accepted / seconds, 2) if seconds else None,
        "open": "panel serve dashboards/   (or: curation viewer)",
        "classes": [],
        "failures": {},
    }
    paths = dataset_paths(root, dataset_id)
    if record.status == Status.COMPLETED and paths.metadata.exists():
        report["classes"] = class_counts(pl.read_parquet(paths.metadata)).to_dicts()
    if paths.files.exists():
        errors = pl.read_parquet(paths.files, columns=["error"])["error"].drop_nulls().to_list()
        for error in errors:
            key = _reason(error)
            report["failures"][key] = report["failures"].get(key, 0) + 1
    return report


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for a Prefect artifact."""
    c = report["counts"]
    lines = [
        f"## {report['name']} ({report['dataset_id']}): {report['status']}",
        "",
        f"{c['found']} found, {c['accepted']} accepted, {c['processed']} processed, {c['failed']} failed.",
    ]
    if report["seconds"]:
        lines.append(f"Took {report['seconds']} s ({report['images_per_second']} images/s).")
    if report["failure_reason"]:
        lines.append(f"Reason: {report['failure_reason']}")
    if report["classes"]:
        lines += ["", "| category | class | images |", "|---|---|---|"]
        lines += [f"| {r['category']} | {r['class']} | {r['images']} |" for r in report["classes"]]
    if report["failures"]:
        lines += ["", "| failure | images |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(report["failures"].items(), key=lambda kv: -kv[1])]
    lines += ["", f"Open the viewer: `{report['open']}`"]
    return "\n".join(lines)
