"""The default backend: EfficientNet-Lite0 (ImageNet weights) features, tag heads and a PCA embedding.

Each image is resized to INPUT_SIZE (176 x 128, landscape; a portrait image is squashed) and run through the
network by ONNX Runtime on one thread (fp32: bench/bench_backbone.py measured it against torch, int8 and other
sizes). The 1280-d pooled features are L2-normalised and projected on stored principal components into the
dataset embedding, and each category's calibrated linear head tags from that embedding (curation.models.heads).

The object is cheap to pickle: the service sends it with every batch to its worker processes, and each process
builds its network once and keeps it (`_cached_session`).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation.models import efficientnet_lite as net
from curation.models.base import Prediction
from curation.models.heads import HEADS_FILE, Heads, load_heads, l2_normalise
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

INPUT_SIZE = (176, 128)  # width, height
_lock = threading.Lock()
_sessions: dict[str, Any] = {}
_heads: dict[str, Heads] = {}


def _session(weights: Path) -> Any:
    import onnxruntime as ort

    graph = net.build_graph(net.read_checkpoint(weights)).SerializeToString()
    options = ort.SessionOptions()
    # One thread: the service already runs one worker process per core.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def _cached_session(weights: Path) -> Any:
    """This process's network, built on first use (only where images are run: the worker processes)."""
    with _lock:
        if str(weights) not in _sessions:
            _sessions[str(weights)] = _session(weights)
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
                 heads: Path = HEADS_FILE) -> None:
        self.taxonomy = taxonomy
        self.weights = Path(weights) if weights else net.default_weights_path()
        self.heads_path = Path(heads)
        # Fail at start-up, not in a worker, when the weights or the heads are wrong; the network itself is built
        # only in the processes that run images.
        if not self.weights.is_file() or net.file_sha256(self.weights) != net.WEIGHTS_SHA256:
            net.read_checkpoint(self.weights)  # raises WeightsError with what is wrong
        loaded = self.heads
        self.name = f"efficientnet-lite0-heads-{loaded.version}"
        self.embedding_name = f"efficientnet-lite0-pca{loaded.embedding_dim}"
        self.embedding_dim = loaded.embedding_dim

    @property
    def heads(self) -> Heads:
        return _cached_heads(self.heads_path)

    def features(self, images: list[Image.Image]) -> np.ndarray:
        """(n, 1280) pooled network features."""
        session = _cached_session(self.weights)
        return session.run(["features"], {"image": model_input(images)})[0]

    def imagenet_logits(self, images: list[Image.Image], size: tuple[int, int] = (224, 224)) -> np.ndarray:
        """(n, 1000) ImageNet logits at the network's training size (to check the weights)."""
        session = _cached_session(self.weights)
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
