"""Evaluate the CLIP backend on the shared real-photo dev set: zero-shot tags and a 10-shot linear probe.

Needs the optional `clip` extra and local weights:
    CURATION_CLIP_WEIGHTS=/path/open_clip_pytorch_model.bin [CURATION_CLIP_MODEL=ViT-B-32] \
        python bench/eval_clip.py [DATASET_DIR]
Without CURATION_CLIP_WEIGHTS it prints how to get them and exits 0 (so `make bench` passes without weights).
Results: bench/results/eval-clip-<model>-<time>.json.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import support

from curation.inference.models.evaluate import evaluate_folder, format_report


def _clip_settings() -> SimpleNamespace:
    """CURATION_CLIP_* from the settings object when it declares them, else straight from the environment."""
    from curation.settings import get_settings

    settings = get_settings()
    weights = getattr(settings, "clip_weights", None) or os.environ.get("CURATION_CLIP_WEIGHTS") or None
    model = getattr(settings, "clip_model", None) or os.environ.get("CURATION_CLIP_MODEL") or "ViT-B-32"
    return SimpleNamespace(clip_weights=Path(weights) if weights else None, clip_model=model)


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else support.REPO.parent / "shared/datasets/real-dev"
    cfg = _clip_settings()
    if cfg.clip_weights is None:
        from curation.inference.models.clip import HOW_TO_GET_WEIGHTS

        print("eval_clip: CURATION_CLIP_WEIGHTS is not set; skipping the CLIP evaluation.")
        print(HOW_TO_GET_WEIGHTS)
        print("Also install the extra: pip install -e '.[clip]'")
        return 0
    from curation.inference.models.clip import load_clip_from_settings

    try:
        t0 = time.perf_counter()
        backend = load_clip_from_settings(cfg)
    except (FileNotFoundError, ImportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"loaded {backend.name} from {cfg.clip_weights} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    report = evaluate_folder(root / "images", root / "labels.csv", backend=backend, fewshot=10)
    elapsed = time.perf_counter() - t0
    print(format_report(report))
    print(f"(zero-shot + 10-shot pass incl. decoding: {elapsed:.1f} s, {report['n_images']} images)")
    support.write_result(f"eval-clip-{cfg.clip_model}", {"weights": str(cfg.clip_weights), "seconds": elapsed, **report})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
