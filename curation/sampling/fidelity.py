"""How faithful a sampling order is at each step, side by side with uniform random sampling of the same size.

Per step (20/40/60/80%): total-variation distance of every category's marginal and of the joint stratum vs the full
dataset; embedding coverage (distance from an excluded image to its nearest kept one: mean and 95th percentile);
duplicates kept (kept images beyond the first in each duplicate group); strata dropped (present in the dataset,
absent from the sample). The random column is the mean over ``seeds`` seeded permutations.

Coverage is measured on a seeded pool of at most ``coverage_queries`` images (all images when n is smaller); at each
step the pool members that are excluded are the queries, so for big n it is a uniform subsample of the excluded
images. Distances are Euclidean, in a ``coverage_dims``-dimensional PCA projection when the embeddings are wider
(the report gives the share of variance kept); pass ``coverage_dims=None`` for the full space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from curation.dataset.tags import NONE_LABEL
from curation.sampling.diversity import reduce_embeddings
from curation.sampling.order import step_size, stratum_labels
from curation.taxonomy import CATEGORIES

REPORT_STEPS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
COVERAGE_QUERIES = 5_000
COVERAGE_DIMS = 64
MATRIX_CELLS = 32_000_000  # distance-matrix entries per chunk (128 MB of float32)


def _codes(series: pl.Series) -> tuple[np.ndarray, list[str]]:
    filled = series.cast(pl.Utf8).fill_null(NONE_LABEL)
    names = filled.unique().sort()
    return (filled.rank("dense").to_numpy().astype(np.int64) - 1), names.to_list()


def _tv(full: np.ndarray, kept_codes: np.ndarray) -> float:
    kept = np.bincount(kept_codes, minlength=len(full))
    return 0.5 * float(np.abs(kept / max(kept.sum(), 1) - full / max(full.sum(), 1)).sum())


def _coverage(z: np.ndarray, ranks: list[np.ndarray], sizes: list[int], queries: np.ndarray) -> np.ndarray:
    """Nearest-kept squared distance per (ranking, query, step); nan where the query is kept at that step."""
    n = len(z)
    out = np.full((len(ranks), len(queries), len(sizes)), np.nan)
    if len(queries) == 0 or n == 0:
        return out
    sq = np.einsum("ij,ij->i", z, z)
    orders = [np.argsort(rank)[: sizes[-1]] for rank in ranks]
    starts = [0, *sizes[:-1]]
    chunk = max(1, MATRIX_CELLS // n)
    for lo in range(0, len(queries), chunk):
        q = queries[lo : lo + chunk]
        partial = z @ z[q].T  # (n, chunk): rows gathered per ranking below are contiguous
        partial *= -2.0
        partial += sq[:, None]
        for r, order in enumerate(orders):
            # Two steps of a tiny dataset can keep the same count: that step adds no image (an empty slice).
            block = np.stack([partial[order[a:b]].min(axis=0) if b > a else np.full(len(q), np.inf)
                              for a, b in zip(starts, sizes, strict=True)])
            nearest = np.minimum.accumulate(block, axis=0).T + sq[q][:, None]
            excluded = ranks[r][q][:, None] >= np.asarray(sizes)[None, :]
            out[r, lo : lo + len(q)] = np.where(excluded, np.maximum(nearest, 0.0), np.nan)
    return out


def _duplicates_kept(group: np.ndarray | None, kept: np.ndarray) -> int:
    if group is None:
        return 0
    g = group[kept]
    g = g[g >= 0]
    counts = np.bincount(g) if len(g) else np.zeros(0, np.int64)
    return int(np.maximum(counts - 1, 0).sum())


def fidelity_report(
    frame: pl.DataFrame,
    embeddings: np.ndarray | None,
    sampling: pl.DataFrame,
    seeds: int = 5,
    *,
    steps: Sequence[float] = REPORT_STEPS,
    categories: Sequence[str] = CATEGORIES,
    coverage_queries: int = COVERAGE_QUERIES,
    coverage_dims: int | None = COVERAGE_DIMS,
    seed: int = 0,
) -> dict[str, Any]:
    """Fidelity of ``sampling`` (from ``compute_sampling``) per step, next to random sampling (mean over seeds)."""
    n = frame.height
    aligned = frame.select("image_id").join(sampling.select("image_id", "keep_rank"), on="image_id", how="left")
    if aligned["keep_rank"].null_count():
        raise ValueError("sampling lacks some image ids of the frame")
    ranks = [aligned["keep_rank"].to_numpy().astype(np.int64)]
    ranks += [np.random.default_rng([seed, 100 + s]).permutation(n) for s in range(seeds)]
    sizes = [step_size(f, n) for f in steps]
    marginals = {c: _codes(frame[c]) for c in categories}
    strata, strata_names = _codes(stratum_labels(frame, categories))
    strata_full = np.bincount(strata, minlength=len(strata_names))
    group = None
    if "duplicate_group" in frame.columns:
        group = _codes_or_none(frame["duplicate_group"])
    cover = None
    report: dict[str, Any] = {"n": n, "random_seeds": seeds, "categories": list(categories), "steps": []}
    if embeddings is not None and n:
        dims = embeddings.shape[1] if coverage_dims is None else coverage_dims
        z, explained = reduce_embeddings(embeddings, dim=dims, seed=seed)
        pool = np.sort(np.random.default_rng([seed, 99]).permutation(n)[: min(n, coverage_queries)])
        cover = np.sqrt(_coverage(z, ranks, sizes, pool))
        report["coverage"] = {
            "query_pool": len(pool),
            "subsampled": len(pool) < n,
            "dims": int(z.shape[1]),
            "variance_kept": round(explained, 4),
        }
    for k, (fraction, size) in enumerate(zip(steps, sizes, strict=True)):
        rows = []
        for r, rank in enumerate(ranks):
            kept = rank < size
            kept_strata = np.bincount(strata[kept], minlength=len(strata_names))
            dropped = np.flatnonzero((strata_full > 0) & (kept_strata == 0))
            row: dict[str, Any] = {f"tv_{c}": _tv(np.bincount(c_codes), c_codes[kept])
                                   for c, (c_codes, _) in marginals.items()}
            row["tv_joint"] = _tv(strata_full, strata[kept])
            if cover is not None:
                d = cover[r, :, k]
                d = d[~np.isnan(d)]
                row["coverage_mean"] = float(d.mean()) if len(d) else 0.0
                row["coverage_p95"] = float(np.percentile(d, 95)) if len(d) else 0.0
                row["coverage_queries"] = len(d)
            row["duplicates_kept"] = _duplicates_kept(group, kept)
            row["strata_dropped"] = len(dropped)
            if r == 0:
                row["dropped"] = [
                    {"stratum": strata_names[s], "size": int(strata_full[s]), "exact_share": fraction * strata_full[s]}
                    for s in dropped
                ]
            rows.append(row)
        random_mean = {key: float(np.mean([row[key] for row in rows[1:]])) for key in rows[0] if key != "dropped"}
        report["steps"].append({"fraction": fraction, "size": size, "sampled": rows[0], "random": random_mean})
    return report


def _codes_or_none(series: pl.Series) -> np.ndarray:
    """Dense non-negative codes per duplicate group, -1 where null."""
    codes = series.rank("dense").to_numpy()
    return np.where(series.is_null().to_numpy(), -1, np.nan_to_num(codes, nan=0).astype(np.int64) - 1)


# How many absent strata a step's note names; the rest are counted (the report holds them all).
NAMED_STRATA = 3


def format_fidelity(report: dict[str, Any]) -> str:
    """A text table: one line per metric and step, sampled vs random."""
    metrics = [f"tv_{c}" for c in report["categories"]] + ["tv_joint"]
    if "coverage" in report:
        metrics += ["coverage_mean", "coverage_p95"]
    metrics += ["duplicates_kept", "strata_dropped"]
    lines = [f"Fidelity vs full dataset (n={report['n']}); random = mean over {report['random_seeds']} seeds"]
    if "coverage" in report:
        c = report["coverage"]
        pool = f"seeded pool of {c['query_pool']} images" if c["subsampled"] else "all images"
        lines.append(
            f"coverage: excluded image -> nearest kept, Euclidean in {c['dims']}-d PCA "
            f"(variance kept {c['variance_kept']:.2f}), queries = excluded members of a {pool}"
        )
    lines.append(f"{'metric':<18}" + "".join(f"{'%d%% ' % round(s['fraction'] * 100):>22}" for s in report["steps"]))
    lines.append(f"{'':<18}" + "".join(f"{'sampled':>11}{'random':>11}" for _ in report["steps"]))
    for m in metrics:
        cells = "".join(f"{_fmt(s['sampled'][m]):>11}{_fmt(s['random'][m]):>11}" for s in report["steps"])
        lines.append(f"{m:<18}{cells}")
    for s in report["steps"]:
        dropped = s["sampled"].get("dropped", [])
        expected = [d for d in dropped if d["exact_share"] < 1]
        if expected:  # one line a step: a large dataset has thousands of strata too small for its smaller samples
            sizes = sorted({int(d["size"]) for d in expected})
            sized = f"size {sizes[0]}" if len(sizes) == 1 else f"sizes {sizes[0]}-{sizes[-1]}"
            named = ", ".join(d["stratum"] for d in expected[:NAMED_STRATA])
            more = f" and {len(expected) - NAMED_STRATA} more" if len(expected) > NAMED_STRATA else ""
            what = f"{len(expected)} strata ({sized}) are" if len(expected) > 1 else f"1 stratum ({sized}) is"
            lines.append(f"note: at {round(s['fraction'] * 100)}% {what} absent, the quota rounding to zero: "
                         f"{named}{more}")
        for d in dropped:
            if d["exact_share"] >= 1:
                lines.append(
                    f"note: at {round(s['fraction'] * 100)}% stratum {d['stratum']} (size {d['size']}) is absent: "
                    f"UNEXPECTED: its quota is not zero (exact share {d['exact_share']:.2f})"
                )
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value)}"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
