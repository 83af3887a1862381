"""Helpers for the dashboard: load a dataset's tables, filter, count, page, sample and decimate (read-only), and
collect teach-by-example labels and run curation.analysis.teach on them (the only writes).

Pure polars functions (plus a few file reads), so everything the dashboard shows can be tested without a browser.
A category selection maps a category to the classes kept, as `curation.dataset.tags` reads it: "None"
(``NONE_LABEL``) stands for a null tag, classes are OR-ed within a category and categories AND-ed.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import polars as pl

from curation.analysis import teach
from curation.dataset.atomic import write_text_atomic
from curation.dataset.catalog import Catalog, DatasetStore, PathRefused, Table
from curation.dataset.registry import DatasetRecord
from curation.dataset.tags import NONE_LABEL, class_label, stored_tag, tag_condition
from curation.sampling.order import sample_ids, step_size
from curation.sampling.subsets import sample_dataset
from curation.taxonomy import CATEGORIES, DEFAULT_TAXONOMY, Taxonomy
from curation.viewer.region import Region, region_from_query, region_to_query

Selections = Mapping[str, Sequence[str | None]]

ANALYTICS_COLUMNS = ("anomaly_score", "similar_ids", "similar_distances", "duplicate_group", "quality_flags")


def attach_by_id(frame: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
    """`frame` left-joined with `other` on image_id. Tables the pipeline writes share the files table's row order, and
    then the join is a horizontal stack (checked: the id columns are equal row by row); a 1M-row string join costs
    about a second, the check 10 ms."""
    if other.height == frame.height and other["image_id"].equals(frame["image_id"]):
        return frame.hstack(other.drop("image_id").get_columns())
    return frame.join(other, on="image_id", how="left", maintain_order="left")


def load_images(store: DatasetStore) -> pl.DataFrame:
    """One row per image: files joined with metadata, and the 3D layout and analytics when present.

    The embedding vectors themselves are never read (only x, y, z), so 100k images stay small in memory.
    """
    frame = attach_by_id(store.frame(Table.FILES), store.frame(Table.METADATA))
    if store.has(Table.EMBEDDINGS):
        frame = attach_by_id(frame, store.frame(Table.EMBEDDINGS, columns=["image_id", "x", "y", "z"]))
    if store.has(Table.ANALYTICS):
        columns = store.schema(Table.ANALYTICS).names
        keep = [c for c in ANALYTICS_COLUMNS if c in columns]
        frame = attach_by_id(frame, store.frame(Table.ANALYTICS, columns=["image_id", *keep]))
    return frame


def apply_filters(frame: pl.DataFrame, selections: Selections, skip: str | None = None) -> pl.DataFrame:
    """Rows matching every category's selection (OR within, AND across); `skip` ignores one category, and so is a
    category the frame has no column for."""
    restricted = {c: v for c, v in selections.items() if c != skip and c in frame.columns}
    return frame.filter(tag_condition(restricted)) if restricted else frame


def class_options(taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> dict[str, list[str]]:
    """The classes of each category, with the None class last."""
    return {c: [*taxonomy.classes[c], NONE_LABEL] for c in taxonomy.categories}


def tag_combinations(frame: pl.DataFrame, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> pl.DataFrame:
    """How many images carry each combination of tags (null tags kept): a few hundred rows however large the dataset,
    so facet counts under any selection are computed from it instead of from every image."""
    return frame.group_by([c for c in taxonomy.categories if c in frame.columns]).agg(pl.len().alias("images"))


def facet_counts(frame: pl.DataFrame, selections: Selections, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> dict[str, dict[str, int]]:
    """Per category and class, the images that would match if that class were ticked.

    Each category is counted under the other categories' selections (faceted search), so a count tells what
    ticking the class adds; classes absent from the data count 0; null tags count under "None". `frame` is one row
    per image, or `tag_combinations` of the images (its `images` column weighs each row).
    """
    weight = pl.col("images").sum() if "images" in frame.columns else pl.len()
    frame = frame.select([c for c in (*taxonomy.categories, "images") if c in frame.columns])  # never filter the rest
    out: dict[str, dict[str, int]] = {}
    for category, classes in class_options(taxonomy).items():
        rows = apply_filters(frame, selections, skip=category)
        counts = rows.group_by(pl.col(category).fill_null(NONE_LABEL).alias("cls")).agg(weight.alias("n"))
        found = dict(zip(counts["cls"].to_list(), counts["n"].to_list(), strict=True))
        out[category] = {cls: int(found.get(cls, 0)) for cls in classes}
    return out


def restricted_filters(selections: Selections, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> dict[str, list[str | None]]:
    """The selection as `curation.sampling.subsets` filters: only restricted categories, "None" as None."""
    options = class_options(taxonomy)
    out: dict[str, list[str | None]] = {}
    for category, values in selections.items():
        if set(values) >= set(options.get(category, [])):
            continue  # every class ticked: no restriction
        out[category] = [stored_tag(v) for v in values]
    return out


def mark_kept(frame: pl.DataFrame, sampling: pl.DataFrame | None, fraction: float) -> pl.DataFrame:
    """Add `kept`: whether the image is in the sample at `fraction` (all kept at 1.0 or without sampling).

    Same rule as `curation.sampling.subsets.selected_ids`: below 1.0 only the prefix of keep_rank is kept.
    """
    if sampling is None or fraction >= 1.0:
        return frame.with_columns(pl.lit(True).alias("kept"))
    if "keep_rank" in frame.columns:  # joined once at load: a comparison, not a set lookup of 1M strings
        return frame.with_columns((pl.col("keep_rank") < step_size(fraction, sampling.height)).fill_null(False).alias("kept"))
    ids = sample_ids(sampling, fraction)
    return frame.with_columns(pl.col("image_id").is_in(ids.implode()).alias("kept"))


def page_bounds(total: int, page: int, per_page: int) -> tuple[int, int, int, int]:
    """(page clamped to 1..pages, start, stop, pages) for a 1-based page of `per_page` rows."""
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    return page, start, min(start + per_page, total), pages


def page_rows(frame: pl.DataFrame, page: int, per_page: int) -> pl.DataFrame:
    """The rows of one page."""
    _, start, stop, _ = page_bounds(frame.height, page, per_page)
    return frame.slice(start, stop - start)


@lru_cache(maxsize=4096)
def _data_uri(path: str, mtime_ns: int) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def thumbnail_data_uri(catalog: Catalog, relative: str | None) -> str | None:
    """The thumbnail a files table names (relative to the data root) as a data: URI (cached), or None when the
    catalog refuses the path (it would leave the root) or the file is missing."""
    try:
        path = catalog.resolve(relative)
        return _data_uri(str(path), path.stat().st_mtime_ns)
    except (PathRefused, OSError):
        return None


def decimate(frame: pl.DataFrame, max_points: int, keep_ids: Iterable[str] = (), seed: int = 0) -> pl.DataFrame:
    """At most `max_points` rows drawn uniformly (seeded), plus every row whose id is in `keep_ids`."""
    if frame.height <= max_points:
        return frame
    keep = pl.col("image_id").is_in(pl.Series(list(keep_ids), dtype=pl.String).implode())
    sample = frame.sample(n=max_points, seed=seed)
    forced = frame.filter(keep).join(sample.select("image_id"), on="image_id", how="anti")
    return pl.concat([sample, forced], how="vertical")


def distribution(frame: pl.DataFrame, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> pl.DataFrame:
    """Per category and class: images in `frame` (full) and those with `kept` (sample), with their shares."""
    kept = frame.filter(pl.col("kept")) if "kept" in frame.columns else frame
    rows = []
    for category, classes in class_options(taxonomy).items():
        full = dict(frame.group_by(pl.col(category).fill_null(NONE_LABEL).alias("c")).len().iter_rows())
        sample = dict(kept.group_by(pl.col(category).fill_null(NONE_LABEL).alias("c")).len().iter_rows())
        for cls in classes:
            rows.append({"category": category, "class": cls, "full": full.get(cls, 0), "sample": sample.get(cls, 0)})
    out = pl.DataFrame(rows, schema={"category": pl.String, "class": pl.String, "full": pl.Int64, "sample": pl.Int64})
    return out.with_columns(
        (pl.col("full") / max(frame.height, 1)).alias("full_share"),
        (pl.col("sample") / max(kept.height, 1)).alias("sample_share"),
    )


def image_details(frame: pl.DataFrame, image_id: str, categories: Sequence[str] = CATEGORIES) -> dict[str, Any] | None:
    """Everything the quick file view shows about one image, or None when it is not in the frame."""
    rows = frame.filter(pl.col("image_id") == image_id)
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    has_analytics = "anomaly_score" in frame.columns
    similar = list(zip(row.get("similar_ids") or [], row.get("similar_distances") or [], strict=False))
    return {
        "image_id": image_id,
        "name": row["blob_name"],
        "size": row["size"],
        "width": row["width"],
        "height": row["height"],
        "format": row["format"],
        "thumbnail": row["thumbnail"],
        "error": row["error"],
        "tags": {c: (row.get(c) or NONE_LABEL, row.get(f"{c}_confidence")) for c in categories},
        "analytics": has_analytics,
        "anomaly_score": row.get("anomaly_score"),
        "quality_flags": row.get("quality_flags"),
        "similar": similar,
        "kept": row.get("kept", True),
    }


def filter_records(records: Sequence[DatasetRecord], kind: str = "all", query: str = "") -> list[DatasetRecord]:
    """Records of one type ("demo", "user" or "all") whose name contains the query (case-insensitive)."""
    query = query.strip().casefold()
    return [
        r for r in records if (kind == "all" or r.type.value == kind) and (not query or query in r.name.casefold())
    ]


def format_bytes(size: int | None) -> str:
    """A human size: 1.2 MB."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


USAGE_SCHEMA = {"key_id": pl.String, "day": pl.String, "model": pl.String, "processed": pl.Int64, "failed": pl.Int64}


def read_usage(path: Path) -> pl.DataFrame:
    """The usage ledger (curation.inference.service.usage.UsageLedger's JSON) as a frame; raises ValueError if unreadable."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"usage ledger {path} does not exist yet (no images processed)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"usage ledger {path} cannot be read: {exc.__class__.__name__}") from exc
    if not isinstance(rows, list):
        raise ValueError(f"usage ledger {path} is not a list of rows")
    frame = pl.DataFrame(rows, schema=USAGE_SCHEMA, strict=False) if rows else pl.DataFrame(schema=USAGE_SCHEMA)
    return frame.sort("day", "model", "key_id")


def usage_by_day(usage: pl.DataFrame) -> pl.DataFrame:
    """Processed and failed per day and model, long: day, model, kind, images."""
    per_day = usage.group_by("day", "model").agg(pl.col("processed").sum(), pl.col("failed").sum())
    return per_day.unpivot(index=["day", "model"], on=["processed", "failed"], variable_name="kind", value_name="images").sort(
        "day", "model", "kind"
    )


# -- teach by example: labels picked in the dashboard ---------------------------------------------------------
Label = dict[str, str]  # image_id, file (blob name), category, class


def add_labels(
    pending: Sequence[Label], images: Iterable[tuple[str, str]], category: str, cls: str,
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
) -> list[Label]:
    """`pending` plus `cls` for `category` on every (image_id, file); a new label replaces one of the same image
    and category. Raises ValueError for a category or class word the taxonomy does not know (None is not a class:
    an image without a label simply stays unlabelled)."""
    if category not in taxonomy.classes:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(taxonomy.categories)})")
    if cls not in taxonomy.classes[category]:
        raise ValueError(f"{cls!r} is not a {category} class (allowed: {', '.join(taxonomy.classes[category])})")
    out = {(label["image_id"], label["category"]): label for label in pending}
    for image_id, file in images:
        out.pop((image_id, category), None)  # re-labelled images move to the end, the newest labels last
        out[(image_id, category)] = {"image_id": image_id, "file": file, "category": category, "class": cls}
    return list(out.values())


def label_counts(pending: Sequence[Label]) -> dict[str, dict[str, int]]:
    """Labelled images per category and class, in first-seen order."""
    out: dict[str, dict[str, int]] = {}
    for label in pending:
        classes = out.setdefault(label["category"], {})
        classes[label["class"]] = classes.get(label["class"], 0) + 1
    return out


def labels_csv_text(pending: Sequence[Label], taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> str:
    """The labels as `curation.analysis.teach`'s CSV: one row per image, `file` = the image id (unambiguous whatever the
    blob name looks like), `blob_name` for people (teach ignores it), one column per category (blank = unknown)."""
    rows: dict[str, dict[str, str]] = {}
    for label in pending:
        row = rows.setdefault(label["image_id"], {"file": label["image_id"], "blob_name": label["file"]})
        row[label["category"]] = label["class"]
    out = io.StringIO()
    fields = ["file", "blob_name", *taxonomy.categories]
    writer = csv.DictWriter(out, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    return out.getvalue()


def teach_from_labels(store: DatasetStore, pending: Sequence[Label], min_per_class: int = 2) -> dict[str, Any]:
    """Write the labels CSV under the dataset (`DatasetStore.new_labels_csv`), teach (curation.analysis.teach), then recompute the sampling order so its
    strata follow the new tags. The CSV stays beside the dataset's tables as the record of what was taught (it is
    removed again when teaching fails). Returns teach's summary plus `labels_csv` and `sampling_error` (None when the
    sampling was recomputed). Raises ValueError when there is nothing to teach (teach's own errors included)."""
    if not pending:
        raise ValueError("no labels yet: pick a category and a class, then label an image or a page")
    csv_path = store.new_labels_csv()
    write_text_atomic(csv_path, labels_csv_text(pending))
    try:
        summary = teach.teach(store, csv_path, min_per_class=min_per_class)
    except Exception:
        csv_path.unlink(missing_ok=True)  # nothing was taught from it: keep only the CSVs of real runs
        raise
    try:
        sample_dataset(store)
        sampling_error = None
    except Exception as exc:  # the tags are taught either way; say the sampling is stale
        sampling_error = f"{exc.__class__.__name__}: {exc}"
    return {**summary, "labels_csv": str(csv_path), "sampling_error": sampling_error}


def teach_summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Plain-text lines telling what a teach run did (the view escapes them)."""
    lines = [f"Taught {summary['meta_model']} (was {summary['previous_meta_model']}); every image re-tagged."]
    for category, info in summary["categories"].items():
        labelled = ", ".join(f"{class_label(c)} {n}" for c, n in info["labelled"].items())
        tagged = ", ".join(f"{class_label(c)} {n:,}" for c, n in info.get("tagged", {}).items())
        accuracy = info["train_accuracy"]
        lines.append(f"{category}: {labelled} labelled; training accuracy {accuracy:.0%}; tags now {tagged}.")
        if info.get("ignored_classes"):
            few = ", ".join(f"{class_label(c)} {n}" for c, n in info["ignored_classes"].items())
            lines.append(f"{category}: not learnt (too few labels): {few}.")
    for category, reason in summary.get("skipped", {}).items():
        if reason != "no labels":
            lines.append(f"{category} not taught: {reason}.")
    if summary.get("unmatched_files"):
        lines.append(f"{len(summary['unmatched_files'])} labelled file(s) matched no image.")
    if summary.get("sampling_error"):
        lines.append(f"The sampling order could not be recomputed ({summary['sampling_error']}); "
                     "it still follows the old tags.")
    return lines


# -- the full-resolution viewer -------------------------------------------------------------------------------
MAX_SIDE = 2048  # px on the long side of an original sent through the websocket; larger ones are downscaled first
SAS_MINUTES = 15  # lifetime of the read-only SAS of the one blob the viewer shows
_INLINE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


class OriginalRefused(ValueError):
    """A blob name that would read a file outside the dataset's folder (absolute, `..`, a symlink leading out)."""


@dataclass(frozen=True)
class Original:
    """What the full-size viewer shows: `src` (a data: URI, or a signed URL of one blob), or None and the thumbnail.

    `note` is one line: the original's size and how it is shown, or why only the thumbnail is (never a secret).
    """

    src: str | None
    note: str


def local_original_path(folder: Path | str, blob_name: str) -> Path:
    """The file of `blob_name` in a local storage folder (names are relative to the folder, as listing made them).

    Refuses (OriginalRefused) an empty or absolute name, one with a `..` component, and one that resolves (symlinks
    followed) outside the folder, so a files table cannot make the viewer read any other file.
    """
    root = Path(folder).expanduser().resolve()
    parts = blob_name.replace("\\", "/").split("/")
    if not blob_name or blob_name.startswith(("/", "\\")) or ".." in parts or (len(blob_name) > 1 and blob_name[1] == ":"):
        raise OriginalRefused(f"the name {blob_name!r} is absolute or contains '..'")
    path = (root / blob_name).resolve()
    if not path.is_relative_to(root):
        raise OriginalRefused(f"{blob_name!r} leads out of the dataset's folder")
    return path


def image_data_uri(data: bytes, max_side: int = MAX_SIDE) -> tuple[str, int, int, bool]:
    """(data: URI, width, height, downscaled) of an encoded image: as it is when a browser shows its format and its
    long side is at most `max_side`, else a JPEG downscaled to `max_side` (EXIF orientation applied). Raises OSError
    (or Pillow's DecompressionBombError) when it cannot be decoded."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        mime = _INLINE_TYPES.get(image.format or "")
        if mime and max(width, height) <= max_side:
            return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", width, height, False
        shown = ImageOps.exif_transpose(image)
        shown.thumbnail((max_side, max_side))
        out = io.BytesIO()
        shown.convert("RGB").save(out, format="JPEG", quality=88)
    return f"data:image/jpeg;base64,{base64.b64encode(out.getvalue()).decode('ascii')}", width, height, True


def _inline(data: bytes, where: str, max_side: int) -> Original:
    try:
        src, width, height, scaled = image_data_uri(data, max_side)
    except Exception as exc:  # not an image Pillow reads, or a decompression bomb
        return Original(None, f"The original cannot be decoded ({exc.__class__.__name__}); showing the thumbnail.")
    shown = f"; shown downscaled to {max_side:,} px on the long side" if scaled else ""
    return Original(src, f"Original {width:,} \u00d7 {height:,} px, {format_bytes(len(data))}, {where}{shown}.")


def per_blob_sas(config: Any) -> bool:
    """Whether an Azure config can sign a read-only SAS for one blob (an account key, a connection string with a key,
    or Azure AD). A user's container SAS cannot: signing would hand the browser that read+list token."""
    if config.account_key is not None or config.uses_azure_ad():
        return True
    if config.connection_string is not None:
        return "accountkey=" in config.connection_string.get_secret_value().replace(" ", "").lower()
    return False


def original_image(
    record: DatasetRecord,
    blob_name: str,
    settings: Any,
    *,
    max_side: int = MAX_SIDE,
    now: datetime | None = None,
    credentials: Callable[[Any], Any] | None = None,
    opener: Callable[[Any, Any], Any] | None = None,
) -> Original:
    """The original of one image of a dataset, for the full-size viewer.

    Local storage: the file, read after `local_original_path`'s check, inline (downscaled past `max_side`). Azure: a
    read-only SAS URL of that one blob, valid SAS_MINUTES, which the browser fetches itself (bytes stay off the
    websocket); with only a container SAS the server reads the blob and sends it inline, so no token reaches the page.
    Without credentials, or when anything fails, `src` is None and `note` says why in one line (no secret in it).
    `credentials` fills an Azure config's credential (e.g. from its Prefect block); `opener` is `open_storage`.
    """
    from curation.ingest.steps import storage_of
    from curation.ingest.storage import AzureStorageConfig, StorageError, open_storage

    descriptor = record.storage or {}
    kind = descriptor.get("kind")
    if kind == "local":
        try:
            data = local_original_path(descriptor.get("path") or "", blob_name).read_bytes()
        except OriginalRefused as exc:
            return Original(None, f"Original refused: {exc}; showing the thumbnail.")
        except FileNotFoundError:
            return Original(None, f"The original is missing from {descriptor.get('path')}; showing the thumbnail.")
        except OSError as exc:
            return Original(None, f"The original cannot be read ({exc.__class__.__name__}); showing the thumbnail.")
        return _inline(data, "from the local folder", max_side)
    if kind != "azure":
        return Original(None, "This dataset does not say where its originals are; showing the thumbnail.")
    try:
        config = storage_of(record)
        if credentials is not None:
            config = credentials(config)
        config = config.with_env_credentials(settings) if isinstance(config, AzureStorageConfig) else config
    except Exception as exc:  # a credentials block that cannot be loaded: its name, never its value
        reason = f"The Azure credentials cannot be loaded ({exc.__class__.__name__})"
        return Original(None, f"{reason}; showing the thumbnail.")
    if not config.credentials_given():
        return Original(None, "No Azure credentials on this server (CURATION_AZURE_* or the dataset's credentials "
                              "block); showing the thumbnail.")
    try:
        storage = (opener or open_storage)(config, settings)
        if per_blob_sas(config):
            url = storage.sign_url(blob_name, (now or datetime.now(UTC)) + timedelta(minutes=SAS_MINUTES))
            return Original(url, f"Original from Azure through a read-only link valid {SAS_MINUTES} minutes.")
        return _inline(storage.read_bytes(blob_name), "read from Azure by the server", max_side)
    except StorageError as exc:  # its messages are redacted by the storage
        return Original(None, f"The original cannot be reached: {exc}; showing the thumbnail.")
    except Exception as exc:
        return Original(None, f"The original cannot be reached ({exc.__class__.__name__}); showing the thumbnail.")


# -- deep links -----------------------------------------------------------------------------------------------
def link_query(dataset_id: str | None, selections: Selections, fraction: float, image_id: str | None,
               full: bool, taxonomy: Taxonomy = DEFAULT_TAXONOMY, region: Region | None = None) -> str:
    """The URL query of a view: `?dataset=…&fraction=…&time=day,night&region=lasso:x,y;…&image=…&full=1`
    (restricted categories only; the None class is written `None`; the region exactly, `region_to_query`). Empty
    without a dataset."""
    if dataset_id is None:
        return ""
    query: dict[str, str] = {"dataset": dataset_id}
    if fraction < 1.0:
        query["fraction"] = f"{fraction:g}"
    options = class_options(taxonomy)
    for category in taxonomy.categories:
        values = selections.get(category)
        if values is not None and not set(values) >= set(options[category]):  # every class ticked: no restriction
            query[category] = ",".join(NONE_LABEL if v is None else str(v) for v in values)
    if region is not None:
        query["region"] = region_to_query(region)
    if image_id:
        query["image"] = image_id
        if full:
            query["full"] = "1"
    return "?" + urlencode(query, safe=",:;")


@dataclass(frozen=True)
class LinkState:
    """A deep link read back: the view to open and what in it was not understood (plain text, escaped when shown)."""

    dataset_id: str | None
    selections: dict[str, list[str]]
    fraction: float
    image_id: str | None
    full: bool
    problems: tuple[str, ...]
    region: Region | None = None


def parse_link(search: str, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> LinkState:
    """Read `link_query`'s query (with or without the `?`); unknown classes and bad fractions become problems, the
    rest of the link still applies. Categories absent from the query, or naming no known class, keep every class."""
    params = {k: v[-1] for k, v in parse_qs(search.lstrip("?"), keep_blank_values=True).items()}
    problems: list[str] = []
    options = class_options(taxonomy)
    selections = {c: list(v) for c, v in options.items()}
    for category in taxonomy.categories:
        if category not in params:
            continue
        values = [v for v in params[category].split(",") if v]
        unknown = [v for v in values if v not in options[category]]
        if unknown:
            problems.append(f"unknown {category} class(es) {', '.join(unknown)}")
        if values and len(unknown) == len(values):
            continue  # nothing known: keep every class rather than show no image
        selections[category] = [v for v in options[category] if v in values]
    fraction = 1.0
    if params.get("fraction"):
        try:
            fraction = float(params["fraction"])
            if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
                raise ValueError
            fraction = min(1.0, max(0.2, round(fraction * 5) / 5))  # the slider's 20% steps
        except ValueError:
            problems.append(f"fraction {params['fraction']} is not between 0 and 1")
            fraction = 1.0
    region = None
    if params.get("region"):
        try:
            region = region_from_query(params["region"])
        except ValueError as exc:
            problems.append(f"the region is not one the viewer draws ({exc})")
    return LinkState(
        dataset_id=params.get("dataset") or None, selections=selections, fraction=fraction,
        image_id=params.get("image") or None, full=params.get("full") == "1", problems=tuple(problems), region=region,
    )
