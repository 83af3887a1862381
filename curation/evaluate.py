"""Evaluate a model backend on a labelled image folder: zero-shot tags and a few-shot linear probe.

labels.csv needs a `file` column plus one column per taxonomy category (blank = unknown, skipped).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from curation.models.base import ModelBackend

NONE_LABEL = "None"
_BATCH = 16


def _load(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.draft("RGB", (640, 480))  # JPEG-only fast downscale at decode; no-op for other formats
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def _read_labels(labels_csv: Path, categories: tuple[str, ...]) -> list[dict[str, str]]:
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{"file": r["file"], **{c: (r.get(c) or "").strip() for c in categories}} for r in rows]


def _macro_f1(y_true: list[str], y_pred: list[str], classes: list[str]) -> float:
    """Macro-F1 over `classes` (those present in the labels); None predictions count as misses."""
    if not classes:
        return float("nan")
    f1s = []
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s))


def _zero_shot(y_true: list[str], y_pred: list[str], taxonomy_classes: tuple[str, ...]) -> dict:
    n = len(y_true)
    present = [c for c in taxonomy_classes if c in set(y_true)]
    cols = list(taxonomy_classes) + [NONE_LABEL]
    confusion = {t: {p: 0 for p in cols} for t in present}
    for t, p in zip(y_true, y_pred):
        confusion.setdefault(t, {q: 0 for q in cols})
        confusion[t][p if p in cols else NONE_LABEL] += 1
    return {
        "n": n,
        "accuracy": sum(t == p for t, p in zip(y_true, y_pred)) / n if n else float("nan"),
        "macro_f1": _macro_f1(y_true, y_pred, present),
        # As specified for this pipeline, "coverage" is the share of images predicted None.
        "coverage": sum(p == NONE_LABEL for p in y_pred) / n if n else float("nan"),
        "classes": present,
        "confusion": confusion,
    }


def _fewshot(emb: np.ndarray, y: list[str], k: int, seeds: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    y_arr = np.array(y)
    classes, counts = np.unique(y_arr, return_counts=True)
    used = [str(c) for c, n in zip(classes, counts) if n >= k + 1]
    skipped = {str(c): int(n) for c, n in zip(classes, counts) if n < k + 1}
    out: dict = {"k": k, "classes": used, "skipped": skipped, "seeds": seeds}
    if len(used) < 2:
        out["error"] = "fewer than two classes with at least k+1 examples"
        return out
    mask = np.isin(y_arr, used)
    x_all, y_all = emb[mask], y_arr[mask]
    accs, f1s, n_test = [], [], 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        train = np.zeros(len(y_all), dtype=bool)
        for c in used:
            idx = np.flatnonzero(y_all == c)
            train[rng.choice(idx, size=k, replace=False)] = True
        clf = LogisticRegression(max_iter=2000, C=1.0)
        clf.fit(x_all[train], y_all[train])
        pred = clf.predict(x_all[~train])
        truth = y_all[~train]
        n_test = int((~train).sum())
        accs.append(float((pred == truth).mean()))
        f1s.append(_macro_f1(list(truth), list(pred), used))
    out.update(n_train=k * len(used), n_test=n_test,
               accuracy_mean=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
               macro_f1_mean=float(np.mean(f1s)), macro_f1_std=float(np.std(f1s)))
    return out


def evaluate_folder(images_dir: Path, labels_csv: Path, backend: ModelBackend | None = None,
                    fewshot: int | None = None, seeds: int = 5) -> dict:
    """Zero-shot tag metrics per category and, if `fewshot` is set, a K-shot linear probe."""
    if backend is None:
        from curation.models.registry import load_backend

        backend = load_backend("cnn")
    taxonomy = getattr(backend, "taxonomy", None)
    if taxonomy is None:
        from curation.taxonomy import DEFAULT_TAXONOMY as taxonomy
    categories = taxonomy.categories
    rows = _read_labels(Path(labels_csv), categories)
    images_dir = Path(images_dir)

    kept: list[dict[str, str]] = []
    preds = []
    unreadable: list[str] = []
    for start in range(0, len(rows), _BATCH):
        batch_rows, batch_imgs = [], []
        for r in rows[start:start + _BATCH]:
            try:
                batch_imgs.append(_load(images_dir / r["file"]))
                batch_rows.append(r)
            except Exception:  # noqa: BLE001 - any decode failure is reported, not raised
                unreadable.append(r["file"])
        if batch_imgs:
            preds.extend(backend.predict(batch_imgs))
            kept.extend(batch_rows)

    report: dict = {"backend": getattr(backend, "name", type(backend).__name__),
                    "embedding": getattr(backend, "embedding_name", ""),
                    "n_images": len(rows), "n_unreadable": len(unreadable),
                    "unreadable": unreadable, "categories": {}}
    emb = np.stack([p.embedding for p in preds]) if preds else np.zeros((0, 0), np.float32)
    for cat in categories:
        idx = [i for i, r in enumerate(kept) if r[cat]]
        y_true = [kept[i][cat] for i in idx]
        y_pred = [preds[i].tags.get(cat, (None, 0.0))[0] or NONE_LABEL for i in idx]
        entry = _zero_shot(y_true, y_pred, taxonomy.classes[cat])
        if fewshot is not None and idx:
            entry["fewshot"] = _fewshot(emb[idx], y_true, fewshot, seeds)
        report["categories"][cat] = entry
    return report


def _fmt(x: float) -> str:
    return "  n/a" if x != x else f"{x:.3f}"


def format_report(report: dict) -> str:
    """Readable text tables for an `evaluate_folder` report."""
    lines = [f"backend={report['backend']} embedding={report['embedding']} images={report['n_images']}"
             f" unreadable={report['n_unreadable']}"]
    if report["unreadable"]:
        lines.append("  unreadable: " + ", ".join(report["unreadable"][:10]))
    lines.append("")
    lines.append(f"{'category':10s} {'n':>5s} {'acc':>6s} {'macroF1':>8s} {'None%':>6s}")
    for cat, e in report["categories"].items():
        lines.append(f"{cat:10s} {e['n']:5d} {_fmt(e['accuracy']):>6s} {_fmt(e['macro_f1']):>8s} "
                     f"{_fmt(e['coverage']):>6s}")
    for cat, e in report["categories"].items():
        if not e["n"]:
            continue
        cols = list(next(iter(e["confusion"].values())).keys())
        w = max(9, *(len(c) + 1 for c in cols))
        lines += ["", f"[{cat}] confusion (rows = true, cols = predicted)",
                  " " * 10 + "".join(f"{c:>{w}s}" for c in cols)]
        for t, row in e["confusion"].items():
            lines.append(f"{t:10s}" + "".join(f"{row[c]:>{w}d}" for c in cols))
    fs = [(c, e["fewshot"]) for c, e in report["categories"].items() if "fewshot" in e]
    if fs:
        lines += ["", f"few-shot linear probe (k={fs[0][1]['k']} per class, {fs[0][1]['seeds']} seeds)",
                  f"{'category':10s} {'train':>5s} {'test':>5s} {'acc':>15s} {'macroF1':>15s}  skipped"]
        for cat, f in fs:
            skipped = ", ".join(f"{c}({n})" for c, n in f["skipped"].items()) or "-"
            if "error" in f:
                lines.append(f"{cat:10s} {'-':>5s} {'-':>5s} {f['error']}; skipped: {skipped}")
                continue
            lines.append(f"{cat:10s} {f['n_train']:5d} {f['n_test']:5d} "
                         f"{f['accuracy_mean']:.3f} ± {f['accuracy_std']:.3f}  "
                         f"{f['macro_f1_mean']:.3f} ± {f['macro_f1_std']:.3f}  {skipped}")
    return "\n".join(lines)
