"""How the CNN's tag heads do on photos from a source they never saw: leave one folder out, train, evaluate.

Usage:
    python bench/eval_heads_holdout.py                    # every labelled folder train_heads would use
    python bench/eval_heads_holdout.py --hold-out katkam rome-and-stock

For each held-out folder, heads are trained (curation.inference.models.train_heads.train, into a temporary file) on all the
other folders, then `curation.inference.models.evaluate.evaluate_folder` scores them zero-shot on the held-out folder. A category
whose classes never occur in the other folders cannot be learnt, and its row says so. The committed heads are not
touched. This is the honest figure for a new camera or place; the manifest's cross-validation mixes sources.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.inference.models.cnn import CnnModel
from curation.inference.models.evaluate import evaluate_folder
from curation.inference.models.labelled import shared_sets
from curation.inference.models.train_heads import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hold-out", nargs="*", default=None, help="folder names to hold out (default: each)")
    args = ap.parse_args()
    folders = shared_sets()
    held = [f for f in folders if args.hold_out is None or f.name in args.hold_out]
    rows = []
    for folder in held:
        with tempfile.TemporaryDirectory() as tmp:
            heads, manifest = Path(tmp) / "heads.npz", Path(tmp) / "heads.json"
            trained = train([f for f in folders if f != folder], heads, manifest)
            report = evaluate_folder(folder / "images", folder / "labels.csv", CnnModel(heads=heads))
        for category, entry in report["categories"].items():
            if not entry["n"]:
                continue
            learnt = set(trained["metrics"].get(category, {}).get("classes", []))
            unseen = sorted(set(entry["classes"]) - learnt)
            rows.append((folder.name, category, entry["n"], entry["accuracy"], entry["macro_f1"], entry["coverage"],
                         ", ".join(unseen) or "-"))
    print(f"\n{'held out':<16} {'category':<9} {'n':>5} {'acc':>6} {'macroF1':>8} {'None':>6}  classes never seen")
    for name, category, n, acc, f1, none, unseen in rows:
        print(f"{name:<16} {category:<9} {n:>5} {acc:6.3f} {f1:8.3f} {none:6.3f}  {unseen}")


if __name__ == "__main__":
    main()
