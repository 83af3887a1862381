"""Weight-free CPU default backend: hand-built image descriptor plus physically motivated rules.

Each image is downscaled once to 160x120 (cpu_features.WORK_W x WORK_H); all statistics are
vectorised numpy over that working image, about a millisecond per image on one core. The embedding
is a block-weighted, L2-normalised concatenation of gradient-orientation histograms per 4x4 cell
(GIST-like texture/shape), a 4x4 grid of luminance/chroma means (spatial layout), hue-saturation
and value histograms (colour) and a few global scene statistics. Tags come from cpu_rules.
"""

from __future__ import annotations

from PIL import Image

from curation.inference.models import cpu_features, cpu_rules
from curation.inference.models.base import Prediction
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy


class CpuModel:
    """Deterministic rule-based tagger and descriptor embedder (no weights, no GPU)."""

    input_side = 120  # short side it works at (WORK_H); lets the service decode JPEGs in draft mode
    process_safe = True  # small to pickle, pure CPU: the service runs it in curation.inference.workpool's processes
    name = "cpu-rules-v1"
    embedding_name = "cpu-descriptor-v1"
    embedding_dim = cpu_features.EMBEDDING_DIM

    def __init__(self, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> None:
        self.taxonomy = taxonomy

    def _tags(self, stats: dict[str, float]) -> dict[str, tuple[str | None, float]]:
        probs = cpu_rules.all_probs(stats)
        tags: dict[str, tuple[str | None, float]] = {}
        for category in self.taxonomy.categories:
            allowed = self.taxonomy.classes[category]
            p = {k: v for k, v in probs.get(category, {}).items() if k in allowed}
            total = sum(p.values())
            if not p or total <= 0.0:
                tags[category] = (None, 0.0)
                continue
            best = max(p, key=lambda k: (p[k], k))
            conf = float(min(1.0, max(0.0, p[best] / total)))
            tags[category] = (self.taxonomy.decide(category, best, conf), conf)
        return tags

    def predict_one(self, image: Image.Image) -> Prediction:
        feats = cpu_features.extract(image)
        return Prediction(tags=self._tags(feats.stats), embedding=feats.embedding)

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        return [self.predict_one(im) for im in images]
