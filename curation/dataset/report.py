"""What a finished curation run reports (counts per class, failures by reason, duration, throughput) and the short
summary a downstream flow publishes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.counts import class_counts
from curation.inference import result_pages
from curation.dataset.registry import Status


def _reason(error: str) -> str:
    """Group errors by kind: numbers, names and paths removed so similar failures share one line."""
    return re.sub(r"'[^']*'|\d+", "…", error)[:120]


def viewer_command(root: Path) -> str:
    """The command that opens the viewer on this data root (its Datasets page lists every dataset of the root)."""
    return f"CURATION_DATA_ROOT={shlex.quote(str(Path(root).resolve()))} curation viewer"


def run_report(store: DatasetStore, seconds: float | None = None) -> dict[str, Any]:
    """A JSON-ready summary of one dataset for artifacts, events and the CLI."""
    record = store.load_record()
    report: dict[str, Any] = {
        "dataset_id": store.dataset_id,
        "name": record.name,
        "status": record.status.value,
        "failure_reason": record.failure_reason,
        "counts": record.counts.model_dump(),
        "seconds": round(seconds, 2) if seconds else None,
        "images_per_second": round(record.counts.accepted / seconds, 2) if seconds else None,
        "open": viewer_command(store.root),
        "classes": [],
        "class_counts": {},
        "failures": {},
    }
    if record.status == Status.COMPLETED and store.has(Table.METADATA):
        report["classes"] = class_counts(store.frame(Table.METADATA)).to_dicts()
        for row in report["classes"]:
            report["class_counts"].setdefault(row["category"], {})[row["class"]] = row["images"]
    if store.has(Table.FILES):
        errors = store.frame(Table.FILES, columns=["error"])["error"].drop_nulls().to_list()
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
    if c.get("retryable"):
        lines.append(
            f"{c['retryable']} of the failed images failed for a transient reason (storage unreachable or throttled): "
            f"`curation curate --resume {report['dataset_id']}` processes them again."
        )
    if report["seconds"]:
        lines.append(f"Took {report['seconds']} s ({report['images_per_second']} images/s).")
    if report["failure_reason"]:
        lines.append(f"Reason: {report['failure_reason']}")
    if report["class_counts"]:
        lines += ["", "| category | images per class |", "|---|---|"]
        for category, counts in report["class_counts"].items():
            lines.append(f"| {category} | {' · '.join(f'{label} {n}' for label, n in counts.items())} |")
    if report["failures"]:
        lines += ["", "| failure | images |", "|---|---|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(report["failures"].items(), key=lambda kv: -kv[1])]
    lines += [
        "",
        f"Open the viewer: `{report['open']}` (or `panel serve dashboards/` with the same `CURATION_DATA_ROOT`), "
        f"then dataset `{report['dataset_id']}` on the Datasets page.",
    ]
    return "\n".join(lines)


def dataset_summary(store: DatasetStore) -> dict[str, Any]:
    """A short summary of a Completed dataset read back from its Parquet: what a downstream flow reports.

    Args:
        store: a Completed dataset.
    Returns:
        images, failed, the most common label per category (with its share), duplicates and quality flags.
    Raises:
        ValueError: the dataset is not Completed.
    """
    record = store.require_completed("summarised")
    files = store.frame(Table.FILES, columns=["image_id", "error"])
    metadata = store.frame(Table.METADATA)
    most = class_counts(metadata).sort("images", descending=True).unique("category", keep="first", maintain_order=True)
    top = {
        r["category"]: {
            "label": r["class"], "images": r["images"], "share": round(r["images"] / max(metadata.height, 1), 3)
        }
        for r in most.to_dicts()
    }
    summary: dict[str, Any] = {
        "dataset_id": store.dataset_id,
        "name": record.name,
        "images": files.height,
        "failed": files["error"].is_not_null().sum(),
        "retryable": files["error"].str.starts_with(result_pages.RETRYABLE).sum(),
        "top_labels": top,
        "duplicates": 0,
        "quality_flags": {},
    }
    if store.has(Table.ANALYTICS):
        analytics = store.frame(Table.ANALYTICS, columns=["duplicate_group", "quality_flags"])
        summary["duplicates"] = analytics["duplicate_group"].is_not_null().sum()
        flags = analytics["quality_flags"].explode().drop_nulls().value_counts(sort=True).rows()
        summary["quality_flags"] = {flag: n for flag, n in flags}
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as Markdown, for the downstream flow's artifact."""
    lines = [
        f"## Summary of {summary['name']} ({summary['dataset_id']})",
        "",
        f"{summary['images']} images, {summary['failed']} failed"
        + (f" ({summary['retryable']} retryable)" if summary.get("retryable") else "")
        + f", {summary['duplicates']} in duplicate groups.",
        "",
        "| category | most common | images | share |",
        "|---|---|---|---|",
    ]
    lines += [f"| {c} | {t['label']} | {t['images']} | {t['share']:.0%} |" for c, t in summary["top_labels"].items()]
    if summary["quality_flags"]:
        lines += ["", "Quality flags: " + ", ".join(f"{flag} {n}" for flag, n in summary["quality_flags"].items())]
    return "\n".join(lines)
