"""Builds curated datasets on disk for the dashboard's browser test and bench, with the library's writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from PIL import Image

from curation.analysis.analytics import analyse, analytics_table
from curation.analysis.quality import image_signals
from curation.dataset.catalog import Catalog, Table
from curation.dataset.parquet_io import FILES_SCHEMA, embeddings_schema, metadata_schema, rows_to_table
from curation.dataset.registry import Counts, DatasetType, Status
from curation.dataset.results import write_embeddings
from curation.ingest.ids import image_id_for
from curation.sampling.order import compute_sampling, sampling_table
from curation.sampling.subsets import sample_dataset
from curation.taxonomy import CATEGORIES, DEFAULT_CLASSES

DARK_EVERY = 10  # every 10th image (i % 10 == 3) is a near-black frame, so analytics flags it "dark"
GRAY_EVERY = 10  # and i % 10 == 7 a grey one ("grayscale")


def _thumbnail(path: Path, seed: int, look: str = "colour") -> Image.Image:
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    ramp = np.linspace(0, 1, 96)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + rng.normal(0, 10, (96, 128, 3))
    if look == "dark":
        pixels = pixels * 0.12
    elif look == "gray":
        pixels = pixels.mean(axis=2, keepdims=True).repeat(3, axis=2)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=80)
    return image


def _look(i: int) -> str:
    return "dark" if i % DARK_EVERY == 3 else "gray" if i % GRAY_EVERY == 7 else "colour"


def _separable_embeddings(rng: np.random.Generator, tags: list[str | None], dim: int) -> np.ndarray:
    """Unit vectors clustered by tag (one centre per value), so a probe taught on a few of them generalises."""
    values = sorted({t or "" for t in tags})
    centres = rng.standard_normal((len(values), dim)) * 2.0
    code = np.array([values.index(t or "") for t in tags])
    matrix = (centres[code] + rng.standard_normal((len(tags), dim)) * 0.5).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _labels(rng: np.random.Generator, n: int) -> dict[str, list[str | None]]:
    out: dict[str, list[str | None]] = {}
    for category in CATEGORIES:
        values = [*DEFAULT_CLASSES[category], None]
        codes = rng.integers(0, len(values), n)
        out[category] = [values[c] for c in codes]
    return out


def build_dataset(
    root: Path,
    n: int,
    name: str = "drives",
    *,
    seed: int = 0,
    kind: DatasetType = DatasetType.USER,
    analytics: bool = True,
    shared_thumbnails: int = 0,
    status: Status = Status.COMPLETED,
) -> str:
    """A Completed dataset of n images in the catalog of the data root `root`; returns its id.

    shared_thumbnails=k makes only k JPEGs that every row points to (for 100k-row benches); 0 makes one per image.
    Small sets use the library end to end (write_embeddings' layout, analyse with quality signals measured on the
    thumbnails, sample_dataset); large ones write a synthetic layout and a shuffle sampling order so building
    stays quick. Embeddings cluster by the `time` tag, so teaching `time` from a few labels works.
    Per-image thumbnails: every 10th is dark (flagged "dark"), another every 10th grey ("grayscale").
    """
    rng = np.random.default_rng(seed)
    catalog = Catalog(root)
    store = catalog.dataset(catalog.register(name, type=kind, meta_model="cpu-rules", embedding_model="cpu-216").id)
    names = [f"drive_{seed}/frame_{i:06d}.jpg" for i in range(n)]
    ids = [image_id_for(b) for b in names]
    shared = [store.thumbnail_path(f"shared{k:04d}") for k in range(shared_thumbnails)]
    for k, path in enumerate(shared):
        _thumbnail(path, seed * 1000 + k)
    files = []
    signals = []
    for i, (blob, image_id) in enumerate(zip(names, ids, strict=True)):
        if shared:
            thumb = shared[i % len(shared)]
        else:
            thumb = store.thumbnail_path(image_id)
            image = _thumbnail(thumb, seed * 100_000 + i, _look(i))
            if analytics and n <= 2000:
                signals.append(image_signals(image, 1280, 720))
        files.append({"image_id": image_id, "blob_name": blob, "size": int(rng.integers(50_000, 900_000)),
                      "width": 1280, "height": 720, "format": "jpeg",
                      "thumbnail": store.relative(thumb), "error": None})
    store.write(Table.FILES, rows_to_table(files, FILES_SCHEMA))
    labels = _labels(rng, n)
    meta = {"image_id": ids}
    for category in CATEGORIES:
        meta[category] = labels[category]
        meta[f"{category}_confidence"] = rng.uniform(0.5, 1.0, n).astype(np.float32)
    store.write(Table.METADATA, pa.table(meta, schema=metadata_schema()))
    dim = 8
    matrix = _separable_embeddings(rng, labels["time"], dim)
    if n <= 2000:
        write_embeddings(store, ids, matrix)
        if analytics:
            frame = pl.DataFrame(signals).with_columns(width=pl.lit(1280), height=pl.lit(720)) if signals else None
            phashes = frame["phash"].to_list() if frame is not None else None
            store.write(Table.ANALYTICS, analytics_table(analyse(ids, matrix, phash=phashes, signals=frame, k=5)))
        sample_dataset(store)
    else:
        xyz = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        flat = pa.array(matrix.reshape(-1), type=pa.float32())
        table = pa.table({"image_id": ids, "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
                          "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}, schema=embeddings_schema(dim))
        store.write(Table.EMBEDDINGS, table)
        if analytics:
            sim = rng.integers(0, n, (n, 5))
            frame = pl.DataFrame({
                "image_id": ids,
                "anomaly_score": rng.uniform(0, 1, n).astype(np.float32),
                "similar_ids": [[ids[j] for j in row] for row in sim],
                "similar_distances": [sorted(rng.uniform(0, 0.5, 5).astype(np.float32).tolist()) for _ in range(n)],
                "duplicate_group": pl.Series([None] * n, dtype=pl.Int64),
                "duplicate_kind": pl.Series([None] * n, dtype=pl.String),
                "duplicate_keep": pl.Series([None] * n, dtype=pl.Boolean),
                "quality_score": rng.uniform(0, 1, n).astype(np.float32),
                "quality_flags": [[] for _ in range(n)],
            })
            store.write(Table.ANALYTICS, analytics_table(frame))
        frame = pl.DataFrame({"image_id": ids, **{c: labels[c] for c in CATEGORIES}}, schema_overrides={c: pl.String for c in CATEGORIES})
        store.write(Table.SAMPLING, sampling_table(compute_sampling(frame, None, seed=seed)))
    store.update_record(status=status, counts=Counts(found=n, accepted=n, processed=n, failed=0))
    return store.dataset_id
