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
    prompt_style: str = "full"  # data_prep.prompts.PROMPT_STYLES: "full" rules, or "compact" for small CPU policies


@dataclass(frozen=True)
class SFTDatasetConfig:
    """``build_sft_dataset``: records + impression logs -> verl SFT parquet (the cold-start set).

    The paper's Qwen-SFT baseline is tuned on "curated in-domain ads including online posterior
    samples with high click signals" and gives no selection rule; this one is ours. Each logged ad
    of a record is ranked by its posterior mean CTCVR, conversions/impressions under a Beta prior
    centred on the log's overall CTCVR and worth ``prior_conversions`` conversions (so a variant
    with 300 impressions and 1 conversion is not ranked above one with 30,000 and 90). CTCVR, not
    CTR: a click-bait variant (exaggerated claims) draws clicks that do not convert. The paper's set
    also holds curated ads: a record none of whose logged ads qualifies is answered by its own
    reference ad (the advertiser's), when ``reference_fallback`` and the record has one.
    """

    variants_per_record: int = 1  # the best logged ads of each record that become SFT answers
    min_conversions: int = 1  # a logged ad with fewer conversions is never picked: no signal, only the prior
    prior_conversions: float = 1.0  # strength of the Beta prior, in conversions (its impressions: this / overall CTCVR)
    reference_fallback: bool = True  # records without a qualifying logged ad: their reference ad


@dataclass(frozen=True)
class CTCVRTableConfig:
    """``build_ctcvr_table``: impression logs -> ESMM train/val/test tables."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0  # salt of the query hash that assigns splits
    aggregated_mode: str = "weight"  # aggregated rows: "weight" (3 weighted rows) or "expand" (one row per impression)
    selling_point_separator: str = "|"
