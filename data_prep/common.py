"""Helpers shared by the data-preparation commands: stable splits, error reporting, atomic parquet writes (JSON: relate_common.jsonio)."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from relate_common.jsonio import atomic_target
from relate_common.records import RecordError

EXIT_INVALID_INPUT = 2


def stable_unit_interval(key: str, seed: int) -> float:
    """A deterministic pseudo-uniform number in [0, 1) for ``key`` (same on every machine)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, seed: int, fractions: dict[str, float]) -> str:
    """Pick a split name for ``key``; ``fractions`` maps held-out split names to their share,
    and the rest goes to 'train'."""
    u = stable_unit_interval(key, seed)
    edge = 0.0
    for name, share in fractions.items():
        edge += share
        if u < edge:
            return name
    return "train"


def fail(message: str) -> "NoReturn":  # noqa: F821
    """Print ``message`` to stderr and exit with the invalid-input code."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_INVALID_INPUT)


def handle_invalid(err: RecordError, skip_invalid: bool, rejected: list[dict[str, Any]], raw: Any = None) -> None:
    """Stop on ``err`` (exit 2), or record it for ``rejected.jsonl`` when skipping is allowed."""
    if not skip_invalid:
        fail(f"{err}\n(fix the row, or pass --skip-invalid to write rejected rows to rejected.jsonl and go on)")
    entry = err.to_json()
    if raw is not None and not isinstance(raw, RecordError):
        entry["row_data"] = raw
    rejected.append(entry)


def write_parquet(rows: list[dict[str, Any]], path: Path, schema: pa.Schema | None = None) -> None:
    """Write ``rows`` to ``path`` atomically: a reader never sees a half-written file."""
    path, tmp = atomic_target(path)
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
