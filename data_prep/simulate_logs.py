"""Simulate search-ad impression logs (clicks, conversions) from the ground-truth user model.

For every ad record the simulator builds the reference ad plus rule-based rewrites, some better
(a concrete selling point, a call to action, both with the query terms) and some worse (query
terms dropped, exaggerated claims, a generic template shared by all records, a truncated or an
overlong description); those live in ``data_prep.ad_variants``. It then plays a stream of
impressions: pick a record (mild popularity skew), pick one of its variants, apply template fatigue from the stream so far, and sample
click ~ Bernoulli(p_click) and, after a click, conversion ~ Bernoulli(p_cvr). The truth
probabilities are written next to the sampled outcomes. Formulas: data_prep/SIMULATOR.md.

    python data_prep/simulate_logs.py --output logs.parquet --impressions 200000 --seed 0
    python -m data_prep.simulate_logs --records my_records.jsonl --output logs.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# make_variants, reference_ad and VARIANT_NAMES stay importable from here (testbed.corpus, tests)
from data_prep.ad_variants import VARIANT_NAMES, make_variants, reference_ad  # noqa: E402, F401
from data_prep.user_model import UserModel, UserModelConfig  # noqa: E402
from relate_common.records import AdRecord, RecordError, load_records  # noqa: E402

DEFAULT_RECORDS = Path(__file__).resolve().parent / "sample" / "ad_records.jsonl"
DEFAULT_IMPRESSIONS = 200_000
DEFAULT_POPULARITY_SKEW = 0.3  # Zipf exponent over records: the top record gets a few x the median

# ---------------------------------------------------------------------------------------------
# The impression stream.
# ---------------------------------------------------------------------------------------------

OUTPUT_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("industry", pa.string()),
        ("language", pa.string()),
        ("query", pa.string()),
        ("bidword", pa.string()),
        ("selling_points", pa.list_(pa.string())),
        ("title", pa.string()),
        ("description", pa.string()),
        ("variant", pa.string()),
        ("click", pa.int64()),
        ("conversion", pa.int64()),
        ("truth_p_click", pa.float64()),  # after fatigue: the probability the click was drawn from
        ("truth_p_cvr", pa.float64()),  # post-click conversion probability
        ("truth_p_ctcvr", pa.float64()),  # truth_p_click * truth_p_cvr
        ("truth_fatigue_factor", pa.float64()),  # the fatigue multiplier already in truth_p_click
    ]
)
# --aggregate: one row per shown ad (record x variant) with counts, the shape build_ctcvr_table and
# build_sft_dataset read as "aggregated"; the truth columns are means over that ad's impressions.
AGGREGATED_SCHEMA = pa.schema(
    [*(f for f in OUTPUT_SCHEMA if f.name not in ("click", "conversion")),
     pa.field("impressions", pa.int64()), pa.field("clicks", pa.int64()), pa.field("conversions", pa.int64())]
)


def record_popularity(n_records: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like sampling weights over records in a seeded random rank order (0 = uniform).

    Ranks are shuffled so popularity does not follow file order (which is often by industry)."""
    ranks = rng.permutation(n_records) + 1
    weights = ranks.astype(np.float64) ** -skew
    return weights / weights.sum()


def simulate(
    records: Sequence[AdRecord],
    impressions: int,
    seed: int,
    *,
    model: UserModel | None = None,
    popularity_skew: float = DEFAULT_POPULARITY_SKEW,
    progress: bool = True,
    aggregate: bool = False,
) -> pa.Table:
    """Play ``impressions`` impressions over the records' ad variants; return the log table.

    Everything that does not depend on the stream (variant texts, features, fresh probabilities,
    phrasing slots) is computed once per variant; the per-impression loop only updates fatigue.
    Same records + seed + model config -> identical table. ``aggregate``: the same draws summed per
    shown ad (:data:`AGGREGATED_SCHEMA`), so that 10M impressions fit in memory and on disk.
    """
    if not records:
        raise ValueError("no records to simulate")
    model = model or UserModel()
    rng = np.random.default_rng(seed)

    variants = [v for i, record in enumerate(records) for v in make_variants(record, i, model)]
    n_variants = len(VARIANT_NAMES)
    variant_ads = [
        {**_record_fields(records[v.record_index]), "title": v.title, "description": v.description}
        for v in variants
    ]
    p_click_fresh, p_cvr = model.score(variant_ads)
    fatigue = model.new_fatigue_state(len(records))  # users forget after a few passes over the records
    slot_arrays = [fatigue.slots(model.phrasing_keys(ad)) for ad in variant_ads]

    popularity = record_popularity(len(records), popularity_skew, rng)
    record_pick = rng.choice(len(records), size=impressions, p=popularity)
    variant_pick = record_pick * n_variants + rng.integers(n_variants, size=impressions)
    click_draw = rng.random(impressions)
    conversion_draw = rng.random(impressions)

    order = variant_pick.tolist()
    if progress:
        from tqdm import tqdm

        order = tqdm(order, desc="impressions", unit="imp", mininterval=0.5, file=sys.stderr)
    exposures = fatigue.replay(slot_arrays, order)

    fatigue_factor = model.fatigue_factor(exposures)
    truth_p_click = p_click_fresh[variant_pick] * fatigue_factor
    truth_p_cvr = p_cvr[variant_pick]
    click = click_draw < truth_p_click
    conversion = click & (conversion_draw < truth_p_cvr)

    variant_table = pa.table(
        {
            "record_id": [records[v.record_index].id for v in variants],
            "industry": [records[v.record_index].industry for v in variants],
            "language": [records[v.record_index].language for v in variants],
            "query": [records[v.record_index].query for v in variants],
            "bidword": [records[v.record_index].bidword for v in variants],
            "selling_points": pa.array(
                [list(records[v.record_index].selling_points) for v in variants], type=pa.list_(pa.string())
            ),
            "title": [v.title for v in variants],
            "description": [v.description for v in variants],
            "variant": [v.name for v in variants],
        }
    )
    if aggregate:
        return aggregate_log(variant_table, variant_pick, click, conversion, truth_p_click, truth_p_cvr, fatigue_factor)
    table = variant_table.take(pa.array(variant_pick))
    for name, values in (
        ("click", click.astype(np.int64)),
        ("conversion", conversion.astype(np.int64)),
        ("truth_p_click", truth_p_click),
        ("truth_p_cvr", truth_p_cvr),
        ("truth_p_ctcvr", truth_p_click * truth_p_cvr),
        ("truth_fatigue_factor", fatigue_factor),
    ):
        table = table.append_column(name, pa.array(values))
    return table.cast(OUTPUT_SCHEMA)


def aggregate_log(variant_table: pa.Table, variant_pick: np.ndarray, click: np.ndarray, conversion: np.ndarray,
                  truth_p_click: np.ndarray, truth_p_cvr: np.ndarray, fatigue_factor: np.ndarray) -> pa.Table:
    """Per-impression draws summed per ad: one row per ad shown at least once (never-shown ads have no row).

    Args:
        variant_table: (V rows) the text columns of every ad variant.
        variant_pick: (N,) the variant index of each impression; the other arrays are (N,) per impression.
    Returns: :data:`AGGREGATED_SCHEMA` rows; truth columns are the means over the ad's impressions
    (``truth_p_ctcvr``: the mean of the per-impression products, so it matches the expected conversions).
    """
    n = variant_table.num_rows
    imps = np.bincount(variant_pick, minlength=n)
    shown = np.flatnonzero(imps)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(variant_pick, weights=values, minlength=n)[shown]

    table = variant_table.take(pa.array(shown))
    columns = (
        ("truth_p_click", total(truth_p_click) / imps[shown]),
        ("truth_p_cvr", total(truth_p_cvr) / imps[shown]),
        ("truth_p_ctcvr", total(truth_p_click * truth_p_cvr) / imps[shown]),
        ("truth_fatigue_factor", total(fatigue_factor) / imps[shown]),
        ("impressions", imps[shown].astype(np.int64)),
        ("clicks", np.rint(total(click.astype(np.float64))).astype(np.int64)),
        ("conversions", np.rint(total(conversion.astype(np.float64))).astype(np.int64)),
    )
    for name, values in columns:
        table = table.append_column(name, pa.array(values))
    return table.cast(AGGREGATED_SCHEMA)


def _record_fields(record: AdRecord) -> dict[str, object]:
    """The record fields the user model reads besides the ad text."""
    return {
        "query": record.query, "bidword": record.bidword, "selling_points": record.selling_points,
        "industry": record.industry, "language": record.language,
    }


# ---------------------------------------------------------------------------------------------
# Summary and CLI.
# ---------------------------------------------------------------------------------------------


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def summarize(table: pa.Table) -> str:
    """Totals and a per-variant CTR/CVR table of a simulated log (either shape), as printable text."""
    variant = np.asarray(table.column("variant").to_pylist())
    if "impressions" in table.column_names:
        imps = table.column("impressions").to_numpy()
        click, conversion = table.column("clicks").to_numpy(), table.column("conversions").to_numpy()
    else:
        imps = np.ones(table.num_rows, dtype=np.int64)
        click, conversion = table.column("click").to_numpy(), table.column("conversion").to_numpy()
    truth = table.column("truth_p_ctcvr").to_numpy()
    n, clicks, conversions = int(imps.sum()), int(click.sum()), int(conversion.sum())
    lines = [
        f"impressions: {n}",
        f"clicks:      {clicks}",
        f"conversions: {conversions}",
        f"CTR:   {_rate(clicks, n):.4%}",
        f"CVR:   {_rate(conversions, clicks):.4%}  (conversions / clicks)",
        f"CTCVR: {_rate(conversions, n):.4%}  (conversions / impressions)",
        "",
        f"{'variant':<20}{'impressions':>12}{'clicks':>8}{'conv':>6}{'CTR':>9}{'CVR':>9}{'CTCVR':>9}{'truth CTCVR':>13}",
    ]
    for name in VARIANT_NAMES:
        mask = variant == name
        if not mask.any():
            continue
        m, c, v = int(imps[mask].sum()), int(click[mask].sum()), int(conversion[mask].sum())
        truth_mean = float((truth[mask] * imps[mask]).sum() / m)  # per impression, in either shape
        lines.append(
            f"{name:<20}{m:>12}{c:>8}{v:>6}{_rate(c, m):>9.3%}{_rate(v, c):>9.3%}{_rate(v, m):>9.4%}{truth_mean:>13.4%}"
        )
    return "\n".join(lines)


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a partial log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simulate_logs",
        description=(
            "Simulate search-ad impression logs from a documented ground-truth user model "
            "(data_prep/SIMULATOR.md). Each record's reference ad and rule-based rewrites "
            f"({', '.join(VARIANT_NAMES)}) are shown in a stream of impressions; clicks and "
            "conversions are sampled from the model's p_click (with template fatigue) and p_cvr, "
            "and the truth probabilities are written next to them."
        ),
        epilog=(
            "Output columns: record_id, industry, language, query, bidword, selling_points, title, "
            "description, variant, click (0/1), conversion (0/1, only 1 after a click), "
            "truth_p_click, truth_p_cvr, truth_p_ctcvr, truth_fatigue_factor; with --aggregate: impressions, "
            "clicks, conversions per shown ad instead of click and conversion, truth columns averaged. "
            "At the end a summary is printed: impressions, clicks, conversions, CTR, CVR "
            "(conversions / clicks), CTCVR and a per-variant table; the progress bar goes to stderr. "
            "Exit codes: 0 ok, 2 invalid input (the message names file, row and field)."
        ),
    )
    parser.add_argument(
        "--records", type=Path, default=DEFAULT_RECORDS,
        help=f"ad records (JSONL, CSV or parquet; schema of relate_common.records). Default: {DEFAULT_RECORDS}",
    )
    parser.add_argument("--output", type=Path, required=True, help="parquet file to write the impression log to")
    parser.add_argument(
        "--impressions", type=int, default=DEFAULT_IMPRESSIONS,
        help=f"number of impressions to simulate (default {DEFAULT_IMPRESSIONS})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives an identical file (default 0)")
    parser.add_argument(
        "--popularity-skew", type=float, default=DEFAULT_POPULARITY_SKEW,
        help=f"Zipf exponent of record popularity, 0 = uniform (default {DEFAULT_POPULARITY_SKEW})",
    )
    parser.add_argument("--aggregate", action="store_true",
                        help="write one row per shown ad with impressions / clicks / conversions counts (and mean truth) "
                             "instead of one row per impression: the same draws, for 10M+ impressions")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


@dataclass(frozen=True)
class SimulationRun:
    """The settings of one ``simulate_logs`` run (the CLI's flags, typed)."""

    output: Path  # parquet file to write the impression log to
    records: Path = DEFAULT_RECORDS  # ad records (JSONL, CSV or parquet)
    impressions: int = DEFAULT_IMPRESSIONS
    seed: int = 0  # the same seed gives an identical file
    popularity_skew: float = DEFAULT_POPULARITY_SKEW  # Zipf exponent of record popularity, 0 = uniform
    aggregate: bool = False  # one row per shown ad with counts instead of one row per impression
    progress: bool = True  # tqdm bar on stderr


def run(config: SimulationRun) -> int:
    """Simulate and write the log of ``config``, print the summary; returns the exit code (0 ok, 2 invalid input)."""
    started = time.perf_counter()
    try:
        if not config.records.is_file():
            raise RecordError(str(config.records), 0, None, "records file not found")
        records, _ = load_records(config.records)
        if not records:
            raise RecordError(str(config.records), 0, None, "no records in file")
    except RecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    table = simulate(
        records, config.impressions, config.seed, model=UserModel(UserModelConfig()),
        popularity_skew=config.popularity_skew, progress=config.progress, aggregate=config.aggregate,
    )
    write_parquet(table, config.output)
    elapsed = time.perf_counter() - started
    print(summarize(table))
    print(f"\nrecords: {len(records)} ({config.records})")
    print(f"output:  {config.output}")
    print(f"wall time: {elapsed:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: parse and check the flags, then :func:`run`; returns the exit code (0 ok, 2 invalid input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.impressions < 1:
        parser.error("--impressions must be at least 1")
    if args.popularity_skew < 0:
        parser.error("--popularity-skew must be >= 0")
    return run(SimulationRun(output=args.output, records=args.records, impressions=args.impressions, seed=args.seed,
                             popularity_skew=args.popularity_skew, aggregate=args.aggregate, progress=not args.no_progress))

if __name__ == "__main__":
    sys.exit(main())
