"""The interface every model backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Prediction:
    """One image's tags and embedding.

    tags maps each category to (label or None, confidence in [0, 1]); the label is None when the
    confidence is below the taxonomy threshold, but the confidence of the best class is still kept.
    """

    tags: dict[str, tuple[str | None, float]]
    embedding: np.ndarray  # float32, L2-normalised, shape (embedding_dim,)


class ModelBackend(Protocol):
    """A tagger plus an embedder. Implementations must be deterministic for a given image."""

    name: str  # meta model name recorded on the dataset, e.g. "cpu-rules-v1"
    embedding_name: str  # embedding model name, e.g. "cpu-descriptor-v1"
    embedding_dim: int

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        """Tag and embed a batch of RGB images (already decoded, any size)."""
        ...
