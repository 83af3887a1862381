"""Evaluate a model backend on a labelled image folder: zero-shot tags and a few-shot linear probe.

labels.csv needs a `file` column plus one column per taxonomy category (blank = unknown, skipped); the folder is read
by `curation.inference.models.labelled`, as for training the heads. Metrics are scikit-learn's.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from curation.dataset.tags import NONE_LABEL
from curation.inference.models.base import ModelBackend
from curation.inference.models.labelled import read_photos

_BATCH = 16


def _macro_f1(y_true: list[str], y_pred: list[str], classes: list[str]) -> float:
    """Macro-F1 over `classes` (those present in the labels); a prediction outside them counts as a miss."""
    if not classes:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0.0))


def _zero_shot(y_true: list[str], y_pred: list[str], taxonomy_classes: tuple[str, ...]) -> dict:
    n = len(y_true)
    present = [c for c in taxonomy_classes if c in set(y_true)]
    cols = list(taxonomy_classes) + [NONE_LABEL]
    # Rows: the taxonomy classes present, then any other label word in first-seen order; a prediction outside the
    # taxonomy counts as None.
    rows = list(dict.fromkeys([*present, *y_true]))
    confusion: dict[str, dict[str, int]] = {}
    if n:
        labels = list(dict.fromkeys([*rows, *cols]))
        counts = confusion_matrix(y_true, [p if p in cols else NONE_LABEL for p in y_pred], labels=labels)
        at = {label: i for i, label in enumerate(labels)}
        confusion = {t: {p: int(counts[at[t], at[p]]) for p in cols} for t in rows}
    return {
        "n": n,
        "accuracy": float(accuracy_score(y_true, y_pred)) if n else float("nan"),
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
        accs.append(float(accuracy_score(truth, pred)))
        f1s.append(_macro_f1(list(truth), list(pred), used))
    out.update(n_train=k * len(used), n_test=n_test,
               accuracy_mean=float(np.mean(accs)), accuracy_std=float(np.std(accs)),
               macro_f1_mean=float(np.mean(f1s)), macro_f1_std=float(np.std(f1s)))
    return out


def evaluate_folder(images_dir: Path, labels_csv: Path, backend: ModelBackend | None = None,
                    fewshot: int | None = None, seeds: int = 5) -> dict:
    """Zero-shot tag metrics per category and, if `fewshot` is set, a K-shot linear probe."""
    if backend is None:
        from curation.inference.models.backends import load_backend

        backend = load_backend("cnn")
    taxonomy = getattr(backend, "taxonomy", None)
    if taxonomy is None:
        from curation.taxonomy import DEFAULT_TAXONOMY as taxonomy
    categories = taxonomy.categories

    unreadable: list[str] = []
    photos = read_photos(Path(labels_csv), Path(images_dir), categories, unreadable=unreadable)
    kept: list[dict[str, str]] = []
    preds = []
    while batch := list(islice(photos, _BATCH)):
        preds.extend(backend.predict([photo.image for photo in batch]))
        kept.extend(photo.labels for photo in batch)

    report: dict = {"backend": getattr(backend, "name", type(backend).__name__),
                    "embedding": getattr(backend, "embedding_name", ""),
                    "n_images": len(kept) + len(unreadable), "n_unreadable": len(unreadable),
                    "unreadable": unreadable, "categories": {}}
    emb = np.stack([p.embedding for p in preds]) if preds else np.zeros((0, 0), np.float32)
    for cat in categories:
        idx = [i for i, labels in enumerate(kept) if labels[cat]]
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
