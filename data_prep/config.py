"""Defaults of the data-preparation commands, in one place (each CLI flag overrides one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_RECORDS = SAMPLE_DIR / "ad_records.jsonl"


@dataclass(frozen=True)
class DatasetConfig:
    """``build_dataset``: records -> verl RL parquet."""

    val_fraction: float = 0.1  # held-out prompts for validation generation and evaluation
    seed: int = 0  # salt of the id hash that assigns splits; change it for another split
    data_source: str = "relate_ads"  # verl's data_source column; our reward manager accepts it
    ability: str = "ad_text"
    reward_style: str = "rule"  # verl convention for rule/model-computed rewards
    selling_point_separator: str = "|"  # splits a selling_points given as one string


@dataclass(frozen=True)
class CTCVRTableConfig:
    """``build_ctcvr_table``: impression logs -> ESMM train/val/test tables."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0  # salt of the query hash that assigns splits
    aggregated_mode: str = "weight"  # aggregated rows: "weight" (3 weighted rows) or "expand" (one row per impression)
    selling_point_separator: str = "|"
