"""Tables as training data: aggregation of identical impressions, encoding, batched prediction.

The simulated and real logs repeat the same (query, ad) pair many times. Summing identical rows
into one weighted row with fractional labels changes no loss value or metric (see losses.py and
metrics.py) but divides the work per epoch by the repeat factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ctcvr_model.encoders import TextEncoder
from ctcvr_model.features import EncodedRows, FeatureConfig, encode_items, gather_batch
from ctcvr_model.model import CTCVRNet
from ctcvr_model.schema import ITEM_FIELDS, OPTIONAL_ITEM_FIELDS, TRUTH_COLUMNS

_SP_SEP = "\x1f"  # joins selling points into one hashable key; never appears in real text


def aggregate_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Merge rows with identical item fields (and industry, when present) into one row per (query, ad).

    Output columns: the item fields, ``weight`` (summed), ``click`` and ``conversion`` (weighted
    means, i.e. fractions of the group's impressions), and each truth column present (weighted
    mean; the truth varies within a group only through the simulator's fatigue term).
    """
    work = df.copy()
    work["_sp_key"] = [_SP_SEP.join(p) for p in work["selling_points"]]
    keys = ["query", "bidword", "_sp_key", "title", "description"]
    if "industry" in work.columns:  # a model feature: rows of two industries must not merge
        work["industry"] = work["industry"].fillna("").astype(str)
        keys.append("industry")
    work["_wc"] = work["weight"] * work["click"]
    work["_wv"] = work["weight"] * work["conversion"]
    sums = {"weight": "sum", "_wc": "sum", "_wv": "sum"}
    truth = [c for c in TRUTH_COLUMNS if c in work.columns]
    for c in truth:
        work["_t_" + c] = work["weight"] * work[c]
        sums["_t_" + c] = "sum"
    first = {"selling_points": "first"}
    for c in ("record_id", "language", "split"):
        if c in work.columns:
            first[c] = "first"
    g = work.groupby(keys, sort=False, dropna=False).agg({**sums, **first}).reset_index()
    g["click"] = g["_wc"] / g["weight"]
    g["conversion"] = g["_wv"] / g["weight"]
    for c in truth:
        g[c] = g["_t_" + c] / g["weight"]
    drop = ["_sp_key", "_wc", "_wv"] + ["_t_" + c for c in truth]
    return g.drop(columns=drop)


def table_items(df: pd.DataFrame, industry: bool = True) -> list[dict[str, Any]]:
    """The scoring items (query, bidword, selling_points, title, description, and industry when the
    table has that column and ``industry`` is true) of every row."""
    fields = ITEM_FIELDS + (OPTIONAL_ITEM_FIELDS if industry else ())
    fields = tuple(f for f in fields if f in df.columns)
    cols = {c: df[c].tolist() for c in fields}
    return [dict(zip(fields, vals)) for vals in zip(*(cols[c] for c in fields))]


@dataclass
class LabelledRows:
    """Encoded rows with their labels: click, ctcvr (click AND conversion), weight, each (N,) float32."""

    rows: EncodedRows
    click: np.ndarray
    ctcvr: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def encode_table(df: pd.DataFrame, encoder: TextEncoder, cfg: FeatureConfig, batch_size: int = 64,
                 hide_industry: bool = False) -> LabelledRows:
    """Encode a validated table (see schema.validate_table) into LabelledRows.

    hide_industry: encode every row as if its item carried no industry (the unknown bucket).
    """
    rows = encode_items(table_items(df, industry=not hide_industry), encoder, cfg, batch_size=batch_size)
    return LabelledRows(
        rows=rows,
        click=df["click"].to_numpy(np.float32),
        ctcvr=df["conversion"].to_numpy(np.float32),
        weight=df["weight"].to_numpy(np.float32),
    )


@torch.no_grad()
def predict_rows(
    net: CTCVRNet, rows: EncodedRows, model: str = "esmm", batch_size: int = 4096, device: str | torch.device = "cpu"
) -> dict[str, np.ndarray]:
    """p_ctr, p_cvr, p_ctcvr (each (N,) float64) of sub-model ``model`` for every row."""
    was_training = net.training
    net.eval()
    emb = torch.from_numpy(rows.emb).to(device)
    out: dict[str, list[np.ndarray]] = {"p_ctr": [], "p_cvr": [], "p_ctcvr": []}
    for start in range(0, len(rows), batch_size):
        batch = np.arange(start, min(start + batch_size, len(rows)))
        x_slots, extra = gather_batch(rows, emb, batch)
        pred = net(x_slots, extra, model=model)
        for k in out:
            out[k].append(pred[k].double().cpu().numpy())
    net.train(was_training)
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in out.items()}
