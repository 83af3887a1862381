"""Diversity order inside each stratum: approximate farthest-point (k-center greedy) that scales.

Exact k-center greedy over a whole stratum is O(m^2 d), far too slow for a large stratum of wide embeddings. The
approximation used here, in three steps:

1. **Reduce** the embeddings to ``REDUCED_DIM`` dimensions with PCA (``curation.analysis.layout.pca_project``) fitted
   on a seeded subsample of at most ``PCA_FIT_ROWS`` rows; projection runs in chunks of float32, so the input is
   never copied as a whole.
2. **Partition** each stratum into balanced cells of at most ``CELL_SIZE`` images: a cell larger than that is split
   at the median of its widest axis (a KD-tree split), recursively. Cells are compact and of similar size.
3. **Greedy** k-center inside every cell (exact, all cells of similar size batched together in one numpy loop of
   ``CELL_SIZE`` steps), started from the image nearest the cell mean. Each image records its *insertion radius*:
   the squared distance to the nearest image already chosen when it was picked. The cell starters are then ordered
   by an exact k-center greedy among the starters of their stratum, which gives them radii on the same scale.
   Finally the stratum is ordered by insertion radius, largest first - the order a global farthest-point traversal
   would produce if an image's nearest chosen neighbour were always in its own cell (true away from cell borders).

Cost: O(n * CELL_SIZE * REDUCED_DIM) for the cells plus O(cells^2) per stratum for the starters; a stratum of up to
CELL_SIZE images is ordered exactly (in the reduced space). Distances are Euclidean: L2-normalise the embeddings
first if cosine distance is wanted.

Known trade-off: farthest-point minimises the worst-case distance to the kept set. On blobs of high intrinsic
dimension it prefers shell points, so at small fractions its *mean* excluded->kept distance can be worse than
random (its 95th percentile still wins). On clustered data of low intrinsic dimension, like real embeddings, it
beats random on both.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits  # a scikit-learn dependency

from curation.analysis.layout import pca_project

REDUCED_DIM = 32
PCA_FIT_ROWS = 10_000
CELL_SIZE = 256
CELLS_PER_BATCH = 512


def reduce_embeddings(embeddings: np.ndarray, dim: int = REDUCED_DIM, seed: int = 0) -> tuple[np.ndarray, float]:
    """PCA projection to at most ``dim`` float32 dimensions and the share of variance it keeps (1.0 when not reduced).

    Deterministic for a fixed seed. Single-threaded: on cores that the pipeline's workers keep busy, multi-threaded
    BLAS on matrices this small is slower than one thread.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    n, d = x.shape
    if d <= dim or n <= 1:
        return np.ascontiguousarray(x, dtype=np.float32), 1.0
    fit_rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, PCA_FIT_ROWS), replace=False))
    with threadpool_limits(limits=1):
        return pca_project(x, dim, seed, fit_rows)


def _dense(codes: np.ndarray) -> np.ndarray:
    return np.unique(codes, return_inverse=True)[1].astype(np.int64)


def balanced_cells(z: np.ndarray, group: np.ndarray, cell_size: int = CELL_SIZE) -> np.ndarray:
    """A dense cell id per row: each group is split at the median of its widest axis until cells hold <= cell_size."""
    cell = _dense(group)
    while len(cell):
        sizes = np.bincount(cell)
        big = sizes > cell_size
        if not big.any():
            return cell
        rows = np.flatnonzero(big[cell])
        order = rows[np.argsort(cell[rows], kind="stable")]
        c = cell[order]
        zs = z[order]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        lo = np.minimum.reduceat(zs, starts, axis=0)
        hi = np.maximum.reduceat(zs, starts, axis=0)
        axis = np.argmax(hi - lo, axis=1)
        group_of_row = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(c)]))
        value = zs[np.arange(len(c)), axis[group_of_row]]
        by_value = np.lexsort((value, group_of_row))
        position = np.empty(len(c), dtype=np.int64)
        position[by_value] = np.arange(len(c)) - starts[group_of_row[by_value]]
        upper = position >= sizes[c] // 2
        code = cell * 2
        code[order] += upper
        cell = _dense(code)
    return cell


def _greedy_batch(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Exact k-center greedy in each row of a (cells, slots, dim) batch; the insertion radius per slot (starter=inf)."""
    b, c, _ = x.shape
    rows = np.arange(b)
    counts = valid.sum(axis=1)
    mean = x.sum(axis=1) / np.maximum(counts, 1)[:, None]
    sq = np.einsum("bcd,bcd->bc", x, x)
    to_mean = sq - 2 * np.einsum("bcd,bd->bc", x, mean)
    to_mean[~valid] = np.inf
    pick = np.argmin(to_mean, axis=1)
    radius = np.full((b, c), np.inf, dtype=np.float32)
    mind = np.full((b, c), np.inf, dtype=np.float32)
    mind[~valid] = -np.inf
    for _ in range(c - 1):
        mind[rows, pick] = -np.inf
        centre = x[rows, pick]
        dist = sq - 2 * np.einsum("bcd,bd->bc", x, centre) + sq[rows, pick][:, None]
        np.minimum(mind, dist, out=mind)
        pick = np.argmax(mind, axis=1)
        r = mind[rows, pick]
        live = r > -np.inf
        radius[rows[live], pick[live]] = np.maximum(r[live], 0.0)
    return radius


def _greedy_starters(points: np.ndarray) -> np.ndarray:
    """Exact k-center greedy over a small set (cell starters); insertion radius per point (first = inf)."""
    m = len(points)
    radius = np.full(m, np.inf, dtype=np.float64)
    if m <= 1:
        return radius
    pts = points.astype(np.float64)
    pick = int(np.argmin(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)))
    mind = np.full(m, np.inf)
    for _ in range(m - 1):
        mind[pick] = -np.inf
        np.minimum(mind, ((pts - pts[pick]) ** 2).sum(axis=1), out=mind)
        pick = int(np.argmax(mind))
        radius[pick] = max(mind[pick], 0.0)
    return radius


def insertion_radius(z: np.ndarray, group: np.ndarray, cell_size: int = CELL_SIZE) -> np.ndarray:
    """Approximate farthest-point insertion radius of every row within its group (larger = kept earlier)."""
    n = len(z)
    radius = np.empty(n, dtype=np.float64)
    if n == 0:
        return radius
    cell = balanced_cells(z, group, cell_size)
    sizes = np.bincount(cell)
    by_cell = np.argsort(cell, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    cells_by_size = np.argsort(-sizes, kind="stable")
    starter_rows = np.empty(len(sizes), dtype=np.int64)
    for b0 in range(0, len(sizes), CELLS_PER_BATCH):
        cells = cells_by_size[b0 : b0 + CELLS_PER_BATCH]
        width = int(sizes[cells].max())
        slot = np.arange(width)[None, :]
        valid = slot < sizes[cells][:, None]
        rows = by_cell[np.where(valid, starts[cells][:, None] + slot, 0)]
        x = z[rows]
        x[~valid] = 0.0
        r = _greedy_batch(x, valid)
        radius[rows[valid]] = r[valid]
        starter_rows[cells] = rows[np.arange(len(cells)), np.argmax(np.where(valid, r, -1.0), axis=1)]
    cell_group = group[starter_rows]
    by_group = np.argsort(cell_group, kind="stable")
    bounds = np.flatnonzero(np.r_[True, cell_group[by_group][1:] != cell_group[by_group][:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        members = starter_rows[by_group[lo:hi]]
        radius[members] = _greedy_starters(z[members])
    return radius

