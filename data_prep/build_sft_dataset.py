"""Ad records + impression logs -> verl SFT parquet (``train.parquet``, ``val.parquet``): the cold start.

Each output row is what verl 0.9.1's ``MultiTurnSFTDataset`` reads (``messages``, the default
``data.messages_key``): the RL set's prompt for the record (``data_prep.prompts``, the same system
and user turns) answered by a logged ad of that record in the exact output format
(``relate_common.ad_format.render_ad``). Which logged ads answer is the rule of
``data_prep.config.SFTDatasetConfig``: the ``variants_per_record`` ads of the record with the highest
posterior mean CTCVR among those with at least ``min_conversions`` conversions; a record with none
is answered by its reference ad (``reference_fallback``; ``--no-reference-fallback`` turns it off). Records are split
by the RL set's rule (record id hash, ``DatasetConfig.val_fraction`` and ``seed``), so SFT and RL
hold out the same prompts. A record left without an answer gets no SFT row; each is listed in
``unselected.jsonl`` with the reason, and counted in the report.

Log rows are per impression (``click``, ``conversion``) or aggregated (``impressions``, ``clicks``,
``conversions``), validated as ``build_ctcvr_table`` does; they need ``record_id``, ``title`` and
``description``. Examples::

    python data_prep/build_sft_dataset.py --logs logs.parquet --output-dir data/sft   # bundled records
    python data_prep/build_sft_dataset.py --records ads.jsonl --logs logs.parquet --output-dir out \\
        --variants-per-record 2 --skip-invalid
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep.common import assign_split, fail, handle_invalid, write_parquet
from data_prep.config import SAMPLE_RECORDS, DatasetConfig, SFTDatasetConfig
from data_prep.impression_log import ImpressionLog, labelled_rows
from data_prep.prompts import PROMPT_STYLES, build_messages, prompt_version
from relate_common.ad_format import render_ad
from relate_common.jsonio import write_json, write_jsonl
from relate_common.records import AdRecord, RecordError, load_records, text_field

SPLITS = ("train", "val")


@dataclass
class LoggedAd:
    """One distinct ad text of a record in the logs, with its summed outcomes."""

    record_id: str
    title: str
    description: str
    impressions: float = 0.0
    clicks: float = 0.0
    conversions: float = 0.0
    variant: str = ""  # the simulator's variant name when the log has one (reported, never used to select)

    def posterior_ctcvr(self, prior_mean: float, prior_impressions: float) -> float:
        """Posterior mean of conversions / impressions under Beta(prior_mean * m, (1 - prior_mean) * m)."""
        return (self.conversions + prior_mean * prior_impressions) / (self.impressions + prior_impressions)


def overall_ctcvr(ads: list[LoggedAd]) -> float:
    """The log's conversions per impression (the prior's centre)."""
    impressions = sum(a.impressions for a in ads)
    return sum(a.conversions for a in ads) / impressions if impressions else 0.0


def select_sft_ads(ads: list[LoggedAd], config: SFTDatasetConfig) -> dict[str, list[tuple[LoggedAd, float]]]:
    """record id -> its chosen ads with their posterior CTCVR, best first (the rule of ``SFTDatasetConfig``).

    Ties (equal posteriors) go to the ad with more impressions, then to the earlier one in the log,
    so the choice is deterministic. A record none of whose ads qualifies is absent from the result.
    """
    prior_mean = overall_ctcvr(ads)
    # prior worth `prior_conversions` conversions at the overall rate; no conversions at all: no signal
    prior_impressions = config.prior_conversions / prior_mean if prior_mean > 0 else 0.0
    ranked: dict[str, list[tuple[float, float, int, LoggedAd]]] = {}
    for order, ad in enumerate(ads):
        if ad.conversions >= config.min_conversions and ad.impressions > 0:
            score = ad.posterior_ctcvr(prior_mean, prior_impressions)
            ranked.setdefault(ad.record_id, []).append((-score, -ad.impressions, order, ad))
    return {rid: [(ad, -neg) for neg, _, _, ad in sorted(items)[: config.variants_per_record]]
            for rid, items in ranked.items()}


def read_logged_ads(path: Path, known_ids: set[str], skip_invalid: bool, rejected: list[dict[str, Any]]) -> tuple[list[LoggedAd], int]:
    """The distinct (record, title, description) ads of a log with summed outcomes; and the rows read.

    A row whose ``record_id`` is not a known record is invalid (the SFT prompt comes from the record).
    """
    source = str(path)
    ads: dict[tuple[str, str, str], LoggedAd] = {}

    def parse(raw: dict[str, Any], row_no: int, shape: str) -> tuple[str, str, str, list[tuple[int, int, float]]]:
        rid = text_field(raw, "record_id", source, row_no, required=True)
        if rid not in known_ids:
            raise RecordError(source, row_no, "record_id", f"no record with id '{rid}' in the records file")
        title = text_field(raw, "title", source, row_no, required=True)
        description = text_field(raw, "description", source, row_no, required=True)
        return rid, title, description, labelled_rows(raw, shape, "weight", source, row_no)

    log = ImpressionLog(path, skip_invalid, rejected)
    for raw, (rid, title, description, labels) in log.rows(parse):
        ad = ads.setdefault((rid, title, description), LoggedAd(rid, title, description))
        ad.variant = ad.variant or str(raw.get("variant") or "")
        for click, conversion, weight in labels:
            ad.impressions += weight
            ad.clicks += weight * click
            ad.conversions += weight * conversion
    return list(ads.values()), log.rows_read


def answers_for(record: AdRecord, chosen: dict[str, list[tuple[LoggedAd, float]]], config: SFTDatasetConfig) -> tuple[list[tuple[LoggedAd, float | None]], str]:
    """The ads that answer ``record``'s prompt and where they came from: 'posterior', 'reference' or ''."""
    if record.id in chosen:
        return list(chosen[record.id]), "posterior"
    if config.reference_fallback and record.title and record.description:
        return [(LoggedAd(record.id, record.title, record.description, variant="reference"), None)], "reference"
    return [], ""


def to_sft_row(record: AdRecord, ad: LoggedAd, posterior: float | None, source: str, split: str, index: int,
               prompt_style: str = "full") -> dict[str, Any]:
    """One verl SFT row: the RL prompt's turns (same style as the RL set), then the chosen ad as the answer."""
    answer = render_ad(ad.title, ad.description, record.language)
    return {
        "messages": [*build_messages(record, prompt_style), {"role": "assistant", "content": answer}],
        "extra_info": {"index": index, "split": split, "prompt_version": prompt_version(prompt_style), "id": record.id,
                       "source": source, "impressions": ad.impressions, "clicks": ad.clicks,
                       "conversions": ad.conversions, "posterior_ctcvr": posterior, "variant": ad.variant},
    }


def build_parser() -> argparse.ArgumentParser:
    d, s = DatasetConfig(), SFTDatasetConfig()
    p = argparse.ArgumentParser(prog="build_sft_dataset", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="records file: .jsonl, .csv or .parquet (default: the bundled sample)")
    p.add_argument("--logs", type=Path, required=True, help="impression log of those records: .parquet, .jsonl or .csv")
    p.add_argument("--output-dir", type=Path, required=True, help="where train.parquet, val.parquet and summary.json go")
    p.add_argument("--variants-per-record", type=int, default=s.variants_per_record, help=f"best logged ads per record (default {s.variants_per_record})")
    p.add_argument("--min-conversions", type=float, default=s.min_conversions, help=f"conversions a logged ad needs to be picked (default {s.min_conversions})")
    p.add_argument("--prior-conversions", type=float, default=s.prior_conversions, help=f"Beta prior strength in conversions (default {s.prior_conversions})")
    p.add_argument("--no-reference-fallback", action="store_true",
                   help="records without a qualifying logged ad get no row (default: their reference ad answers)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"share of records held out, as in build_dataset (default {d.val_fraction})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"salt of the id hash, as in build_dataset (default {d.seed})")
    p.add_argument("--prompt-style", choices=PROMPT_STYLES, default=d.prompt_style,
                   help=f"prompt style; use the RL set's (build_dataset --prompt-style; default {d.prompt_style})")
    p.add_argument("--sp-separator", default=d.selling_point_separator, help="separator when selling_points is one string")
    p.add_argument("--skip-invalid", action="store_true", help="write rejected rows with their reason to OUTPUT_DIR/rejected.jsonl and go on")
    return p


@dataclass(frozen=True)
class SFTDatasetRun:
    """The settings of one ``build_sft_dataset`` run (the CLI's flags, typed)."""

    logs: Path  # impression log of the records: .parquet, .jsonl or .csv
    output_dir: Path  # where train.parquet, val.parquet and summary.json go
    records: Path = SAMPLE_RECORDS  # records file: .jsonl, .csv or .parquet
    rule: SFTDatasetConfig = field(default_factory=SFTDatasetConfig)  # which logged ads answer
    # The RL set's split and prompt (build_dataset's DatasetConfig), so SFT and RL hold out the same prompts.
    val_fraction: float = DatasetConfig.val_fraction
    seed: int = DatasetConfig.seed
    prompt_style: str = DatasetConfig.prompt_style
    selling_point_separator: str = DatasetConfig.selling_point_separator
    skip_invalid: bool = False  # rejected rows to OUTPUT_DIR/rejected.jsonl instead of exit 2


def run(config: SFTDatasetRun) -> dict[str, Any]:
    """Build the SFT set of ``config``, print the report and return the summary (also summary.json).

    Exits 2 (SystemExit) on invalid input, naming file, row and field.
    """
    rule = config.rule
    for path in (config.records, config.logs):
        if not path.exists():
            fail(f"{path}: no such file")
    rejected: list[dict[str, Any]] = []
    try:
        records, bad = load_records(config.records, skip_invalid=config.skip_invalid, selling_point_separator=config.selling_point_separator)
    except RecordError as err:
        handle_invalid(err, False, rejected)
    rejected.extend(e.to_json() for e in bad)
    by_id: dict[str, AdRecord] = {}
    for record in records:
        by_id.setdefault(record.id, record)  # first occurrence wins, as in build_dataset
    duplicates = len(records) - len(by_id)
    ads, rows_read = read_logged_ads(config.logs, set(by_id), config.skip_invalid, rejected)
    chosen = select_sft_ads(ads, rule)

    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    unselected, variants, sources = [], Counter(), Counter()
    logged = Counter(a.record_id for a in ads)
    for record in by_id.values():
        split = assign_split(record.id, config.seed, {"val": config.val_fraction})
        answers, source = answers_for(record, chosen, rule)
        if not answers:
            reason = ("not in the logs" if not logged[record.id] else f"no logged ad with >= {rule.min_conversions:g} conversions")
            unselected.append({"id": record.id, "split": split, "logged_ads": logged[record.id],
                               "reason": reason + ("" if rule.reference_fallback else ", reference fallback off")
                               + (", no reference ad" if rule.reference_fallback else "")})
            continue
        sources[source] += 1
        for ad, posterior in answers:
            by_split[split].append(to_sft_row(record, ad, posterior, source, split, len(by_split[split]), config.prompt_style))
            if source == "posterior":
                variants[ad.variant or "(no variant column)"] += 1

    out = config.output_dir
    for split, rows in by_split.items():
        write_parquet(rows, out / f"{split}.parquet")
    write_jsonl(unselected, out / "unselected.jsonl")
    if config.skip_invalid:
        write_jsonl(rejected, out / "rejected.jsonl")
    summary = {
        "records": str(config.records), "logs": str(config.logs), "prompt_style": config.prompt_style, "log_rows_read": rows_read, "rejected": len(rejected),
        "logged_ads": len(ads), "overall_ctcvr": overall_ctcvr(ads), "rule": dataclasses.asdict(rule),
        "written": {s: len(rows) for s, rows in by_split.items()}, "records_unselected": len(unselected),
        "duplicate_records": duplicates, "records_by_source": dict(sources),
        "chosen_variants": dict(variants.most_common()), "outputs": {s: str(out / f"{s}.parquet") for s in SPLITS},
    }
    write_json(summary, out / "summary.json")
    print(f"build_sft_dataset: {config.records} + {config.logs}")
    print(f"  log rows read  {rows_read}, rejected {len(rejected)}" + (f"  -> {out / 'rejected.jsonl'}" if config.skip_invalid else ""))
    print(f"  logged ads     {len(ads)} distinct, overall CTCVR {summary['overall_ctcvr']:.4%}")
    print(f"  rule           best {rule.variants_per_record} per record by posterior CTCVR (Beta prior of "
          f"{rule.prior_conversions:g} conversions), >= {rule.min_conversions:g} conversions")
    print(f"  written        train {len(by_split['train'])}, val {len(by_split['val'])}  (records answered by "
          f"logged posterior ads {sources['posterior']}, by their reference ad {sources['reference']})")
    if duplicates:
        print(f"  duplicates     {duplicates} record rows with an id seen before (first occurrence kept)")
    print(f"  unselected     {len(unselected)} records  -> {out / 'unselected.jsonl'}")
    if any(a.variant for a in ads):
        print(f"  chosen logged variants {', '.join(f'{k} {v}' for k, v in variants.most_common())}")
    print(f"  outputs        {out / 'train.parquet'}, {out / 'val.parquet'}")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse and check the flags, then :func:`run`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error("--val-fraction must be in [0, 1)")
    if args.variants_per_record < 1 or args.min_conversions < 0 or args.prior_conversions < 0:
        parser.error("--variants-per-record must be >= 1, --min-conversions and --prior-conversions >= 0")
    rule = SFTDatasetConfig(variants_per_record=args.variants_per_record, min_conversions=args.min_conversions,
                            prior_conversions=args.prior_conversions, reference_fallback=not args.no_reference_fallback)
    return run(SFTDatasetRun(logs=args.logs, output_dir=args.output_dir, records=args.records, rule=rule,
                             val_fraction=args.val_fraction, seed=args.seed, prompt_style=args.prompt_style,
                             selling_point_separator=args.sp_separator, skip_invalid=args.skip_invalid))

if __name__ == "__main__":
    main()
