"""Whole-dataset analytics: anomaly score, similar images, duplicate groups, quality flags.

One row per image, in input order, with the columns of ANALYTICS_SCHEMA:

    image_id           string, not null
    anomaly_score      float32 in [0, 1]: the percentile rank (ties averaged) of the image's mean cosine distance
                       to its k nearest neighbours; 1 = the most isolated image. Null when the image has no embedding.
    similar_ids        list<string>: its k nearest neighbours, nearest first, never itself (empty without embedding)
    similar_distances  list<float32>: their cosine distances (1 - cosine similarity; 0 = same direction), ascending
    duplicate_group    int64: 0, 1, ... numbered by the group's first row; null when in no group
    duplicate_kind     string: "exact" when another image has the same content hash, "near" for other members
    duplicate_keep     bool: true for the one member of a group to keep (highest quality_score, then first row),
                       false for the others; null when in no group
    quality_score      float32 in [0, 1] from curation.analysis.quality.quality_score; null without signals
    quality_flags      list<string> from curation.analysis.quality.quality_flags; null without signals, [] when clean

Duplicate groups are the connected components (scipy's union-find equivalent) of two kinds of edges, never all-pairs:
- exact: images with the same content hash (a dict lookup over the hashes);
- near: candidate pairs are the kNN edges (j among i's k nearest neighbours) plus images with an identical phash
  (consecutive members of each equal-phash bucket, O(n) and independent of the kNN's recall); a candidate is
  a near-duplicate when
  either phash Hamming distance <= DuplicateThresholds.phash_bits (of 64) and cosine distance
  <= phash_confirm_distance (the embeddings must agree that it is the same scene),
  or cosine distance <= embedding_distance on its own, for copies whose phash changed (crop, colour shift)
  or that have no phash. The thresholds depend on the embedding model (`thresholds_for`); they are calibrated on
  re-encoded, resized and brightened copies of real photos by bench/check_duplicate_thresholds.py (docs/model.md).
  Transitive: A~B and B~C put A, B, C in one group.

Nearest neighbours: exact brute force (scikit-learn NearestNeighbors) up to EXACT_KNN_MAX images; above that an
HNSW index (faiss-cpu IndexHNSWFlat, inner product on unit vectors): approximate, and not bit-for-bit reproducible
across runs (parallel insertion). Without faiss installed, brute force is used at any size (correct, but slow for
large datasets).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import rankdata

from curation.analysis.quality import quality_flags, quality_score

ANALYTICS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("anomaly_score", pa.float32()),
        pa.field("similar_ids", pa.list_(pa.string())),
        pa.field("similar_distances", pa.list_(pa.float32())),
        pa.field("duplicate_group", pa.int64()),
        pa.field("duplicate_kind", pa.string()),
        pa.field("duplicate_keep", pa.bool_()),
        pa.field("quality_score", pa.float32()),
        pa.field("quality_flags", pa.list_(pa.string())),
    ]
)

EXACT_KNN_MAX = 20_000  # brute force up to here; HNSW above
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64  # the search's breadth: recall against search time, which grows about linearly with it


@dataclass(frozen=True)
class DuplicateThresholds:
    """When a pair of kNN neighbours counts as a near-duplicate (see the module docstring)."""

    phash_bits: int = 8
    phash_confirm_distance: float = 0.10
    embedding_distance: float = 0.003


# The same copy lies at different cosine distances in different embedding spaces; bench/check_duplicate_thresholds.py
# measures them on real photos (docs/model.md has the figures for the CNN's).
CNN_THRESHOLDS = DuplicateThresholds(phash_bits=8, phash_confirm_distance=0.15, embedding_distance=0.04)


def thresholds_for(embedding_model: str | None) -> DuplicateThresholds:
    """The near-duplicate thresholds calibrated for an embedding model (the descriptor's when unknown)."""
    if embedding_model and embedding_model.startswith("efficientnet-lite0"):
        return CNN_THRESHOLDS
    return DuplicateThresholds()


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (or, when a tie pushed it out, the farthest hit); keep k, nearest first."""
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    idx = idx[keep].reshape(idx.shape[0], -1)[:, :k]
    dist = dist[keep].reshape(dist.shape[0], -1)[:, :k]
    order = np.lexsort((idx, dist), axis=1)  # by distance, ties by row: deterministic
    return np.take_along_axis(idx, order, 1), np.take_along_axis(dist, order, 1)


def nearest_neighbours(x: np.ndarray, k: int, backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """The k nearest neighbours of every row of x (unit rows) among the others, by cosine distance.

    Args:
        x: (m, d) float32, L2-normalised rows.
        k: neighbours per row (capped at m - 1).
        backend: "exact" (scikit-learn brute force), "hnsw" (faiss) or "auto" (exact up to EXACT_KNN_MAX rows).

    Returns:
        (indices (m, k) int64, cosine distances (m, k) float32), nearest first; -1 where HNSW found too few.
    """
    m = x.shape[0]
    k = min(k, m - 1)
    if k <= 0:
        return np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.float32)
    if backend == "auto":
        backend = "exact" if m <= EXACT_KNN_MAX else "hnsw"
    if backend == "hnsw":
        try:
            import faiss
        except ImportError:  # optional dependency: fall back to the exact search
            backend = "exact"
    if backend == "hnsw":
        index = faiss.IndexHNSWFlat(x.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(x)
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * (k + 1))
        sims, idx = index.search(x, k + 1)
        dist = np.where(idx >= 0, 1.0 - sims, np.inf).astype(np.float32)
    elif backend == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean").fit(x)
        euclid, idx = nn.kneighbors(x)
        dist = (np.square(euclid) / 2.0).astype(np.float32)  # unit vectors: |a - b|^2 = 2 (1 - cos)
    else:
        raise ValueError(f"unknown kNN backend: {backend!r}")
    idx, dist = _drop_self(idx.astype(np.int64), dist, k)
    return idx, np.maximum(dist, 0.0)


def _popcount64(values: np.ndarray) -> np.ndarray:
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[values.astype(np.int64).view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int64)


def _equal_phash_pairs(ph: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive members of each bucket of identical phashes (a chain links the whole bucket)."""
    members = np.flatnonzero(usable)
    order = members[np.argsort(ph[members], kind="stable")]
    same = ph[order][1:] == ph[order][:-1]
    return order[:-1][same], order[1:][same]


def _groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Duplicate group per row (-1 for none), numbered by each group's first row."""
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    grouped = sizes[labels] >= 2
    _, first_rows = np.unique(labels, return_index=True)
    out = np.full(n, -1, dtype=np.int64)
    group_labels = labels[np.sort(first_rows)]
    group_labels = group_labels[sizes[group_labels] >= 2]
    number = np.full(len(sizes), -1, dtype=np.int64)
    number[group_labels] = np.arange(len(group_labels))
    out[grouped] = number[labels[grouped]]
    return out


def _exact_edges(content_hash: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    first: dict[str, int] = {}
    a, b = [], []
    for row, h in enumerate(content_hash):
        if h is None:
            continue
        if h in first:
            a.append(first[h])
            b.append(row)
        else:
            first[h] = row
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


def _list_array(values: pa.Array, counts: np.ndarray) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


QUALITY_CHUNK = 10_000  # rows turned into dicts at a time: bounded memory whatever the dataset's size


def _quality(signals: pl.DataFrame | None, n: int) -> tuple[list[float | None], list[list[str] | None]]:
    if signals is None:
        return [None] * n, [None] * n
    if signals.height != n:
        raise ValueError(f"signals has {signals.height} rows for {n} images")
    sides = signals.select((pl.col("width").cast(pl.Float64) * pl.col("height")).sqrt().alias("side"))["side"]
    sides = sides.filter(sides > 0)
    typical = float(sides.median()) if len(sides) else None
    scores: list[float | None] = []
    flags: list[list[str] | None] = []
    for chunk in signals.iter_slices(QUALITY_CHUNK):
        for r in chunk.to_dicts():
            if r.get("blur") is None or not r.get("width") or not r.get("height"):
                scores.append(None)
                flags.append(None)
                continue
            scores.append(quality_score(r))
            flags.append(quality_flags(r, r["width"], r["height"], typical_side=typical))
    return scores, flags


def analyse(
    image_ids: list[str],
    embeddings: np.ndarray,
    content_hash: list[str | None] | None = None,
    phash: list[int | None] | None = None,
    signals: pl.DataFrame | None = None,
    k: int = 10,
    seed: int = 0,
    thresholds: DuplicateThresholds = DuplicateThresholds(),
    knn_backend: str = "auto",
) -> pl.DataFrame:
    """Analyse a whole dataset; every input is aligned by row with image_ids.

    Args:
        image_ids: one id per image.
        embeddings: (n, d); a row with a non-finite value (or all zeros) means "no embedding".
        content_hash: e.g. a SHA-256 of the bytes per image (None where unknown) for exact duplicates.
        phash: curation.analysis.quality's 64-bit perceptual hash per image (None where unknown).
        signals: curation.analysis.quality.image_signals per row plus int columns width and height (nulls where the
            image did not decode); None to skip quality flags and scores.
        k: neighbours per image for similar_ids, the anomaly score and near-duplicate candidates.
        seed: accepted for a uniform analytics API; nothing here is random (HNSW varies only by thread timing).
        thresholds: near-duplicate thresholds.
        knn_backend: "auto", "exact" or "hnsw" (see nearest_neighbours).

    Returns:
        A polars DataFrame with exactly the columns of ANALYTICS_SCHEMA, one row per image, in input order.
    """
    from sklearn.preprocessing import normalize

    del seed
    n = len(image_ids)
    x = np.asarray(embeddings, dtype=np.float32).reshape(n, -1)
    content_hash = content_hash if content_hash is not None else [None] * n
    phash = phash if phash is not None else [None] * n
    if not (len(content_hash) == len(phash) == n):
        raise ValueError("content_hash, phash and image_ids must have the same length")

    # x can take gigabytes: no temporaries of its size beyond the one unit-row matrix.
    valid = np.isfinite(x).all(axis=1) & (x != 0).any(axis=1)
    rows = np.flatnonzero(valid)
    if valid.all():
        unit = np.ascontiguousarray(normalize(x))  # a copy: x may be the caller's array
    else:  # np.where makes the copy, normalised in place
        unit = normalize(np.where(valid[:, None], x, np.float32(0.0)), copy=False)
    searched = unit if len(rows) == n else unit[rows]
    idx, dist = nearest_neighbours(searched, k, knn_backend) if len(rows) else (
        np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))
    found = idx >= 0

    anomaly = np.full(n, np.nan, dtype=np.float32)
    if len(rows) > 1:
        mean_dist = np.where(found, dist, 0).sum(axis=1) / np.maximum(found.sum(axis=1), 1)
        anomaly[rows] = ((rankdata(mean_dist, method="average") - 1) / (len(rows) - 1)).astype(np.float32)
    elif len(rows) == 1:
        anomaly[rows] = 0.0

    # Near-duplicate candidates: the kNN edges, in original row numbers, plus equal-phash neighbours.
    has_ph = np.array([p is not None for p in phash], dtype=bool)
    ph = np.array([p if p is not None else 0 for p in phash], dtype=np.int64)
    pa_, pb_ = _equal_phash_pairs(ph, has_ph & valid)
    src = np.concatenate([np.repeat(rows, idx.shape[1])[found.ravel()], pa_])
    dst = np.concatenate([rows[idx[found]], pb_])
    d = np.concatenate([dist[found], np.maximum(1.0 - (unit[pa_] * unit[pb_]).sum(axis=1), 0.0)])
    both = has_ph[src] & has_ph[dst]
    ham = _popcount64(ph[src] ^ ph[dst])
    near = (both & (ham <= thresholds.phash_bits) & (d <= thresholds.phash_confirm_distance)) | (
        d <= thresholds.embedding_distance
    )
    ea, eb = _exact_edges(content_hash)
    group = _groups(n, np.concatenate([ea, src[near]]), np.concatenate([eb, dst[near]]))

    hash_counts = Counter(h for h in content_hash if h is not None)
    in_group = group >= 0
    kind = [
        None if not in_group[i] else ("exact" if h is not None and hash_counts[h] > 1 else "near")
        for i, h in enumerate(content_hash)
    ]

    scores, flags = _quality(signals, n)
    score_arr = np.array([-1.0 if s is None else s for s in scores])
    keep = np.zeros(n, dtype=bool)
    members = np.flatnonzero(in_group)
    if len(members):
        order = members[np.lexsort((members, -score_arr[members], group[members]))]
        first_of_group = np.concatenate([[True], group[order][1:] != group[order][:-1]])
        keep[order[first_of_group]] = True

    ids = pa.array(image_ids, pa.string())
    counts = np.zeros(n, dtype=np.int64)
    counts[rows] = found.sum(axis=1)
    table = pa.table(
        {
            "image_id": ids,
            "anomaly_score": pa.array(anomaly, pa.float32(), mask=np.isnan(anomaly)),
            "similar_ids": _list_array(ids.take(pa.array(rows[idx[found]], pa.int64())), counts),
            "similar_distances": _list_array(pa.array(dist[found], pa.float32()), counts),
            "duplicate_group": pa.array(group, pa.int64(), mask=~in_group),
            "duplicate_kind": pa.array(kind, pa.string()),
            "duplicate_keep": pa.array(keep, pa.bool_(), mask=~in_group),
            "quality_score": pa.array(scores, pa.float32()),
            "quality_flags": pa.array(flags, pa.list_(pa.string())),
        },
        schema=ANALYTICS_SCHEMA,
    )
    return pl.from_arrow(table)


def analytics_table(frame: pl.DataFrame) -> pa.Table:
    """The frame as an Arrow table with exactly ANALYTICS_SCHEMA (for curation.dataset.parquet_io.write_table)."""
    return frame.to_arrow().cast(ANALYTICS_SCHEMA)
