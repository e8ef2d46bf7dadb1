"""Small helpers for tests: write record files in each supported format."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def record(i: int = 1, **overrides: Any) -> dict[str, Any]:
    """A valid English record; overrides replace or remove (value None -> key dropped) fields."""
    row = {
        "id": f"r{i}",
        "query": f"emergency plumber near me {i}",
        "bidword": "emergency plumber",
        "selling_points": ["60-minute response", "upfront pricing", "licensed since 2009"],
        "industry": "home_services",
        "title": "Emergency Plumber in 60 Minutes",
        "description": "Licensed plumbers since 2009 with upfront pricing. Call now for a 60-minute response.",
    }
    for key, value in overrides.items():
        if value is None:
            row.pop(key, None)
        else:
            row[key] = value
    return row


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, relative path -> bytes: two runs into one folder compare equal."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def as_json(value: Any) -> str:
    """``value`` as sorted JSON (NaN written as NaN), so results holding NaN compare equal."""
    return json.dumps(value, sort_keys=True, default=str)
