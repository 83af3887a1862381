"""A 3D layout of the embedding space for the embedding view.

Small sets (fewer than UMAP_MIN_POINTS) are projected with PCA: UMAP needs a neighbourhood graph worth the name.
Larger sets go through UMAP (umap-learn, n_components=3, random_state=seed, so it runs single-threaded and is
reproducible). So that large sets stay fast:

1. embeddings are L2-normalised and reduced to PCA_DIM dimensions with a seeded PCA fitted on at most UMAP_FIT_MAX
   rows (neighbourhoods survive this, and UMAP's neighbour search gets much cheaper);
2. UMAP is fitted on a seeded random subsample of at most UMAP_FIT_MAX rows. Its neighbour graph, and the neighbours
   transform looks up, are searched exactly by scikit-learn (ExactSearch), not by umap-learn's own exact search
   (a Python distance function per pair) nor by NN-descent (a large numba compilation in every fresh process);
3. the remaining rows are placed with `UMAP.transform` (their neighbours among the fitted rows, then a short
   optimisation with the fitted rows held fixed), in the same coordinate frame.

The result is centred and divided by its largest absolute coordinate, so every value lies in [-1, 1].
`pca_project` is also the PCA of the sampling order (curation.sampling.diversity). Nothing here downloads anything.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

UMAP_MIN_POINTS = 200  # below this, PCA
UMAP_FIT_MAX = 20_000  # UMAP is fitted on at most this many rows; the rest are transformed
PCA_DIM = 50  # embeddings are reduced to this many dimensions before UMAP
UMAP_NEIGHBORS = 15
UMAP_MIN_DIST = 0.1
# UMAP's own default is 500 epochs up to 10,000 rows; a 3D scatter for browsing needs no finer convergence.
UMAP_EPOCHS = 200
TRANSFORM_CHUNK = 100_000  # rows projected by PCA at a time


def _scaled(coords: np.ndarray) -> np.ndarray:
    centred = coords - coords.mean(axis=0, keepdims=True)
    scale = float(np.abs(centred).max()) or 1.0
    return (centred / scale).astype(np.float32)


def pca_project(
    x: np.ndarray, dim: int, seed: int = 0, fit_rows: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Rows of x projected on the top `dim` principal components of x[fit_rows] (all rows by default), as float32,
    and the share of the fitted rows' variance those components keep.

    scikit-learn's PCA: a randomized SVD seeded with `seed` when `dim` is below the fitted matrix's smaller side,
    else a full SVD, so the result is deterministic. Fewer than `dim` columns come back when the fitted rows or x's
    columns are fewer. Rows are projected in chunks, so no centred copy of the whole of x is made.
    """
    from sklearn.decomposition import PCA

    fit = x if fit_rows is None else x[fit_rows]
    k = min(dim, fit.shape[0], fit.shape[1])
    pca = PCA(n_components=k, svd_solver="randomized" if k < min(fit.shape) else "full", random_state=seed)
    pca.fit(fit)
    out = np.empty((x.shape[0], pca.n_components_), dtype=np.float32)
    for start in range(0, x.shape[0], TRANSFORM_CHUNK):
        out[start : start + TRANSFORM_CHUNK] = pca.transform(x[start : start + TRANSFORM_CHUNK])
    return out, float(pca.explained_variance_ratio_.sum())


@functools.lru_cache(maxsize=1)
def _cache_umap_compilation() -> int:
    """Let numba keep UMAP's compiled code on disk, so a fresh process does not compile it again.

    umap-learn and pynndescent mark only some of their numba functions `cache=True`; the rest (UMAP's layout epochs,
    its fuzzy-set construction, NN-descent's helpers) would be compiled in every process. For each jitted function
    without a cache (`stats.cache_path` is None) this calls `enable_caching()`, what `cache=True` calls; numba stores
    the code next to the package's sources (or in NUMBA_CACHE_DIR) and recompiles when a source changes. Functions
    numba cannot cache (those taking another jitted function as an argument) still compile. Returns how many
    functions it enabled.
    """
    import sys

    from numba.extending import is_jitted

    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in ("umap", "pynndescent"):
            continue
        for obj in list(vars(module).values()):
            if is_jitted(obj) and obj.stats.cache_path is None:
                try:
                    obj.enable_caching()
                except RuntimeError:  # no writable place for a cache (read-only install, no home): compile as before
                    return enabled
                enabled += 1
    return enabled


class ExactSearch:
    """Exact nearest neighbours among the rows UMAP is fitted on (scikit-learn's brute-force search: BLAS, in chunks).

    Hands UMAP its neighbour graph (`graph`) and answers what UMAP.transform asks of a search index (`query`), so no
    NN-descent index is built: umap-learn's own exact path calls a Python distance function per pair, and
    NN-descent compiles a lot of numba code in every fresh process and keeps its index in memory."""

    _angular_trees = False  # read by UMAP.transform to pick an epsilon for NN-descent; unused here

    def __init__(self, fitted: np.ndarray) -> None:
        from sklearn.neighbors import NearestNeighbors

        self._rows = fitted.shape[0]
        self._search = NearestNeighbors(algorithm="brute").fit(fitted)

    def query(self, x: np.ndarray, k: int, epsilon: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32, distances float32) of each row of x's k nearest fitted rows, nearest first."""
        del epsilon
        dists, idx = self._search.kneighbors(x, n_neighbors=min(k, self._rows))
        return idx.astype(np.int32), dists.astype(np.float32)

    def graph(self, fitted: np.ndarray) -> tuple[np.ndarray, np.ndarray, ExactSearch]:
        """UMAP's precomputed_knn: every fitted row's UMAP_NEIGHBORS nearest (itself first), and this search."""
        idx, dists = self.query(fitted, UMAP_NEIGHBORS)
        return idx, dists, self


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    import umap  # umap-learn; imported lazily: numba's start-up is slow

    _cache_umap_compilation()

    n = x.shape[0]
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=UMAP_FIT_MAX, replace=False)) if n > UMAP_FIT_MAX else np.arange(n)
    if x.shape[1] > PCA_DIM:
        x, _ = pca_project(x, PCA_DIM, seed, fit_rows)
    fitted = np.ascontiguousarray(x[fit_rows])
    reducer = umap.UMAP(
        n_components=3,
        n_neighbors=UMAP_NEIGHBORS,
        min_dist=UMAP_MIN_DIST,
        n_epochs=UMAP_EPOCHS,
        metric="euclidean",
        random_state=seed,
        transform_seed=seed,
        n_jobs=1,  # a fixed random_state forces one thread anyway; saying so silences umap's warning
        low_memory=True,
        precomputed_knn=ExactSearch(fitted).graph(fitted),
        force_approximation_algorithm=True,  # transform asks ExactSearch.query, never umap's per-pair Python path
    )
    out = np.empty((n, 3), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba/umap chatter (e.g. about spectral init on tiny components)
        out[fit_rows] = reducer.fit_transform(fitted)
        if len(fit_rows) < n:
            rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
            out[rest] = reducer.transform(x[rest])
    return out


def layout_3d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """Project embeddings (n, d) to (n, 3) float32 coordinates in [-1, 1]; deterministic for a fixed seed.

    Args:
        embeddings: one row per image. Rows that are not finite (a failed embedding) are placed at the origin.
        seed: seeds PCA, the UMAP subsample and UMAP itself.

    Returns:
        float32 array of shape (n, 3). PCA for n < UMAP_MIN_POINTS, UMAP otherwise (see the module docstring).
    """
    from sklearn.preprocessing import normalize

    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    out = np.zeros((n, 3), dtype=np.float32)
    valid = np.isfinite(x).all(axis=1) if x.ndim == 2 and x.shape[1] else np.zeros(n, dtype=bool)
    m = int(valid.sum())
    if m < 2:
        return out
    xv = normalize(x if m == n else x[valid])
    if m < UMAP_MIN_POINTS:
        coords, _ = pca_project(xv, 3, seed)
        padded = np.zeros((m, 3), dtype=np.float32)
        padded[:, : coords.shape[1]] = coords
        coords = padded
    else:
        coords = _umap(xv, seed)
    out[valid] = _scaled(coords)
    return out
