"""The ad-record schema and a validating reader for JSONL, CSV and parquet files.

Every error names the file, the row (1-based data row: the line for JSONL, the data row after
the header for CSV, the row for parquet) and the field, so a user can fix their data.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relate_common.jsonio import json_lines
from relate_common.lang import SUPPORTED_LANGUAGES, detect_language, normalize_language

REQUIRED_FIELDS = ("id", "query", "bidword", "selling_points")
OPTIONAL_TEXT_FIELDS = ("landing_page", "industry", "title", "description")
KNOWN_FIELDS = REQUIRED_FIELDS + OPTIONAL_TEXT_FIELDS + ("language",)
# Separator for selling points given as one string (CSV cells, flat tables).
DEFAULT_SELLING_POINT_SEPARATOR = "|"
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class RecordError(ValueError):
    """A row that does not fit the schema; the message names file, row and field."""

    def __init__(self, source: str, row: int, field_name: str | None, reason: str):
        self.source, self.row, self.field, self.reason = source, row, field_name, reason
        where = f"{source}: row {row}" + (f", field '{field_name}'" if field_name else "")
        super().__init__(f"{where}: {reason}")

    def to_json(self) -> dict[str, Any]:
        return {"file": self.source, "row": self.row, "field": self.field, "reason": self.reason}


@dataclass
class AdRecord:
    """One advertiser record: what the policy is prompted with and the rewards check against."""

    id: str
    query: str
    bidword: str
    selling_points: list[str]
    language: str
    landing_page: str = ""
    industry: str = ""
    title: str = ""  # reference ad title (optional)
    description: str = ""  # reference ad description (optional)
    extra: dict[str, Any] = field(default_factory=dict)  # any other input column

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_missing(value: Any) -> bool:
    """None or NaN (how pandas and parquet spell an absent cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | RecordError]]:
    """Yield ``(row_number, raw_row)`` from a JSONL, CSV or parquet file.

    A line that is not a JSON object is yielded as a ``RecordError`` in place of the row, so a
    caller can stop or skip it like any other invalid row.
    """
    path = Path(path)
    source = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise RecordError(source, 0, None, f"unsupported file type '{suffix}' (use one of {SUPPORTED_SUFFIXES})")
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for line_no, obj in json_lines(f):
                if isinstance(obj, json.JSONDecodeError):
                    yield line_no, RecordError(source, line_no, None, f"malformed JSON line ({obj.msg} at column {obj.colno})")
                elif not isinstance(obj, dict):
                    yield line_no, RecordError(source, line_no, None, f"expected a JSON object, got {type(obj).__name__}")
                else:
                    yield line_no, obj
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row_no, row in enumerate(reader, start=1):
                if None in row:  # more cells than header columns
                    yield row_no, RecordError(source, row_no, None, f"{len(row[None])} more cell(s) than header columns")
                    continue
                yield row_no, {k: v for k, v in row.items() if k is not None}
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for row_no, row in enumerate(table.to_pylist(), start=1):
            yield row_no, row


def text_field(raw: dict[str, Any], name: str, source: str, row: int, required: bool) -> str:
    """The stripped string in ``raw[name]``; '' when optional and absent; RecordError otherwise."""
    value = raw.get(name)
    if is_missing(value):
        if required:
            raise RecordError(source, row, name, "missing required field")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordError(source, row, name, f"expected a string, got {type(value).__name__}")
    text = str(value).strip()
    if required and not text:
        raise RecordError(source, row, name, "empty value")
    return text


def selling_points_field(raw: dict[str, Any], source: str, row: int, separator: str) -> list[str]:
    """Selling points as a list of non-empty strings, from a list or a separated string."""
    value = raw.get("selling_points")
    if is_missing(value):
        raise RecordError(source, row, "selling_points", "missing required field")
    if isinstance(value, str):
        items = value.split(separator)
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        items = list(value)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise RecordError(source, row, "selling_points", f"item {i} is {type(item).__name__}, expected a string")
    else:
        raise RecordError(
            source, row, "selling_points",
            f"expected a list of strings or a '{separator}'-separated string, got {type(value).__name__}",
        )
    points = [p.strip() for p in items]
    if not any(points):
        raise RecordError(source, row, "selling_points", "no non-empty selling point")
    for i, point in enumerate(points):
        if not point:
            raise RecordError(source, row, "selling_points", f"item {i} is an empty selling point")
    return points


def parse_record(
    raw: dict[str, Any],
    *,
    source: str = "<input>",
    row: int = 0,
    selling_point_separator: str = DEFAULT_SELLING_POINT_SEPARATOR,
) -> AdRecord:
    """Validate one raw row into an ``AdRecord``; raise ``RecordError`` naming the field."""
    rid = raw.get("id")
    if isinstance(rid, float) and not math.isnan(rid) and rid.is_integer():
        rid = int(rid)  # parquet/pandas turn integer ids with gaps into floats
    raw = {**raw, "id": rid}
    values = {name: text_field(raw, name, source, row, required=True) for name in ("id", "query", "bidword")}
    selling_points = selling_points_field(raw, source, row, selling_point_separator)
    optional = {name: text_field(raw, name, source, row, required=False) for name in OPTIONAL_TEXT_FIELDS}
    lang_raw = text_field(raw, "language", source, row, required=False)
    if lang_raw:
        language = normalize_language(lang_raw)
        if language is None:
            raise RecordError(source, row, "language", f"unknown language '{lang_raw}' (supported: {', '.join(SUPPORTED_LANGUAGES)})")
    else:
        language = detect_language(" ".join([values["query"], values["bidword"], *selling_points]))
    extra = {k: v for k, v in raw.items() if k not in KNOWN_FIELDS}
    return AdRecord(selling_points=selling_points, language=language, extra=extra, **values, **optional)


def load_records(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    selling_point_separator: str = DEFAULT_SELLING_POINT_SEPARATOR,
) -> tuple[list[AdRecord], list[RecordError]]:
    """Read and validate every row; raise on the first bad row unless ``skip_invalid``.

    Returns the valid records in file order and the errors of the rejected rows.
    """
    records: list[AdRecord] = []
    rejected: list[RecordError] = []
    for row_no, raw in read_rows(path):
        try:
            if isinstance(raw, RecordError):
                raise raw
            records.append(parse_record(raw, source=str(path), row=row_no, selling_point_separator=selling_point_separator))
        except RecordError as err:
            if not skip_invalid:
                raise
            rejected.append(err)
    return records, rejected
