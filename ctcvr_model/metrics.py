"""Weighted ranking and calibration metrics for (possibly aggregated) impression rows.

A row i with label y_i in [0, 1] and weight w_i stands for w_i * y_i positives and w_i * (1 - y_i)
negatives sharing one score. Every metric here expands rows that way, so a table of aggregated rows
gives exactly the figures of the impression-level table it summarises (ties count one half in AUC).
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def _expand(labels: np.ndarray, weights: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each row into a positive and a negative part: returns (y (2M,), w (2M,), s (2M,)), zero weights dropped."""
    labels = np.asarray(labels, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    y = np.concatenate([np.ones_like(labels), np.zeros_like(labels)])
    w = np.concatenate([weights * labels, weights * (1.0 - labels)])
    s = np.concatenate([scores, scores])
    keep = w > 0
    return y[keep], w[keep], s[keep]


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC of ``scores`` (N,) for soft ``labels`` (N,) with row ``weights`` (N,); NaN if one class is absent."""
    weights = np.ones_like(np.asarray(labels, dtype=np.float64)) if weights is None else weights
    y, w, s = _expand(labels, weights, scores)
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s, sample_weight=w))


def weighted_logloss(labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None, eps: float = 1e-7) -> float:
    """Weighted mean binary cross-entropy (nats) of ``probs`` (N,) against soft ``labels`` (N,)."""
    labels = np.asarray(labels, dtype=np.float64)
    weights = np.ones_like(labels) if weights is None else np.asarray(weights, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    total = weights.sum()
    if total <= 0:
        return float("nan")
    return float(-(weights * (labels * np.log(p) + (1 - labels) * np.log1p(-p))).sum() / total)


def reliability_bins(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None, n_bins: int = 15
) -> dict[str, list[float]]:
    """Equal-mass bins of predicted probability: mean prediction, observed rate and weight per bin.

    Equal-mass (quantile) bins rather than equal-width: CTCVR predictions sit around 1e-3, where
    equal-width bins over [0, 1] would put every row into the first bin.
    Returns {"pred": [...], "observed": [...], "weight": [...]} (lists of length <= n_bins).
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    weights = np.ones_like(labels) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(probs, kind="stable")
    p, y, w = probs[order], labels[order], weights[order]
    cum = np.cumsum(w)
    total = cum[-1] if cum.size else 0.0
    out: dict[str, list[float]] = {"pred": [], "observed": [], "weight": []}
    if total <= 0:
        return out
    # Bin b holds the rows whose cumulative weight falls in (b/n, (b+1)/n] of the total.
    edges = np.searchsorted(cum, total * np.arange(1, n_bins) / n_bins, side="left")
    for part in np.split(np.arange(p.size), np.unique(edges)):
        if part.size == 0:
            continue
        wb = w[part].sum()
        if wb <= 0:
            continue
        out["pred"].append(float((w[part] * p[part]).sum() / wb))
        out["observed"].append(float((w[part] * y[part]).sum() / wb))
        out["weight"].append(float(wb))
    return out


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, weights: np.ndarray | None = None, n_bins: int = 15
) -> float:
    """Weighted mean |observed rate - mean prediction| over equal-mass bins (see reliability_bins)."""
    bins = reliability_bins(labels, probs, weights, n_bins)
    total = sum(bins["weight"])
    if total <= 0:
        return float("nan")
    return float(sum(w * abs(o - p) for p, o, w in zip(bins["pred"], bins["observed"], bins["weight"])) / total)


def finite_or_none(x: float) -> float | None:
    """JSON has no NaN: NaN/inf become None."""
    return None if x is None or not math.isfinite(x) else float(x)
