"""Tests for curation.sampling.order: joint-strata quotas, nested deterministic order, duplicates, diversity, report."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.sampling.diversity import reduce_embeddings
from curation.sampling.fidelity import fidelity_report, format_fidelity
from curation.sampling.order import (
    SAMPLING_SCHEMA,
    STEPS,
    allocate_quotas,
    compute_sampling,
    sample_ids,
    sampling_table,
    step_size,
)

LABELS = {
    "time": ["day", "night", "dawn_dusk", None],
    "weather": ["clear", "rainy", None],
    "road": ["city", "highway", None],
    "location": ["inside", "outside", None],
}


def label_frame(rows: list[tuple[int, int, int, int]]) -> pl.DataFrame:
    data: dict[str, list[object]] = {"image_id": [f"im{i:05d}" for i in range(len(rows))]}
    for j, (category, values) in enumerate(LABELS.items()):
        data[category] = [values[r[j] % len(values)] for r in rows]
    return pl.DataFrame(data, schema={"image_id": pl.Utf8, **{c: pl.Utf8 for c in LABELS}})


label_rows = st.lists(
    st.tuples(*(st.integers(0, len(v) - 1) for v in LABELS.values())),
    min_size=1,
    max_size=250,
)


def counts_at(sampling: pl.DataFrame, fraction: float) -> dict[str, int]:
    kept = sampling.filter(pl.col("keep_rank") < step_size(fraction, sampling.height))
    return dict(kept.group_by("stratum").len().iter_rows())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=label_rows, seed=st.integers(0, 2**16), with_embeddings=st.booleans())
def test_quotas_nested_and_deterministic(
    rows: list[tuple[int, int, int, int]], seed: int, with_embeddings: bool
) -> None:
    frame = label_frame(rows)
    n = frame.height
    emb = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32) if with_embeddings else None
    sampling = compute_sampling(frame, emb, seed=seed)
    assert sorted(sampling["keep_rank"].to_list()) == list(range(n))
    sizes = dict(sampling.group_by("stratum").len().iter_rows())
    previous: set[str] = set()
    for f in STEPS:
        counts = counts_at(sampling, f)
        assert sum(counts.values()) == step_size(f, n)
        for stratum, size in sizes.items():
            assert abs(counts.get(stratum, 0) - f * size) < 1, (f, stratum, size, counts.get(stratum, 0))
        ids = set(sample_ids(sampling, f).to_list())
        assert previous <= ids and len(ids) == step_size(f, n)
        previous = ids
    again = compute_sampling(frame, emb, seed=seed)
    assert again.equals(sampling)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_allocate_quotas_sum_within_one_and_monotone(sizes: list[int], seed: int) -> None:
    quotas = allocate_quotas(np.array(sizes), STEPS, seed)
    n = sum(sizes)
    for k, f in enumerate(STEPS):
        assert quotas[k].sum() == step_size(f, n)
        assert np.all(np.abs(quotas[k] - f * np.array(sizes)) < 1)
    assert np.all(np.diff(quotas, axis=0) >= 0)
    assert np.array_equal(quotas[-1], sizes)


def test_step_size_rounds_half_up() -> None:
    assert [step_size(f, 7) for f in STEPS] == [1, 3, 4, 6, 7]  # 1.4, 2.8, 4.2, 5.6, 7
    assert step_size(0.5, 5) == 3 and step_size(0.0, 5) == 0


def test_near_duplicates_go_last_best_quality_kept() -> None:
    rng = np.random.default_rng(3)
    n = 100
    frame = pl.DataFrame(
        {
            "image_id": [f"im{i}" for i in range(n)],
            "time": ["day"] * n,
            "weather": ["clear"] * n,
            "road": ["city"] * n,
            "location": [None] * n,
            "duplicate_group": pl.Series([7] * 5 + [None] * (n - 5), dtype=pl.Int64),
            "quality_score": [0.2, 0.9, 0.5, None, 0.1] + list(rng.uniform(0, 1, n - 5)),
        }
    )
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    emb[0] *= 25  # an outlier group: farthest-point alone would pick it early, and more than once
    emb[1:5] = emb[0] + 1e-3 * rng.standard_normal((4, 16))
    for seed in range(5):
        sampling = compute_sampling(frame, emb, seed=seed)
        kept = set(sample_ids(sampling, 0.2).to_list())
        group = {f"im{i}" for i in range(5)}
        assert kept & group == {"im1"}  # the best-quality member, and only it
        ranks = dict(zip(sampling["image_id"], sampling["keep_rank"], strict=True))
        assert sorted(ranks[i] for i in ("im0", "im2", "im3", "im4")) == [n - 4, n - 3, n - 2, n - 1]


def clustered(n: int, seed: int) -> np.ndarray:
    """10 tight clusters of unequal size in 32-d, each spread along a 3-d patch (low intrinsic dimension, as
    image embeddings are). In high intrinsic dimension (isotropic 24-d blobs) farthest-point at 20% loses the
    *mean* distance to random (it favours shell points) while still winning the tail; see the sampling notes."""
    rng = np.random.default_rng(seed)
    sizes = np.array([400, 250, 120, 80, 50, 40, 25, 15, 12, 8])
    sizes = (sizes * n / sizes.sum()).astype(int)
    sizes[0] += n - sizes.sum()
    parts = []
    for s in sizes:
        centre = 10 * rng.standard_normal(32)
        basis = rng.standard_normal((3, 32))
        parts.append(centre + rng.standard_normal((s, 3)) @ basis + 0.05 * rng.standard_normal((s, 32)))
    return np.concatenate(parts)


def coverage(emb: np.ndarray, kept: np.ndarray) -> float:
    a, b = emb[~kept], emb[kept]
    d = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d.min(axis=1), 0)).mean())


def test_stratified_covers_clusters_better_than_random() -> None:
    n = 1000
    emb = clustered(n, seed=0).astype(np.float32)
    frame = label_frame([(0, 0, 0, 0)] * n)
    size = step_size(0.2, n)
    ranks = compute_sampling(frame, emb, seed=0)["keep_rank"].to_numpy()
    ours = coverage(emb, ranks < size)
    randoms = [coverage(emb, compute_sampling(frame, None, seed=s, strategy="random")["keep_rank"].to_numpy() < size)
               for s in range(5)]
    assert ours < np.mean(randoms), (ours, randoms)


def test_big_stratum_uses_cells_and_still_beats_random() -> None:
    n = 3000  # > CELL_SIZE: exercises the balanced cells and the starter greedy
    emb = clustered(n, seed=1).astype(np.float32)
    frame = label_frame([(0, 0, 0, 0)] * (n // 2) + [(1, 1, 1, 1)] * (n - n // 2))
    sampling = compute_sampling(frame, emb, seed=1)
    report = fidelity_report(frame, emb, sampling, seeds=5, coverage_dims=None)
    for step in report["steps"]:
        assert step["sampled"]["coverage_mean"] < step["random"]["coverage_mean"]
        assert step["sampled"]["tv_joint"] <= step["random"]["tv_joint"]


def test_random_strategy_is_a_seeded_permutation() -> None:
    frame = label_frame([(i % 4, i % 3, i % 2, 0) for i in range(50)])
    a = compute_sampling(frame, None, seed=1, strategy="random")
    assert a.equals(compute_sampling(frame, None, seed=1, strategy="random"))
    assert not a.equals(compute_sampling(frame, None, seed=2, strategy="random"))
    assert sorted(a["keep_rank"]) == list(range(50))


def test_table_schema_and_errors() -> None:
    frame = label_frame([(0, 1, 2, 0), (1, 1, 0, 2)])
    table = sampling_table(compute_sampling(frame))
    assert table.schema == SAMPLING_SCHEMA and isinstance(table, pa.Table)
    assert set(table.column("stratum").to_pylist()) == {"day|rainy|None|inside", "night|rainy|city|None"}
    for bad in (
        lambda: compute_sampling(frame, strategy="other"),
        lambda: compute_sampling(frame, np.zeros((3, 2))),
        lambda: compute_sampling(pl.concat([frame, frame])),
        lambda: sample_ids(compute_sampling(frame), 1.5),
    ):
        try:
            bad()
        except ValueError:
            continue
        raise AssertionError("expected ValueError")


def test_fidelity_report_and_format() -> None:
    rng = np.random.default_rng(5)
    n = 600
    rows = [tuple(int(x) for x in rng.integers(0, 4, size=4)) for _ in range(n)]
    frame = label_frame(rows).with_columns(
        pl.Series("duplicate_group", [i // 3 if i < 60 else None for i in range(n)], dtype=pl.Int64),
        pl.Series("quality_score", rng.uniform(0, 1, n)),
    )
    emb = rng.standard_normal((n, 6)).astype(np.float32)
    sampling = compute_sampling(frame, emb, seed=0)
    report = fidelity_report(frame, emb, sampling, seeds=5)
    assert [s["size"] for s in report["steps"]] == [120, 240, 360, 480]
    for step in report["steps"]:
        for category in LABELS:
            assert step["sampled"][f"tv_{category}"] <= step["random"][f"tv_{category}"] + 1e-12
        for dropped in step["sampled"]["dropped"]:
            assert dropped["exact_share"] < 1
    text = format_fidelity(report)
    assert "tv_joint" in text and "coverage_mean" in text and "duplicates_kept" in text
    # absent strata: one note a step that has any, naming 3 and counting the rest, never one line each
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    steps_with_absent = [s for s in report["steps"] if s["sampled"]["dropped"]]
    assert len(notes) == len(steps_with_absent) > 0
    for note, step in zip(notes, steps_with_absent, strict=True):
        absent = step["sampled"]["dropped"]
        assert f"{len(absent)} strata" in note and absent[0]["stratum"] in note
        if len(absent) > 3:
            assert note.endswith(f"and {len(absent) - 3} more")


def test_fidelity_report_of_a_tiny_dataset_whose_steps_repeat_a_size() -> None:
    """4 images: the 40% and 60% steps both keep 2 (a curate-new-blobs delta can be this small)."""
    frame = label_frame([(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 1, 0)])
    emb = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    report = fidelity_report(frame, emb, compute_sampling(frame, emb, seed=0), seeds=2)
    sizes = [s["size"] for s in report["steps"]]
    assert sizes == sorted(sizes) and len(set(sizes)) < len(sizes)
    assert all(np.isfinite(s["sampled"]["coverage_mean"]) for s in report["steps"])


def test_reduce_embeddings_is_a_deterministic_pca() -> None:
    """scikit-learn's PCA, seeded: same input and seed give the same projection; the variance share is PCA's."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((500, 8)) @ rng.standard_normal((8, 64))).astype(np.float32)  # rank 8 in 64-d
    z, explained = reduce_embeddings(x, dim=16, seed=0)
    again, _ = reduce_embeddings(x, dim=16, seed=0)
    np.testing.assert_array_equal(z, again)
    assert z.shape == (500, 16) and z.dtype == np.float32 and explained == pytest.approx(1.0, abs=1e-4)

    def squared_distances(a: np.ndarray) -> np.ndarray:
        return ((a[:, None].astype(np.float64) - a[None]) ** 2).sum(-1)

    # rank 8 fits in 16 dimensions: distances survive the projection
    np.testing.assert_allclose(squared_distances(z[:40]), squared_distances(x[:40]), rtol=1e-3, atol=1e-2)
    _, top4 = reduce_embeddings(x, dim=4, seed=0)
    assert top4 == pytest.approx(PCA(n_components=4).fit(x).explained_variance_ratio_.sum(), rel=1e-3)
    small, kept = reduce_embeddings(x[:5], dim=16)  # fewer rows than dimensions: at most one per row
    assert small.shape == (5, 5) and kept == pytest.approx(1.0, abs=1e-4)
    unchanged, share = reduce_embeddings(x[:, :8], dim=16)
    assert unchanged.shape == (500, 8) and share == 1.0
