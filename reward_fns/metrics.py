"""The paper's evaluation metrics, computed from the same components as the rewards.

Table 3 (sec. 4.4, per configuration):
  * structural quality = mean over texts of (length + format) / 2          [0, 1]
  * CTCVR (%)          = 100 * mean predicted CTCVR                          (n/a without a scorer)
  * diversity          = mean normalised diversity score (eq. 12)            [0, 1]
  * semantic quality   = mean over texts of the mean of relevance, correctness and risk
                         (risk = blacklist component, and the judge's when it ran)  [0, 1]
Table 1 (sec. 4.2):
  * compliance rate    = share of texts with the compliance flag (eq. 11)   [0, 1]
                         (ours: an empty ad, with no title, description or other text,
                         is never compliant; it has nothing that could pass screening)
  * diversity          = as above
  * delta CTCVR        = (mean CTCVR of the set - mean of the baseline) / mean of the baseline (eq. 10)

Eq. 12 averages r_div. Our r_div is the share of a text's content tokens outside every G_high
occurrence: the eq. 5 indicators of the same statistics, mapped to [0, 1] so that Table 1's 0.75 /
0.82 style numbers have a meaning (1 = nothing templated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(vals)) if vals else None


def structural_quality(values: Mapping[str, float | None]) -> float | None:
    """(length + format) / 2 for one text; None if neither was computed."""
    return _mean([values.get("length"), values.get("format")])


def semantic_quality(values: Mapping[str, float | None]) -> float | None:
    """Mean of relevance, correctness and risk for one text; risk = mean of the risk parts present."""
    risk = _mean([values.get("risk_blacklist"), values.get("risk_judge")])
    return _mean([values.get("relevance"), values.get("correctness"), risk])


def delta_ctcvr(experiment: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Eq. 10 on mean predicted CTCVRs; None when either side is empty or the baseline is 0."""
    e, b = _mean(list(experiment)), _mean(list(baseline))
    if e is None or b is None or b == 0:
        return None
    return (e - b) / b


def table3(
    component_values: Sequence[Mapping[str, float | None]],
    diversity_scores: Sequence[float],
    predicted_ctcvr: Sequence[float] | None = None,
) -> dict[str, float | None]:
    """Table 3 row for one set of texts (see module docstring); None = n/a."""
    return {
        "structural_quality": _mean([structural_quality(v) for v in component_values]),
        "ctcvr_pct": (100.0 * _mean(list(predicted_ctcvr))) if predicted_ctcvr is not None and len(predicted_ctcvr) else None,
        "diversity": _mean(list(diversity_scores)),
        "semantic_quality": _mean([semantic_quality(v) for v in component_values]),
    }


def table1(
    compliant: Sequence[bool],
    diversity_scores: Sequence[float],
    predicted_ctcvr: Sequence[float] | None = None,
    baseline_ctcvr: Sequence[float] | None = None,
) -> dict[str, float | None]:
    """Table 1 row for one set of texts; delta CTCVR needs both CTCVR lists."""
    n = len(compliant)
    return {
        "compliance_rate": (sum(bool(c) for c in compliant) / n) if n else None,
        "diversity": _mean(list(diversity_scores)),
        "delta_ctcvr": (
            delta_ctcvr(predicted_ctcvr, baseline_ctcvr) if predicted_ctcvr is not None and baseline_ctcvr is not None else None
        ),
    }


def _fmt(x: float | None, kind: str) -> str:
    if x is None:
        return "n/a"
    if kind == "pct":
        return f"{100 * x:.2f}%"
    if kind == "signed_pct":
        return f"{100 * x:+.2f}%"
    return f"{x:.3f}"


def format_summary(name: str, t1: Mapping[str, Any], t3: Mapping[str, Any], n: int, by_language: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Plain-text Table 1 and Table 3 in the paper's column order."""
    rows1 = [("Compliance Rate", "compliance_rate", "pct"), ("Diversity", "diversity", "num"), ("Delta CTCVR", "delta_ctcvr", "signed_pct")]
    rows3 = [("Structural Quality", "structural_quality", "num"), ("CTCVR(%)", "ctcvr_pct", "ctcvr_pct"),
             ("Diversity", "diversity", "num"), ("Semantic Quality", "semantic_quality", "num")]
    w = max(14, len(name) + 2)
    lines = [f"Scored {n} texts ({name})", "", "Table 1"]
    lines.append(f"  {'set':<{w}}" + "".join(f"{label:>18}" for label, _, _ in rows1))
    lines.append(f"  {name:<{w}}" + "".join(f"{_fmt(t1.get(k), kind):>18}" for _, k, kind in rows1))
    for lang, sub in (by_language or {}).items():
        lines.append(f"  {'  ' + lang:<{w}}" + "".join(f"{_fmt(sub['table1'].get(k), kind):>18}" for _, k, kind in rows1))
    lines += ["", "Table 3"]
    lines.append(f"  {'set':<{w}}" + "".join(f"{label:>20}" for label, _, _ in rows3))
    lines.append(f"  {name:<{w}}" + "".join(f"{_fmt(t3.get(k), kind):>20}" for _, k, kind in rows3))
    for lang, sub in (by_language or {}).items():
        lines.append(f"  {'  ' + lang:<{w}}" + "".join(f"{_fmt(sub['table3'].get(k), kind):>20}" for _, k, kind in rows3))
    return "\n".join(lines)
