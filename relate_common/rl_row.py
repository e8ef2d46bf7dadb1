"""The verl RL row: the one owner of ``reward_model.ground_truth`` and the one RL-parquet reader.

``data_prep/build_dataset.py`` writes the rows (what verl 0.9.1's ``RLHFDataset`` reads:
``prompt`` chat messages and ``reward_model = {"style", "ground_truth"}``); the reward manager,
the RELATE trainer, ``relate_eval.generate``, ``reward_fns.generated`` and ``testbed`` read them
back through the functions below. Every error is a ``RecordError`` naming the file, the row
(1-based) and the field (``reward_model.ground_truth.<name>`` for a bad record field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relate_common.records import AdRecord, RecordError, parse_record

# The record fields the rewards read, always all present (empty string when absent) so that every
# parquet row has the same struct schema.
GROUND_TRUTH_FIELDS = ("id", "query", "bidword", "selling_points", "language", "landing_page", "industry", "title",
                       "description")
GROUND_TRUTH_KEY = "reward_model.ground_truth"
BATCH_SOURCE = "verl batch"  # the source named by errors in rows handed over by verl (row = sample index)
RL_COLUMNS = ("prompt", "reward_model")  # what the readers below need of an RL parquet


@dataclass(frozen=True)
class RLRow:
    """One RL-parquet row as the readers use it: the chat prompt and the validated record."""

    messages: list[dict[str, str]]  # [{"role", "content"}, ...], at least one
    record: AdRecord


def ground_truth(record: AdRecord) -> dict[str, Any]:
    """``reward_model.ground_truth`` of ``record``: the GROUND_TRUTH_FIELDS, every one present."""
    return {name: getattr(record, name) for name in GROUND_TRUTH_FIELDS}


def reward_model(record: AdRecord, style: str) -> dict[str, Any]:
    """The ``reward_model`` cell of an RL row (``style`` is verl's, e.g. "rule")."""
    return {"style": style, "ground_truth": ground_truth(record)}


def ground_truth_of(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ground-truth mapping of an RL row (a dict copy), None when ``row`` is not an RL row."""
    cell = row.get("reward_model")
    truth = cell.get("ground_truth") if hasattr(cell, "get") else None
    return dict(truth) if hasattr(truth, "keys") else None


def ground_truths(reward_model_column: Iterable[Any]) -> list[dict[str, Any]]:
    """(B,) ground-truth dicts from a batch's ``reward_model`` column (verl's non-tensor field)."""
    return [dict(cell["ground_truth"]) for cell in reward_model_column]


def parse_ground_truth(truth: Any, source: str = BATCH_SOURCE, row: int = 0) -> AdRecord:
    """The ``AdRecord`` stored in ``reward_model.ground_truth`` (an ``AdRecord`` passes through).

    numpy arrays (how parquet and verl hand back list cells) become lists; a bad field raises
    ``RecordError(source, row, "reward_model.ground_truth.<field>")``.
    """
    if isinstance(truth, AdRecord):
        return truth
    if not hasattr(truth, "keys"):
        raise RecordError(source, row, GROUND_TRUTH_KEY,
                          f"expected the record mapping written by data_prep/build_dataset.py, got {type(truth).__name__}")
    raw = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in dict(truth).items()}
    try:
        return parse_record(raw, source=source, row=row)
    except RecordError as e:
        field = f"{GROUND_TRUTH_KEY}.{e.field}" if e.field else GROUND_TRUTH_KEY
        raise RecordError(source, row, field, e.reason) from None


def parse_messages(value: Any, source: str, row: int) -> list[dict[str, str]]:
    """The chat messages of one RL row's ``prompt`` cell, validated."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise RecordError(source, row, "prompt", f"expected a list of chat messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not hasattr(m, "get") or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError(source, row, "prompt", f"message {i} needs string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise RecordError(source, row, "prompt", "no messages")
    return out


def read_rl_parquet(path: str | Path, limit: int | None = None) -> list[RLRow]:
    """The rows of a verl RL parquet (the first ``limit`` when given), in file order, validated."""
    import pyarrow.parquet as pq

    source = str(path)
    if not Path(path).is_file():
        raise RecordError(source, 0, None, "file not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # not a parquet file
        raise RecordError(source, 0, None, f"cannot read parquet: {type(e).__name__}: {e}") from e
    for column in RL_COLUMNS:
        if column not in table.column_names:
            raise RecordError(source, 0, column, "missing column (expected the RL parquet of data_prep/build_dataset.py)")
    if limit is not None:
        table = table.slice(0, max(0, limit))
    out = []
    for row_no, row in enumerate(table.select(list(RL_COLUMNS)).to_pylist(), start=1):
        messages = parse_messages(row["prompt"], source, row_no)
        truth = ground_truth_of(row)
        if truth is None:
            raise RecordError(source, row_no, GROUND_TRUTH_KEY, "missing or not a record mapping")
        out.append(RLRow(messages, parse_ground_truth(truth, source, row_no)))
    return out
