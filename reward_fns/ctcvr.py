"""CTCVR reward: the reward side of the CTCVR scorer (the model itself is ctcvr_model's).

Predicted CTCVR is a tiny probability (around 1e-3 .. 1e-2) whose scale depends on the industry
and the query, so it is normalised per record against the record's reference ad::

    ctcvr_reward = 0.5 + 0.5 * tanh(log(pred / ref) / scale)        range (0, 1)

0.5 at parity, above 0.5 for a lift, symmetric in the log-ratio (a 2x lift and a 2x drop are
equally far from 0.5) and bounded, so one outlier prediction of the learned scorer cannot
dominate a group (the paper's reward is only as good as the scorer; bounding it limits how far
the policy can exploit the scorer's errors).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from reward_fns.config import CTCVRConfig
from reward_fns.types import ComponentScore, Trigger


def log_ratio(pred: np.ndarray | float, ref: np.ndarray | float, eps: float) -> np.ndarray:
    """log(pred / ref) with both clipped to [eps, 1]; any shape (broadcast)."""
    p = np.clip(np.asarray(pred, dtype=np.float64), eps, 1.0)
    r = np.clip(np.asarray(ref, dtype=np.float64), eps, 1.0)
    return np.log(p) - np.log(r)


def ctcvr_reward_values(pred: np.ndarray | float, ref: np.ndarray | float, cfg: CTCVRConfig) -> np.ndarray:
    """Vectorised mapping (N,) -> (N,) in (0, 1); NaN predictions map to 0.5 (no information)."""
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    out = 0.5 + 0.5 * np.tanh(log_ratio(np.nan_to_num(p, nan=1.0), np.nan_to_num(r, nan=1.0), cfg.eps) / cfg.scale)
    return np.where(np.isnan(p) | np.isnan(r), 0.5, out)


class MissingReference(ValueError):
    """A record without a reference ad where the ctcvr component needs one (and no fallback is set)."""


def fallback_reference(cfg: CTCVRConfig, record_id: str | None = None) -> float:
    """The reference pCTCVR of a record that has no reference ad: ``relate.ctcvr.fallback_reference``.

    One rule for every door (the verl reward manager, ``reward_fns.score``, ``relate_eval.evaluate``):
    never an estimate from other rows; without a configured fallback it is an input error.
    """
    if cfg.fallback_reference is None:
        who = f"record '{record_id}'" if record_id is not None else "a record"
        raise MissingReference(
            f"{who} has no reference ad (title + description): the ctcvr reward compares the predicted CTCVR "
            "with the reference ad's; add the reference ad to the record, or set relate.ctcvr.fallback_reference")
    return float(cfg.fallback_reference)


def reference_ad(record: Any) -> tuple[str, str] | None:
    """(title, description) of the record's reference ad, or None when it has none."""
    return (record.title, record.description) if record.title and record.description else None


def reference_or_fallback(ref: float | None, cfg: CTCVRConfig, record_id: str | None = None) -> float:
    """``ref``, or :func:`fallback_reference` when there is none: the one fallback of every caller."""
    return fallback_reference(cfg, record_id) if ref is None else float(ref)


# The one reference rule. Reference pCTCVR of a generated ad: its own prediction when the row IS the
# record's reference ad (e.g. a baseline set of reference ads); else the scorer's prediction of the
# record's reference ad (scored once per record id and cached, so a trainer scores each reference ad
# once per run); else :func:`fallback_reference`. Batch callers use :func:`predict_with_reference`;
# the verl reward manager, one sample at a time, calls the two halves below around its own scorer.
def references_to_score(records: list[Any], is_reference: list[bool], cache: dict[str, float]) -> dict[str, Any]:
    """{record id: record} of the reference ads the rows need scored (not own, not cached, present)."""
    return {rec.id: rec for rec, own in zip(records, is_reference)
            if not own and rec.id not in cache and reference_ad(rec)}


def reference_of(record: Any, own_pred: float, is_reference: bool, cache: dict[str, float], cfg: CTCVRConfig) -> float:
    """The reference pCTCVR of one row once :func:`references_to_score`'s ads are in ``cache``."""
    if is_reference:
        return float(own_pred)
    return reference_or_fallback(cache.get(record.id), cfg, record.id)


def predict_with_reference(scorer: Any, records: list[Any], parsed: list[Any], is_reference: list[bool],
                           cfg: CTCVRConfig, cache: dict[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(predicted pCTCVR (N,), reference pCTCVR (N,)) of N generated ads (``parsed``: their
    ``relate_common.ad_format.ParsedAd``, parsed once by the caller) under the reference rule above;
    ``cache`` (record id -> reference pCTCVR) is filled when one is given.
    """
    _, pred = scorer.score([scorer_item(rec, p.title, p.description) for rec, p in zip(records, parsed)])
    pred = np.asarray(pred, dtype=np.float64)
    by_id = {} if cache is None else cache
    todo = references_to_score(records, is_reference, by_id)
    if todo:
        _, ref_pred = scorer.score([scorer_item(r, *reference_ad(r)) for r in todo.values()])
        by_id.update({rid: float(p) for rid, p in zip(todo, ref_pred)})
    ref = [reference_of(rec, pred[i], own, by_id, cfg) for i, (rec, own) in enumerate(zip(records, is_reference))]
    return pred, np.asarray(ref, dtype=np.float64)


def ctcvr_reward(pred: float, ref: float | None, cfg: CTCVRConfig) -> ComponentScore:
    """CTCVR component for one response (see module docstring); ``ref`` None: :func:`reference_or_fallback`."""
    ref = reference_or_fallback(ref, cfg)
    value = float(ctcvr_reward_values(pred, ref, cfg))
    lr = float(log_ratio(pred, ref, cfg.eps))
    triggers = [Trigger("below_reference", f"pred {pred:.3g} < ref {ref:.3g}")] if lr < 0 else []
    return ComponentScore("ctcvr", round(value, 6), triggers, {"pred": float(pred), "ref": float(ref), "log_ratio": round(lr, 6)})


def scorer_item(record: Any, title: str, description: str) -> dict[str, Any]:
    """What ``ctcvr_model``'s scorer reads for one (query, ad) pair; ``record`` is an AdRecord.

    One definition for every caller (RL reward, ``reward_fns.score``, ``relate_eval.evaluate``),
    so the scorer sees the same fields, industry included, at training-time and at reward-time.
    """
    return {"query": record.query, "bidword": record.bidword, "selling_points": record.selling_points,
            "industry": record.industry, "title": title, "description": description}


def load_ctcvr_scorer(model_dir: str) -> Any | None:
    """ctcvr_model's ``CTCVRScorer.load(model_dir)`` when that package provides it, else None.

    Looked up by name at call time so that this package does not depend on the model being
    written yet; the caller reports CTCVR as n/a when None comes back.
    """
    for module in ("ctcvr_model", "ctcvr_model.scorer"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        cls = getattr(mod, "CTCVRScorer", None)
        if cls is not None and hasattr(cls, "load"):
            return cls.load(model_dir)
    return None
