"""Teach by example: fit a linear probe per category on a few labelled images and re-tag the whole dataset.

A person labels some images of a curated dataset in a CSV:

    file,time,weather,road,location
    drive1/0001.jpg,night,,city,
    3f2a9c0d1e4b5a67,day,rainy,,outside

`file` is the blob name (as in files.parquet) or the image id; the other columns are optional, a blank cell means
unknown, and a filled cell must be one of the taxonomy's class words. For every category with at least two classes
that have `min_per_class` labelled images, a scikit-learn logistic-regression probe is fitted on the stored
embeddings (embeddings.parquet) of the labelled images, and every image of the dataset is re-tagged from its stored
embedding: no image is decoded and no model runs, so it works with whatever backend embedded the dataset.

The probe: embeddings are standardised with the mean and spread of the whole dataset, then a class-balanced
LogisticRegression (C=1.0 by default, the `c` argument) is fitted on the labelled ones. Its top probability is the
confidence, and a label under the taxonomy's threshold becomes None, as for the base model. Only classes with at
least `min_per_class` labels are learnt; the others are reported and never predicted by that probe.

Versioning. The record's `meta_model` becomes `<base>+probe-v<N>` (N = 1, 2, ...). Before the new metadata is
written, the current one is kept as tag version N-1 (`DatasetStore.keep_metadata_version`): version 0 holds the
base model's tags, version 1 those of probe-v1, and so on.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.parquet_io import metadata_schema, rows_to_table
from curation.ingest.ids import image_id_for
from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

PROBE_TAG = "+probe-v"
_PROBE_RE = re.compile(re.escape(PROBE_TAG) + r"(\d+)$")
NONE_LABEL = "None"


def split_meta_model(meta_model: str | None) -> tuple[str, int]:
    """('cpu-rules-v1', 2) for 'cpu-rules-v1+probe-v2'; the base and 0 for an untaught model."""
    name = meta_model or "unknown"
    match = _PROBE_RE.search(name)
    if match is None:
        return name, 0
    return name[: match.start()], int(match.group(1))


# -- the labels CSV --------------------------------------------------------------------------------------------
def read_labels(labels_csv: Path, taxonomy: Taxonomy = DEFAULT_TAXONOMY) -> list[dict[str, str]]:
    """Rows of {file, <category>: class word or ''}; raises ValueError on a missing `file` column or unknown words."""
    with open(labels_csv, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
        if "file" not in header:
            raise ValueError(
                f"{labels_csv}: needs a 'file' column (blob name or image id); found columns: "
                f"{', '.join(n for n in header if n) or 'none'}"
            )
        categories = [c for c in taxonomy.categories if c in header]
        rows: list[dict[str, str]] = []
        unknown: dict[str, set[str]] = {}
        for raw in reader:
            file = (raw.get(header["file"]) or "").strip()
            if not file:
                continue
            row = {"file": file}
            for category in categories:
                word = (raw.get(header[category]) or "").strip().lower()
                if word and word not in taxonomy.classes[category]:
                    unknown.setdefault(category, set()).add(word)
                row[category] = word
            rows.append(row)
    if unknown:
        problems = "; ".join(
            f"{category}: {', '.join(sorted(words))} (allowed: {', '.join(taxonomy.classes[category])})"
            for category, words in unknown.items()
        )
        raise ValueError(f"{labels_csv}: unknown class words: {problems}. A blank cell means unknown.")
    return rows


def _match_files(rows: list[dict[str, str]], files: pa.Table) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Labels per image id, from blob names, image ids, or (when unambiguous) bare file names."""
    ids = files.column("image_id").to_pylist()
    blobs = files.column("blob_name").to_pylist()
    known = set(ids)
    by_blob = dict(zip(blobs, ids, strict=True))
    basenames: dict[str, list[str]] = {}
    for blob, image_id in zip(blobs, ids, strict=True):
        basenames.setdefault(blob.rsplit("/", 1)[-1], []).append(image_id)
    labels: dict[str, dict[str, str]] = {}
    unmatched: list[str] = []
    conflicts: list[str] = []
    for row in rows:
        file = row["file"]
        image_id = by_blob.get(file) or (file if file in known else None)
        if image_id is None and image_id_for(file) in known:
            image_id = image_id_for(file)
        if image_id is None and len(basenames.get(file, ())) == 1:
            image_id = basenames[file][0]
        if image_id is None:
            unmatched.append(file)
            continue
        merged = labels.setdefault(image_id, {})
        for category, word in row.items():
            if category == "file" or not word:
                continue
            if merged.get(category, word) != word:
                conflicts.append(f"{file} ({category}: {merged[category]} vs {word})")
            merged[category] = word
    if conflicts:
        raise ValueError(f"conflicting labels for the same image: {'; '.join(conflicts[:10])}")
    return labels, unmatched


# -- the stored tables ----------------------------------------------------------------------------------------
def _read_embeddings(store: DatasetStore) -> tuple[list[str], np.ndarray]:
    if not store.has(Table.EMBEDDINGS):
        raise ValueError(f"dataset {store.dataset_id} has no embeddings yet; curate it to completion first")
    table = store.read(Table.EMBEDDINGS, columns=["image_id", "embedding"])
    ids = table.column("image_id").to_pylist()
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size if pa.types.is_fixed_size_list(column.type) else None
    if dim is None:  # a variable-size list: stack the rows
        matrix = np.asarray(column.to_pylist(), dtype=np.float32).reshape(len(ids), -1)
    else:
        matrix = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(ids), dim)
    return ids, matrix


def _current_metadata(store: DatasetStore, taxonomy: Taxonomy) -> list[dict[str, Any]]:
    schema = metadata_schema(taxonomy.categories)
    if store.has(Table.METADATA):
        rows = store.read(Table.METADATA).to_pylist()
        for row in rows:
            for field in schema.names:
                row.setdefault(field, None)
        return rows
    if not store.has(Table.FILES):
        raise ValueError(f"dataset {store.dataset_id} has neither metadata nor files")
    return [{name: None for name in schema.names} | {"image_id": i}
            for i in store.read(Table.FILES, columns=["image_id"]).column("image_id").to_pylist()]


# -- the probe ------------------------------------------------------------------------------------------------
def _fit_category(x_all: np.ndarray, x_train: np.ndarray, y_train: np.ndarray, c: float) -> tuple[Any, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    # Standardise with the statistics of the whole dataset (unlabelled images too): the few labels then fix the
    # direction, not the scale, and the probe sees the dataset's own spread of every embedding dimension.
    scaler = StandardScaler().fit(x_all)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    clf.fit(scaler.transform(x_train), y_train)
    return scaler, clf


def teach(
    store: DatasetStore,
    labels_csv: Path,
    min_per_class: int = 2,
    taxonomy: Taxonomy = DEFAULT_TAXONOMY,
    c: float = 1.0,
) -> dict[str, Any]:
    """Fit a probe per category from the labelled images and re-tag the whole dataset; see the module docstring.

    Returns a summary: version, meta models, per taught category its classes, labelled counts, training accuracy
    and the new tag counts, skipped categories with the reason, and labelled files that matched no image.
    Raises ValueError for a bad CSV (no `file` column, unknown class words, conflicting labels) or when no
    category has enough labels; registry.DatasetNotFound for an unknown dataset.
    """
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be at least 1, got {min_per_class}")
    record = store.load_record()
    rows = read_labels(Path(labels_csv), taxonomy)
    if not store.has(Table.FILES):
        raise ValueError(f"dataset {store.dataset_id} has no files yet; curate it to completion first")
    labels, unmatched = _match_files(rows, store.read(Table.FILES, columns=["image_id", "blob_name"]))
    emb_ids, matrix = _read_embeddings(store)
    row_of = {image_id: i for i, image_id in enumerate(emb_ids)}

    taught: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    new_tags: dict[str, tuple[list[str | None], np.ndarray]] = {}
    for category in taxonomy.categories:
        labelled = [(image_id, lab[category]) for image_id, lab in labels.items() if lab.get(category)]
        with_emb = [(row_of[i], word) for i, word in labelled if i in row_of]
        counts = Counter(word for _, word in with_emb)
        enough = sorted(w for w, n in counts.items() if n >= min_per_class)
        few = {w: n for w, n in sorted(counts.items()) if n < min_per_class}
        if not labelled:
            skipped[category] = "no labels"
            continue
        if len(enough) < 2:
            detail = ", ".join(f"{w}={n}" for w, n in sorted(counts.items())) or "none with an embedding"
            skipped[category] = (f"needs at least 2 classes with >= {min_per_class} labelled images that have an "
                                 f"embedding; got {detail}")
            continue
        train = [(r, w) for r, w in with_emb if w in enough]
        x_train = matrix[[r for r, _ in train]]
        y_train = np.array([w for _, w in train])
        scaler, clf = _fit_category(matrix, x_train, y_train, c)
        train_acc = float((clf.predict(scaler.transform(x_train)) == y_train).mean())
        proba = clf.predict_proba(scaler.transform(matrix))
        classes = [str(k) for k in clf.classes_]
        best = proba.argmax(axis=1)
        conf = proba[np.arange(len(best)), best]
        decided = [taxonomy.decide(category, classes[b], float(p)) for b, p in zip(best, conf, strict=True)]
        new_tags[category] = (decided, conf.astype(np.float32))
        taught[category] = {
            "classes": classes,
            "labelled": {w: int(counts[w]) for w in enough},
            "ignored_classes": few,  # below min_per_class: not learnt, so never predicted
            "labelled_without_embedding": len(labelled) - len(with_emb),
            "train_accuracy": train_acc,
        }
    if not taught:
        reasons = "; ".join(f"{c}: {r}" for c, r in skipped.items())
        raise ValueError(f"nothing to teach: no category has enough labels ({reasons})")

    base, current = split_meta_model(record.meta_model)
    version = current + 1
    meta_rows = _current_metadata(store, taxonomy)
    n_without = 0
    for row in meta_rows:
        i = row_of.get(row["image_id"])
        n_without += i is None
        for category, (decided, conf) in new_tags.items():
            row[category] = None if i is None else decided[i]
            row[f"{category}_confidence"] = None if i is None else float(conf[i])
    for category in taught:
        tally = Counter(row[category] or NONE_LABEL for row in meta_rows)
        taught[category]["tagged"] = dict(sorted(tally.items()))

    previous = store.keep_metadata_version(current)
    store.write(Table.METADATA, rows_to_table(meta_rows, metadata_schema(taxonomy.categories)))
    new_model = f"{base}{PROBE_TAG}{version}"
    store.update_record(meta_model=new_model)
    return {
        "dataset_id": store.dataset_id,
        "version": version,
        "meta_model": new_model,
        "previous_meta_model": record.meta_model,
        "previous_metadata": previous,
        "embedding_model": record.embedding_model,
        "images": len(meta_rows),
        "images_without_embedding": n_without,
        "labelled_files": len(rows),
        "labelled_images": len(labels),
        "unmatched_files": unmatched,
        "categories": taught,
        "skipped": skipped,
    }
