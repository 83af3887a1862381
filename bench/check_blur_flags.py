"""How the "blurry" flag behaves on real photos: the originals, and Gaussian-blurred copies of them.

Usage:
    python bench/check_blur_flags.py                # the real-photo dev set (shared/datasets/real-dev)
    python bench/check_blur_flags.py --real DIR     # any folder of photos

Each photo, a GaussianBlur(radius 2) and a GaussianBlur(radius 4) copy of it (blurred at full size) are JPEG-encoded
(quality 95) and go through the pipeline's own per-image step, `curation.thumbnails.decode_with_facts(data, 256)`:
draft decode, the 256 px thumbnail that is also the signals' working copy, quality signals. Prints how many of each
are flagged blurry, over all photos and over those larger than the working copy (where the blur is scaled down), and
the blur signal's quartiles. The thresholds in curation.quality were chosen on this set; the figures are the ones
quoted in its docstring. Writes bench/results/blur-flags-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

RADII = (0, 2, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "datasets" / "real-dev")
    args = ap.parse_args()
    images = args.real / "images" if (args.real / "images").is_dir() else args.real
    paths = sorted(p for p in images.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
    if not paths:
        print(f"no photos under {images}: nothing to check")
        return

    from PIL import Image, ImageFilter

    from curation.quality import WORK_SIDE, quality_flags
    from curation.thumbnails import decode_with_facts

    rows: dict[int, list[tuple[bool, bool, float]]] = {r: [] for r in RADII}
    for path in paths:
        original = Image.open(path).convert("RGB")
        for radius in RADII:
            image = original.filter(ImageFilter.GaussianBlur(radius)) if radius else original
            out = io.BytesIO()
            image.save(out, "JPEG", quality=95)
            facts = decode_with_facts(out.getvalue(), WORK_SIDE).facts
            w, h = int(facts["width"]), int(facts["height"])
            rows[radius].append(("blurry" in quality_flags(facts, w, h), max(w, h) > WORK_SIDE, float(facts["blur"])))

    n_large = sum(large for _, large, _ in rows[0])
    print(f"== blurry flags on {len(paths)} photos of {images} ({n_large} larger than {WORK_SIDE} px)")
    print(f"{'copy':<22}{'flagged':>9}{'of':>5}{'larger flagged':>16}{'of':>5}   blur quartiles")
    result = {"images": len(paths), "larger": n_large, "started": datetime.now().isoformat(timespec="seconds")}
    for radius, rs in rows.items():
        label = f"GaussianBlur({radius})" if radius else "original"
        flagged, large = sum(f for f, _, _ in rs), sum(f and big for f, big, _ in rs)
        quartiles = statistics.quantiles([b for _, _, b in rs], n=4)
        print(f"{label:<22}{flagged:>9}{len(rs):>5}{large:>16}{n_large:>5}   "
              + " / ".join(f"{q:.0f}" for q in quartiles))
        result[label] = {"flagged": flagged, "larger_flagged": large, "blur_quartiles": quartiles}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / f"blur-flags-{datetime.now():%Y%m%d-%H%M%S}.json"
    out_path.write_text(json.dumps(result, indent=2))
    print(f"wrote {out_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
