"""ESMM CTR/CTCVR model over frozen sentence embeddings: train, evaluate, save/load, score.

Modules (one job each): device (the default torch device), encoders (frozen text encoders + disk
cache), schema (table schema and errors), features (slot texts -> feature vectors), lexical
(term-overlap and length features), model (ESMM and baselines), losses, metrics, data
(aggregation, encoding, batched prediction), checkpoint (model directory I/O), scorer (batch and
asyncio scoring API), cli (what the commands share), and the commands train, evaluate, score.

The names below are imported lazily, so ``import ctcvr_model.encoders`` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TextEncoder": "ctcvr_model.encoders",
    "load_encoder": "ctcvr_model.encoders",
    "CachedEncoder": "ctcvr_model.encoders",
    "DEFAULT_ENCODER": "ctcvr_model.encoders",
    "CTCVRScorer": "ctcvr_model.scorer",
    "AsyncCTCVRScorer": "ctcvr_model.scorer",
    "CTCVRError": "ctcvr_model.schema",
    "ModelDirError": "ctcvr_model.schema",
    "ItemError": "ctcvr_model.schema",
    "TableError": "ctcvr_model.schema",
    "ITEM_FIELDS": "ctcvr_model.schema",
    "OPTIONAL_ITEM_FIELDS": "ctcvr_model.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ctcvr_model' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
