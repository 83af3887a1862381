"""A nested, deterministic sampling order that keeps the dataset's distribution at every 20% step.

``compute_sampling`` gives every image one ``keep_rank`` (0 = kept first). The sample at fraction f is the prefix
``keep_rank < step_size(f, n)`` (``round(f * n)``, halves up), so the 20% sample is inside the 40% one, and so on.

How the order is built (strategy ``"stratified"``):

* **Joint strata.** A stratum is one combination of the category labels, e.g. ``day|rainy|city|None``; a null
  label is the value ``None`` (``NONE_LABEL``), a first-class value.
* **Quotas.** For each step f of ``STEPS`` the sample size ``round(f * n)`` is shared among strata by largest
  remainder on the exact shares ``f * n_s``: every stratum gets ``floor(f * n_s)`` or ``ceil(f * n_s)``, the
  largest fractional parts get the leftover seats (ties broken by a seeded stratum order). One constraint is added
  so steps stay nested: a stratum never gets fewer than at the previous step (plain largest remainder can, the
  "Alabama paradox", for strata of a few images). A stratum of at least 1/f images therefore always appears at
  step f; a smaller one may get zero (its quota rounds to zero) and ``fidelity_report`` lists it.
* **Diversity inside a stratum.** Near-duplicates go last: in each ``duplicate_group`` the image with the best
  ``quality_score`` (nulls worst, ties by row order) stays in place and the others move behind every non-duplicate
  of their stratum (second-best of each group first). The rest are ordered by approximate farthest-point traversal
  of the embeddings (``curation.sampling.diversity``), or by a seeded shuffle when there are no embeddings.
* **Interleaving.** Between step f_{k-1} and f_k each stratum contributes its next ``q_s(f_k) - q_s(f_{k-1})``
  images, interleaved evenly (item j of d gets key (j + 0.5) / d). So at the prefix for every step each stratum
  holds exactly its quota, and within a stratum the prefix is always the start of its diversity order.

Strategy ``"random"`` is a seeded uniform permutation, for comparison. Same inputs and seed give the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import polars as pl
import pyarrow as pa

from curation.dataset.tags import NONE_LABEL
from curation.sampling.diversity import insertion_radius, reduce_embeddings
from curation.taxonomy import CATEGORIES

STEPS: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 1.0)
STRATUM_SEPARATOR = "|"
STRATEGIES = ("stratified", "random")

SAMPLING_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("keep_rank", pa.int64(), nullable=False),
        pa.field("stratum", pa.string(), nullable=False),
    ]
)
"""sampling.parquet: one row per image.

- ``image_id``: the image.
- ``keep_rank``: 0..n-1, a permutation; the sample at fraction f is ``keep_rank < round(f * n)`` (halves up).
- ``stratum``: the joint label, category values joined by ``|`` in taxonomy order (time|weather|road|location),
  a null label written ``None``.
"""


def _fraction(value: float) -> Fraction:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {value}")
    return Fraction(value).limit_denominator(1_000_000)


def step_size(fraction: float, n: int) -> int:
    """The number of images in the sample at ``fraction``: round(fraction * n), halves rounded up."""
    f = _fraction(fraction)
    return (2 * f.numerator * n + f.denominator) // (2 * f.denominator)


def stratum_labels(frame: pl.DataFrame, categories: Sequence[str] = CATEGORIES) -> pl.Series:
    """The joint stratum of every row: labels joined by ``|``, null written ``None``."""
    missing = [c for c in categories if c not in frame.columns]
    if missing:
        raise ValueError(f"metadata lacks category columns {missing}")
    parts = [pl.col(c).cast(pl.Utf8).fill_null(NONE_LABEL) for c in categories]
    return frame.select(pl.concat_str(parts, separator=STRATUM_SEPARATOR).alias("stratum")).to_series()


def _stratum_order(n_strata: int, seed: int) -> np.ndarray:
    """A seeded priority per stratum (lower first) used to break exact ties."""
    return np.random.default_rng([seed, 1]).permutation(n_strata)


def allocate_quotas(sizes: np.ndarray, steps: Sequence[float] = STEPS, seed: int = 0) -> np.ndarray:
    """Cumulative per-stratum quotas, shape (len(steps), len(sizes)): nested largest-remainder allocation.

    Row k sums to ``step_size(steps[k], n)``; every entry is floor or ceil of ``steps[k] * size``; rows never
    decrease. ``sizes`` are stratum sizes in a fixed (e.g. sorted-by-name) order. With ``STEPS`` nesting and the sum
    are not known to conflict; with unusual custom steps nesting can force the sum over, and then the smallest
    remainders not pinned by nesting go one under their floor.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    n = int(sizes.sum())
    tiebreak = _stratum_order(len(sizes), seed)
    quotas = np.zeros((len(steps), len(sizes)), dtype=np.int64)
    previous = np.zeros(len(sizes), dtype=np.int64)
    for k, value in enumerate(steps):
        f = _fraction(value)
        scaled = f.numerator * sizes
        low, remainder = scaled // f.denominator, scaled % f.denominator
        lower = np.maximum(low, previous)
        seats = step_size(value, n) - int(lower.sum())
        if seats >= 0:
            eligible = np.flatnonzero((lower == low) & (remainder > 0))
            lower[eligible[np.lexsort((tiebreak[eligible], -remainder[eligible]))][:seats]] += 1
        else:  # never seen with STEPS; with odd custom steps, go one under floor where nesting allows
            spare = np.flatnonzero(lower > previous)
            lower[spare[np.lexsort((-tiebreak[spare], remainder[spare]))][:-seats]] -= 1
        quotas[k] = previous = lower
    return quotas


def _duplicate_tier(frame: pl.DataFrame) -> np.ndarray:
    """0 for images to keep, g >= 1 for the g-th extra member of a near-duplicate group (by falling quality)."""
    if "duplicate_group" not in frame.columns:
        return np.zeros(frame.height, dtype=np.int64)
    quality = pl.col("quality_score") if "quality_score" in frame.columns else pl.lit(0.0)
    tier = frame.select(
        pl.when(pl.col("duplicate_group").is_null())
        .then(0)
        .otherwise(
            quality.cast(pl.Float64)
            .fill_null(-np.inf)
            .fill_nan(-np.inf)
            .rank("ordinal", descending=True)
            .over("duplicate_group")
            - 1
        )
        .alias("tier")
    ).to_series()
    return tier.to_numpy().astype(np.int64)


def diversity_positions(
    strata: np.ndarray, tier: np.ndarray, embeddings: np.ndarray | None, seed: int = 0
) -> np.ndarray:
    """Position of every row inside its stratum's diversity order (0 = first)."""
    n = len(strata)
    shuffle = np.random.default_rng([seed, 2]).permutation(n)
    key = np.zeros(n, dtype=np.float64)
    if embeddings is not None and n:
        z, _ = reduce_embeddings(embeddings, seed=seed)
        keep = np.flatnonzero(tier == 0)
        key[keep] = -insertion_radius(z[keep], strata[keep])
    order = np.lexsort((shuffle, key, tier, strata))
    sizes = np.bincount(strata)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n) - starts[strata[order]]
    return position


def interleave(strata: np.ndarray, position: np.ndarray, quotas: np.ndarray, seed: int = 0) -> np.ndarray:
    """Global keep_rank from per-stratum positions so each step's prefix holds exactly its cumulative quotas."""
    per_row = quotas[:, strata]  # (steps, n): cumulative quota of the row's stratum at each step
    block = (position[None, :] >= per_row).sum(axis=0)
    rows = np.arange(len(strata))
    before = np.where(block > 0, per_row[np.maximum(block - 1, 0), rows], 0)
    width = per_row[block, rows] - before
    key = (position - before + 0.5) / width
    tiebreak = _stratum_order(int(quotas.shape[1]), seed)[strata]
    order = np.lexsort((position, tiebreak, key, block))
    rank = np.empty(len(strata), dtype=np.int64)
    rank[order] = rows
    return rank


def _check(frame: pl.DataFrame, embeddings: np.ndarray | None, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if "image_id" not in frame.columns:
        raise ValueError("metadata lacks the image_id column")
    if frame["image_id"].null_count() or frame["image_id"].n_unique() != frame.height:
        raise ValueError("image_id must be non-null and unique")
    if embeddings is not None and (np.ndim(embeddings) != 2 or len(embeddings) != frame.height):
        raise ValueError(f"embeddings must be 2-D with {frame.height} rows, got shape {np.shape(embeddings)}")


def compute_sampling(
    frame: pl.DataFrame,
    embeddings: np.ndarray | None = None,
    *,
    seed: int = 0,
    strategy: str = "stratified",
    categories: Sequence[str] = CATEGORIES,
    steps: Sequence[float] = STEPS,
) -> pl.DataFrame:
    """The sampling order of a dataset, as a frame with ``SAMPLING_SCHEMA``'s columns in the input row order.

    ``frame`` has columns ``image_id`` and one per category (string, null = None), optionally ``duplicate_group``
    (int, null = no group) and ``quality_score`` (float, higher is better). ``embeddings`` is aligned with the rows
    (n x d); None orders each stratum by a seeded shuffle. ``steps`` are the fractions whose samples match the
    dataset's joint distribution exactly up to rounding (1.0 is always added).
    """
    _check(frame, embeddings, strategy)
    stratum = stratum_labels(frame, categories)
    n = frame.height
    if strategy == "random":
        rank = np.random.default_rng([seed, 3]).permutation(n).astype(np.int64)
    else:
        steps = tuple(sorted(set(steps) | {1.0}))
        codes = stratum.rank("dense").to_numpy().astype(np.int64) - 1 if n else np.zeros(0, np.int64)
        quotas = allocate_quotas(np.bincount(codes), steps, seed)
        position = diversity_positions(codes, _duplicate_tier(frame), embeddings, seed)
        rank = interleave(codes, position, quotas, seed)
    return pl.DataFrame(
        {"image_id": frame["image_id"].cast(pl.Utf8), "keep_rank": pl.Series(rank, dtype=pl.Int64), "stratum": stratum}
    )


def sample_ids(sampling: pl.DataFrame, fraction: float) -> pl.Series:
    """The image ids of the sample at ``fraction``, in keep order: keep_rank < round(fraction * n)."""
    size = step_size(fraction, sampling.height)
    return sampling.filter(pl.col("keep_rank") < size).sort("keep_rank")["image_id"]


def sampling_table(sampling: pl.DataFrame) -> pa.Table:
    """The sampling frame as an Arrow table with exactly ``SAMPLING_SCHEMA``, ready for ``parquet_io.write_table``."""
    return sampling.select(SAMPLING_SCHEMA.names).to_arrow().cast(SAMPLING_SCHEMA)
