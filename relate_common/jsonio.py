"""JSON I/O shared by every command: JSON lines read with their line numbers, values made
JSON-safe, files written atomically.

Atomic = written to a temporary file in the same folder and renamed over the target, so a reader
(or a rerun after Ctrl-C) never sees a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def json_lines(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` for each non-blank line (1-based, blank lines counted).

    A malformed line gives its ``json.JSONDecodeError`` as the value, so each reader words the
    error in its own schema's terms and decides whether to stop or skip.
    """
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as e:
            yield line_no, e


def jsonable(x: Any) -> Any:
    """``x`` with numpy values as Python ones, paths as strings, keys as strings and NaN/inf as
    None (JSON has no NaN; ``json.dumps`` would write an invalid ``NaN``)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def atomic_target(path: str | Path) -> tuple[Path, Path]:
    """(path, a fresh temporary file beside it); the caller writes the temporary and renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return path, Path(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    path, tmp = atomic_target(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write JSON lines atomically (UTF-8, non-ASCII kept readable)."""
    path, tmp = atomic_target(path)
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(obj: Any, path: str | Path) -> None:
    """Write one JSON document atomically (indented, UTF-8)."""
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")
