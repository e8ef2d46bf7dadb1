"""Read a file of generated ads: the one reader behind ``reward_fns.score`` and ``relate_eval.evaluate``.

A row (JSONL, CSV or parquet) carries the record fields (id, query, bidword, selling_points,
language, industry, ...) and the ad, either as ``response`` (raw model text; ``title`` /
``description`` are then the record's reference ad) or as ``title`` + ``description`` (rendered
with ``relate_common.ad_format.render_ad``; such a row IS its record's reference ad, e.g. the
reference ads used as a baseline set). Optional ``group_id`` (default: the record id).

Empty output is model output, not bad input: a ``response`` that is empty, whitespace or null, and
a ``title`` / ``description`` that is empty, whitespace or null, are kept and scored (the format
check fails, the reward is the lowest). Only an ABSENT ad field is an input error: a row with
neither a ``response`` key nor both ``title`` and ``description`` keys.

With a records index (``load_records_index``) a row may carry only ``id`` and its ad: every
record field the row lacks (or leaves empty) is filled from the record with that id; fields the
row holds win. The ad itself is never filled in: an empty ``title`` / ``description`` of a row
without ``response`` stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relate_common.ad_format import render_ad
from relate_common.records import AdRecord, RecordError, is_missing, parse_record, read_rows
from relate_common.rl_row import ground_truth_of

AD_FIELDS = ("title", "description")


@dataclass
class GeneratedAds:
    """The valid rows of one generated-ads file, in file order."""

    path: str
    records: list[AdRecord]
    responses: list[str]  # the ad as model text (rendered from title + description where given so)
    groups: list[str]  # group id of each row (default: the record id)
    raws: list[dict[str, Any]]  # the rows as read
    is_reference: list[bool]  # True: the row gave title + description, it IS the record's reference ad
    rejected: list[RecordError] = field(default_factory=list)  # with skip_invalid only

    def __len__(self) -> int:
        return len(self.records)


def load_records_index(path: str) -> dict[str, dict[str, Any]]:
    """{record id: raw record fields} from a records file or the RL parquet of ``build_dataset``.

    Every row is validated with ``parse_record``; a duplicate id or an empty file is a RecordError.
    """
    index: dict[str, dict[str, Any]] = {}
    for row_no, raw in read_rows(path):
        if isinstance(raw, RecordError):
            raise raw
        fields = ground_truth_of(raw) or raw  # an RL-parquet row: its ground truth
        rec = parse_record(fields, source=str(path), row=row_no)
        if rec.id in index:
            raise RecordError(str(path), row_no, "id", f"duplicate record id '{rec.id}'")
        index[rec.id] = fields
    if not index:
        raise RecordError(str(path), 0, None, "no records")
    return index


def _blank(value: Any) -> bool:
    return is_missing(value) or (isinstance(value, str) and not value.strip())


def join_record(raw: dict[str, Any], index: dict[str, dict[str, Any]] | None, source: str, row: int) -> dict[str, Any]:
    """``raw`` with the record fields it lacks filled from ``index`` (see the module docstring)."""
    if index is None:
        return raw
    rid = raw.get("id")
    if _blank(rid):
        raise RecordError(source, row, "id", "missing: rows are joined to the records file by id")
    if isinstance(rid, float) and rid.is_integer():
        rid = int(rid)
    key = str(rid).strip()
    if key not in index:
        raise RecordError(source, row, "id", f"record '{key}' is not in the records file")
    ad_keys = set() if "response" in raw else set(AD_FIELDS)  # the ad, kept as written even when empty
    present = {k: v for k, v in raw.items() if k in ad_keys or not _blank(v)}
    return {**index[key], **present}


def parse_generated_row(raw: dict[str, Any], index: dict[str, dict[str, Any]] | None, source: str,
                        row: int) -> tuple[AdRecord, str, str, bool]:
    """(record, response, group id, is_reference) of one row; RecordError names the row and field."""
    if "response" in raw:
        response = raw["response"]
        if is_missing(response):
            response = ""  # a null response is an empty output, scored
        if not isinstance(response, str):
            raise RecordError(source, row, "response", f"expected a string, got {type(response).__name__}")
    else:
        absent = [name for name in AD_FIELDS if name not in raw]
        if absent:
            raise RecordError(source, row, absent[0], "absent: a row needs 'response' or 'title' + 'description'")
        response = None
    merged = join_record(raw, index, source, row)
    if response is None:
        merged = {**merged, **{name: "" if is_missing(merged.get(name)) else merged[name] for name in AD_FIELDS}}
    rec = parse_record(merged, source=source, row=row)
    is_reference = response is None
    if is_reference:
        response = render_ad(rec.title, rec.description, rec.language)
    gid = raw.get("group_id")
    return rec, response, (rec.id if is_missing(gid) else str(gid)), is_reference


def read_generated(path: str | Path, *, records_index: dict[str, dict[str, Any]] | None = None,
                   skip_invalid: bool = False) -> GeneratedAds:
    """Read and validate a generated-ads file.

    Raises RecordError for the first invalid row (file not found, an absent ad field, a bad record
    field, an id not in ``records_index``) unless ``skip_invalid``, which lists it in ``rejected``.
    A file with no valid row is a RecordError either way.
    """
    source = str(path)
    if not Path(path).is_file():
        raise RecordError(source, 0, None, "file not found")
    out = GeneratedAds(path=source, records=[], responses=[], groups=[], raws=[], is_reference=[])
    for row_no, raw in read_rows(path):
        try:
            if isinstance(raw, RecordError):
                raise raw
            rec, response, gid, is_reference = parse_generated_row(raw, records_index, source, row_no)
        except RecordError as err:
            if not skip_invalid:
                raise
            out.rejected.append(err)
            continue
        out.records.append(rec)
        out.responses.append(response)
        out.groups.append(gid)
        out.raws.append(raw)
        out.is_reference.append(is_reference)
    if not out.records:
        raise RecordError(source, 0, None, "no valid rows" if out.rejected else "no rows")
    return out
