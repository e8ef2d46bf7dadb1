"""Reading an impression log: its rows, its shape and each row's labels, validated.

One log feeds two commands (``build_ctcvr_table``, ``build_sft_dataset``); both read it through
:func:`impression_rows`, so the file, row and field named by an error are the same in each.

Two shapes (JSONL, CSV or parquet; columns of the first row decide):

* per impression: ``click`` and ``conversion`` in {0, 1};
* aggregated: ``impressions``, ``clicks``, ``conversions`` counts per row, turned into up to three
  weighted (click, conversion) rows (mode ``weight``) or one row per impression (``expand``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from data_prep.common import fail, handle_invalid
from relate_common.records import RecordError, is_missing, read_rows

T = TypeVar("T")
# (raw row, 1-based row number, log shape) -> the caller's parsed row; raises RecordError on a bad row
RowParser = Callable[[dict[str, Any], int, str], T]


def _count(raw: dict[str, Any], name: str, source: str, row: int) -> int:
    """A non-negative integer count (accepts 3, 3.0, "3"); RecordError naming the field otherwise."""
    value = raw.get(name)
    if is_missing(value) or (isinstance(value, str) and not value.strip()):
        raise RecordError(source, row, name, "missing required field")
    if isinstance(value, bool):
        value = int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RecordError(source, row, name, f"expected an integer, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer():
        raise RecordError(source, row, name, f"expected an integer, got {value!r}")
    if number < 0:
        raise RecordError(source, row, name, f"negative count {int(number)}")
    return int(number)


def _flag(raw: dict[str, Any], name: str, source: str, row: int) -> int:
    value = _count(raw, name, source, row)
    if value > 1:
        raise RecordError(source, row, name, f"expected 0 or 1, got {value}")
    return value


def detect_shape(columns: set[str]) -> str:
    """'impression' or 'aggregated' from the label columns present."""
    if {"click", "conversion"} <= columns:
        return "impression"
    if {"impressions", "clicks", "conversions"} <= columns:
        return "aggregated"
    raise ValueError(
        "cannot tell the log shape: need columns click+conversion (one row per impression) "
        "or impressions+clicks+conversions (aggregated counts)"
    )


def labelled_rows(raw: dict[str, Any], shape: str, mode: str, source: str, row: int) -> list[tuple[int, int, float]]:
    """(click, conversion, weight) rows for one input row; validates the label logic."""
    if shape == "impression":
        click, conversion = _flag(raw, "click", source, row), _flag(raw, "conversion", source, row)
        if conversion and not click:
            raise RecordError(source, row, "conversion", "conversion without click")
        return [(click, conversion, 1.0)]
    impressions = _count(raw, "impressions", source, row)
    clicks = _count(raw, "clicks", source, row)
    conversions = _count(raw, "conversions", source, row)
    if impressions == 0:
        raise RecordError(source, row, "impressions", "zero impressions")
    if clicks > impressions:
        raise RecordError(source, row, "clicks", f"clicks ({clicks}) > impressions ({impressions})")
    if conversions > clicks:
        raise RecordError(source, row, "conversions", f"conversions ({conversions}) > clicks ({clicks}): conversion without click")
    groups = [(1, 1, conversions), (1, 0, clicks - conversions), (0, 0, impressions - clicks)]
    if mode == "expand":
        return [(c, v, 1.0) for c, v, n in groups for _ in range(n)]
    return [(c, v, float(n)) for c, v, n in groups if n > 0]


class ImpressionLog:
    """One validating pass over an impression log; ``shape`` and ``rows_read`` once iterated.

    A bad row stops the command (exit 2, the error names file, row and field) or, with
    ``skip_invalid``, lands in ``rejected`` (for ``rejected.jsonl``) and is skipped.
    """

    def __init__(self, path: Path, skip_invalid: bool, rejected: list[dict[str, Any]]):
        self.path, self.source = path, str(path)
        self.skip_invalid, self.rejected = skip_invalid, rejected
        self.shape: str | None = None
        self.rows_read = 0

    def rows(self, parse: RowParser[T]) -> Iterator[tuple[dict[str, Any], T]]:
        """Yield ``(raw row, parse(raw, row_no, shape))`` for each valid row; exit 2 on an
        unreadable file type, an unknown shape or an empty log."""
        try:
            for row_no, raw in tqdm(read_rows(self.path), desc="log rows", unit="row", disable=None, mininterval=1.0):
                self.rows_read += 1
                try:
                    if isinstance(raw, RecordError):
                        raise raw
                    if self.shape is None:
                        self.shape = self._detect_shape(raw)
                    parsed = parse(raw, row_no, self.shape)
                except RecordError as err:
                    handle_invalid(err, self.skip_invalid, self.rejected, raw)
                    continue
                yield raw, parsed
        except RecordError as err:  # unsupported file type
            fail(str(err))
        if self.shape is None:
            fail(f"{self.source}: no rows")

    def _detect_shape(self, raw: dict[str, Any]) -> str:
        """The shape from the first valid row's columns; exit 2 naming the columns found otherwise."""
        try:
            return detect_shape(set(raw))
        except ValueError as e:
            fail(f"{self.source}: {e}; columns found: {', '.join(sorted(raw))}")
