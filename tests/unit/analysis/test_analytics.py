"""Whole-dataset analytics on planted duplicates, outliers and quality problems; and the 3D layout."""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageFilter

from curation.analysis.analytics import ANALYTICS_SCHEMA, analyse, analytics_table, nearest_neighbours
from curation.analysis.layout import layout_3d
from curation.analysis.quality import image_signals
from tests.unit.analysis.test_quality import scene


def encode(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def clustered(n: int, d: int = 32, clusters: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (clusters, d))
    x = centres[np.arange(n) % clusters] + rng.normal(0, 0.35, (n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> dict[str, object]:
    """36 distinct images plus: an exact copy of 0, a resized re-encode of 1, a blurred 2, a black and an outlier."""
    n_base = 36
    files = [encode(scene(seed, (320, 240))) for seed in range(n_base)]
    emb = clustered(n_base)
    rng = np.random.default_rng(1)
    near = decode(files[1]).resize((240, 180))
    extra = {
        "exact_of_0": (files[0], emb[0]),
        "near_of_1": (encode(near, quality=70), emb[1] + rng.normal(0, 0.02, emb.shape[1])),  # ~0.01 cosine apart
        "blurred_2": (encode(decode(files[2]).filter(ImageFilter.GaussianBlur(4))), emb[2] + 0.3),
        "black": (encode(Image.new("RGB", (320, 240))), emb[3] + 0.3),
        "outlier": (encode(scene(99, (320, 240))), -emb.mean(axis=0) * 5),
    }
    ids = [f"img{i:02d}" for i in range(n_base)] + list(extra)
    files += [f for f, _ in extra.values()]
    emb = np.vstack([emb] + [e[None, :] for _, e in extra.values()]).astype(np.float32)
    rows = []
    for data in files:
        img = decode(data)
        rows.append({**image_signals(img, *img.size), "width": img.width, "height": img.height})
    signals = pl.DataFrame(rows)
    frame = analyse(
        ids,
        emb,
        content_hash=[hashlib.sha256(f).hexdigest() for f in files],
        phash=signals["phash"].to_list(),
        signals=signals,
        k=5,
    )
    return {"ids": ids, "emb": emb, "frame": frame}


def row(frame: pl.DataFrame, image_id: str) -> dict[str, object]:
    return frame.filter(pl.col("image_id") == image_id).to_dicts()[0]


def test_schema_and_row_order(planted):
    frame = planted["frame"]
    assert frame["image_id"].to_list() == planted["ids"]
    assert analytics_table(frame).schema == ANALYTICS_SCHEMA


def test_exact_duplicate_is_grouped_as_exact(planted):
    frame = planted["frame"]
    a, b = row(frame, "img00"), row(frame, "exact_of_0")
    assert a["duplicate_group"] is not None and a["duplicate_group"] == b["duplicate_group"]
    assert a["duplicate_kind"] == b["duplicate_kind"] == "exact"
    assert {a["duplicate_keep"], b["duplicate_keep"]} == {True, False}


def test_resized_reencoded_copy_is_grouped_as_near_and_the_original_is_kept(planted):
    frame = planted["frame"]
    a, b = row(frame, "img01"), row(frame, "near_of_1")
    assert a["duplicate_group"] is not None and a["duplicate_group"] == b["duplicate_group"]
    assert a["duplicate_kind"] == b["duplicate_kind"] == "near"
    assert a["duplicate_keep"] is True and b["duplicate_keep"] is False


def test_only_planted_duplicates_are_grouped(planted):
    grouped = planted["frame"].filter(pl.col("duplicate_group").is_not_null())
    assert sorted(grouped["image_id"]) == ["exact_of_0", "img00", "img01", "near_of_1"]
    assert grouped["duplicate_group"].n_unique() == 2
    assert planted["frame"].filter(pl.col("duplicate_group").is_null())["duplicate_keep"].null_count() == 37


def test_outlier_has_the_highest_anomaly_score(planted):
    frame = planted["frame"]
    scores = frame["anomaly_score"]
    assert row(frame, "outlier")["anomaly_score"] == pytest.approx(1.0)
    assert frame["image_id"][int(scores.arg_max())] == "outlier"
    assert scores.min() >= 0.0 and scores.max() <= 1.0


def test_similar_ids_exclude_self_and_are_sorted_by_distance(planted):
    frame, emb, ids = planted["frame"], planted["emb"], planted["ids"]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for r in frame.iter_rows(named=True):
        assert r["image_id"] not in r["similar_ids"] and len(r["similar_ids"]) == 5
        assert r["similar_distances"] == sorted(r["similar_distances"])
        i = ids.index(r["image_id"])
        cos = 1 - unit[[ids.index(s) for s in r["similar_ids"]]] @ unit[i]
        np.testing.assert_allclose(r["similar_distances"], cos, atol=1e-5)
        others = np.delete(1 - unit @ unit[i], i)
        assert r["similar_distances"][-1] <= np.sort(others)[4] + 1e-5  # truly the 5 nearest


def test_quality_flags_and_scores(planted):
    frame = planted["frame"]
    assert "blurry" in row(frame, "blurred_2")["quality_flags"]
    assert "blurry" not in row(frame, "img02")["quality_flags"]
    assert "dark" in row(frame, "black")["quality_flags"]
    assert row(frame, "img05")["quality_flags"] == []
    assert row(frame, "img02")["quality_score"] > row(frame, "blurred_2")["quality_score"]


def test_missing_embeddings_phash_and_signals():
    emb = clustered(6)
    emb[2] = np.nan
    frame = analyse([f"i{i}" for i in range(6)], emb, content_hash=["h"] * 2 + [None] * 4, k=3)
    r = frame.row(2, named=True)
    assert r["anomaly_score"] is None and r["similar_ids"] == [] and r["quality_flags"] is None
    assert frame["duplicate_kind"].to_list()[:2] == ["exact", "exact"]
    assert all("i2" not in s for s in frame["similar_ids"].to_list())


def test_embedding_alone_finds_a_near_copy_without_phash():
    emb = clustered(30)
    emb = np.vstack([emb, emb[7] + 0.001])
    frame = analyse([f"i{i}" for i in range(31)], emb, k=4)
    groups = frame.filter(pl.col("duplicate_group").is_not_null())["image_id"].to_list()
    assert groups == ["i7", "i30"]


def test_hnsw_backend_agrees_with_exact():
    pytest.importorskip("faiss")
    x = clustered(600, d=48, clusters=8, seed=3)
    exact, _ = nearest_neighbours(x, 10, "exact")
    approx, dist = nearest_neighbours(x, 10, "hnsw")
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall > 0.95
    assert (approx != np.arange(600)[:, None]).all() and (np.diff(dist, axis=1) >= 0).all()


def test_layout_pca_for_small_sets():
    out = layout_3d(clustered(50), seed=0)
    assert out.shape == (50, 3) and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out).max() <= 1.0 + 1e-6
    np.testing.assert_array_equal(out, layout_3d(clustered(50), seed=0))


def test_layout_umap_is_deterministic():
    x = clustered(240, d=64, clusters=4)
    a, b = layout_3d(x, seed=7), layout_3d(x, seed=7)
    assert a.shape == (240, 3) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # clusters stay apart: every point is nearer its own cluster's centre than any other
    labels = np.arange(240) % 4
    centres = np.stack([a[labels == c].mean(axis=0) for c in range(4)])
    assert (np.linalg.norm(a[:, None] - centres[None], axis=2).argmin(axis=1) == labels).mean() > 0.95


def test_umap_compiled_code_is_cached_on_disk():
    """UMAP's numba functions that umap-learn leaves uncached are cached, so a fresh flow process skips compiling."""
    layout_3d(clustered(240, d=16, clusters=3), seed=0)  # the UMAP path
    import umap.layouts
    from numba.extending import is_jitted

    # the layout's epoch function (umap-learn jits it without cache=True), as compiled by the call above
    compiled = [d for d in vars(umap.layouts).values() if is_jitted(d) and d.signatures]
    epoch = next(d for d in compiled if d.py_func.__name__ == "_optimize_layout_euclidean_single_epoch")
    stats = epoch.stats
    assert stats.cache_path is not None  # where numba keeps it: next to the source, or NUMBA_CACHE_DIR
    assert sum(stats.cache_hits.values()) + sum(stats.cache_misses.values()) >= 1  # looked up in (or saved to) it
    assert any(name.endswith(".nbi") and "_optimize_layout_euclidean_single_epoch" in name
               for name in os.listdir(stats.cache_path))


def test_layout_neighbour_graph_is_exact():
    """UMAP gets each row's exact nearest neighbours (itself first), as a brute-force search finds them."""
    from curation.analysis.layout import UMAP_NEIGHBORS, ExactSearch

    x = clustered(300, d=24, clusters=5)
    search = ExactSearch(x)
    idx, dist, index = search.graph(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    expected = np.sort(d, axis=1)[:, :UMAP_NEIGHBORS]
    assert index is search and idx.shape == (300, UMAP_NEIGHBORS) and (idx[:, 0] == np.arange(300)).all()
    np.testing.assert_allclose(dist, expected, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(d, idx.astype(np.intp), axis=1), expected, atol=1e-4)
    queried, qdist = search.query(x[:7] + 0.01, 4)
    assert queried.shape == (7, 4) and (queried[:, 0] == np.arange(7)).all() and (np.diff(qdist, axis=1) >= 0).all()


def test_layout_places_rows_beyond_the_fit_sample_with_their_cluster(monkeypatch):
    """Above UMAP_FIT_MAX rows UMAP is fitted on a sample and the rest are transformed (their neighbours found by
    the exact search): deterministic, and every row lands with its own cluster."""
    from curation.analysis import layout

    monkeypatch.setattr(layout, "UMAP_FIT_MAX", 300)
    x = clustered(700, d=32, clusters=4)
    a, b = layout.layout_3d(x, seed=3), layout.layout_3d(x, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (700, 3) and np.isfinite(a).all() and np.abs(a).max() <= 1.0 + 1e-6
    labels = np.arange(700) % 4
    centres = np.stack([a[labels == c].mean(axis=0) for c in range(4)])
    assert (np.linalg.norm(a[:, None] - centres[None], axis=2).argmin(axis=1) == labels).mean() > 0.95
