"""Tag heads on the CNN's features: a PCA projection (the dataset embedding) and one calibrated linear head per
category (multinomial logistic regression whose logits are divided by a fitted temperature).

The heads file is a small .npz beside its manifest (heads.json: sources, counts per class, date, cross-validated
metrics), both committed; `curation.inference.models.train_heads` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEADS_DIR = Path(__file__).parent / "heads"
HEADS_FILE = HEADS_DIR / "efficientnet_lite0.npz"
MANIFEST_FILE = HEADS_DIR / "efficientnet_lite0.json"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero). numpy, not sklearn.preprocessing.normalize: the
    service's worker processes run this and do not import scikit-learn, which would cost each one far more memory
    than the model itself; training uses the same function so both normalise identically."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class Head:
    """One category's calibrated linear classifier over the embedding."""

    classes: tuple[str, ...]
    weight: np.ndarray  # (n_classes, dim)
    bias: np.ndarray  # (n_classes,)
    temperature: float

    def probabilities(self, embedding: np.ndarray) -> np.ndarray:
        """(n, n_classes) softmax of the temperature-scaled logits."""
        logits = (embedding @ self.weight.T + self.bias) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Heads:
    """The projection from pooled features to the embedding, and the heads that tag from it."""

    mean: np.ndarray  # (feature_dim,)
    components: np.ndarray  # (embedding_dim, feature_dim)
    heads: dict[str, Head]
    version: str

    @property
    def embedding_dim(self) -> int:
        return int(self.components.shape[0])

    def embed(self, features: np.ndarray) -> np.ndarray:
        """L2-normalised pooled features, projected on the principal components and L2-normalised again."""
        return l2_normalise((l2_normalise(features) - self.mean) @ self.components.T)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {"mean": self.mean.astype(np.float32),
                                         "components": self.components.astype(np.float32),
                                         "version": np.array(self.version)}
        for cat, head in self.heads.items():
            arrays[f"{cat}.classes"] = np.array(head.classes)
            arrays[f"{cat}.weight"] = head.weight.astype(np.float32)
            arrays[f"{cat}.bias"] = head.bias.astype(np.float32)
            arrays[f"{cat}.temperature"] = np.array(head.temperature, np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)


def load_heads(path: Path = HEADS_FILE) -> Heads:
    """Read a heads file written by `Heads.save`.

    Raises:
        FileNotFoundError: with how to make one.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no tag heads at {path}: train them with `python -m curation.inference.models.train_heads`")
    with np.load(path, allow_pickle=False) as data:
        cats = sorted({k.split(".")[0] for k in data.files if k.endswith(".classes")})
        heads = {c: Head(tuple(str(v) for v in data[f"{c}.classes"]), data[f"{c}.weight"], data[f"{c}.bias"],
                         float(data[f"{c}.temperature"])) for c in cats}
        return Heads(data["mean"], data["components"], heads, str(data["version"]))
