"""A 3D layout of the embedding space for the embedding view."""

from __future__ import annotations

import numpy as np


def layout_3d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """Project embeddings (n, d) to (n, 3) float32 with PCA, scaled to roughly [-1, 1]."""
    from sklearn.decomposition import PCA

    n, d = embeddings.shape
    out = np.zeros((n, 3), dtype=np.float32)
    if n < 2:
        return out
    k = min(3, n, d)
    coords = PCA(n_components=k, random_state=seed).fit_transform(embeddings.astype(np.float32))
    scale = np.abs(coords).max() or 1.0
    out[:, :k] = coords / scale
    return out
