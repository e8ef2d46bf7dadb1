"""95% bootstrap intervals for the evaluation metrics, resampling RECORDS (prompts), not texts.

The unit is the record because the texts of one record (its G samples) are not independent: a
policy that fails on a prompt fails on all its samples. One resample draws R records with
replacement from the R records of a set; a metric that is a mean over texts becomes, on the
resample, ``sum over drawn records of their text sums / sum of their text counts``. Each resample
is a row of a (B, R) matrix of draw counts (:func:`bootstrap_counts`), so every metric of a set is
two matrix-vector products, and paired statistics (eq. 10 lifts over the records two sets share)
reuse the same draws for both sides.

Intervals are percentile intervals (the 2.5th and 97.5th percentile of the B resampled
statistics). What is held fixed: per-text values are computed once on the full set, so the
diversity score keeps the full set's high-frequency n-grams (G_high), the resample does not
recount them. The paper gives no intervals; the method and B = 1000 are ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A point estimate on the full data and its bootstrap interval (None: undefined / not resampled)."""

    value: float | None
    lo: float | None = None
    hi: float | None = None

    def to_json(self) -> dict[str, float | list[float] | None]:
        return {"value": self.value, "ci95": None if self.lo is None else [self.lo, self.hi]}


def bootstrap_counts(n_records: int, resamples: int, seed: int) -> np.ndarray:
    """(B, R) draw counts: row b says how often each of R records is drawn in resample b (rows sum to R)."""
    if resamples <= 0 or n_records <= 0:
        return np.zeros((0, max(n_records, 0)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_records, np.full(n_records, 1.0 / n_records), size=resamples)


def record_sums(values: np.ndarray, record_index: np.ndarray, n_records: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum (R,), count (R,)) of the finite per-text ``values`` (N,) of each record; NaN = not computed."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    sums = np.bincount(record_index[ok], weights=values[ok], minlength=n_records)
    counts = np.bincount(record_index[ok], minlength=n_records).astype(np.float64)
    return sums, counts


def percentile_interval(stats: np.ndarray, confidence: float = 0.95) -> tuple[float | None, float | None]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return None, None
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return float(lo), float(hi)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def mean_interval(values: np.ndarray, record_index: np.ndarray, counts: np.ndarray,
                  confidence: float = 0.95) -> Interval:
    """Mean over texts of ``values`` (N,) with a record-level bootstrap interval.

    ``record_index`` (N,) maps each text to its record 0..R-1; ``counts`` is (B, R) from
    :func:`bootstrap_counts`. Non-finite values are left out of the mean (a metric not computed).
    """
    sums, sizes = record_sums(values, np.asarray(record_index), counts.shape[1])
    if sizes.sum() == 0:
        return Interval(None)
    value = float(sums.sum() / sizes.sum())
    if counts.shape[0] == 0:
        return Interval(value)
    return Interval(value, *percentile_interval(safe_ratio(counts @ sums, counts @ sizes), confidence))


def _lift(experiment: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Eq. 10, (mean_e - mean_b) / mean_b, on (..., R) sums of per-record means."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(baseline != 0, (experiment - baseline) / np.where(baseline != 0, baseline, 1), np.nan)


def _paired(statistic, arrays: tuple[np.ndarray, ...], counts: np.ndarray, confidence: float) -> Interval:
    """``statistic`` of sums of paired per-record arrays (R,) each, on the full data and on each resample."""
    arrays = tuple(np.asarray(a, dtype=np.float64) for a in arrays)
    if arrays[0].size == 0:
        return Interval(None)
    value = float(statistic(*(np.array(a.sum()) for a in arrays)))
    if not np.isfinite(value):
        return Interval(None)
    if counts.shape[0] == 0:
        return Interval(value)
    return Interval(value, *percentile_interval(statistic(*(counts @ a for a in arrays)), confidence))


def lift_interval(experiment: np.ndarray, baseline: np.ndarray, counts: np.ndarray,
                  confidence: float = 0.95) -> Interval:
    """Eq. 10 lift of paired per-record means (R,) and (R,), both sides resampled with the same draws."""
    return _paired(_lift, (experiment, baseline), counts, confidence)


def lift_gap_interval(pred_e: np.ndarray, pred_b: np.ndarray, sim_e: np.ndarray, sim_b: np.ndarray,
                      counts: np.ndarray, confidence: float = 0.95) -> Interval:
    """Predicted lift minus simulated lift (each eq. 10 on paired per-record means (R,)), same draws."""
    return _paired(lambda pe, pb, se, sb: _lift(pe, pb) - _lift(se, sb), (pred_e, pred_b, sim_e, sim_b),
                   counts, confidence)
