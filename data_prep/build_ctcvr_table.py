"""Impression logs -> ESMM training tables (``train/val/test.parquet``) for ``ctcvr_model``.

Two input shapes are accepted (JSONL, CSV or parquet):

* per impression: ``click`` and ``conversion`` in {0, 1};
* aggregated: ``impressions``, ``clicks``, ``conversions`` counts per ad and query, turned into
  up to three weighted rows (``--aggregated-mode weight``, the default) or one row per
  impression (``expand``).

Text columns: ``query``, ``bidword``, ``title``, ``description`` (required), ``selling_points``
(list, or one string split on ``--sp-separator``; may be absent), ``record_id``, ``industry``,
``language`` (optional). Simulator truth columns (``truth_p_click``, ``truth_p_cvr``,
``truth_p_ctcvr``) are carried along for evaluation; they are never model features.

The split is grouped by query (a hash of the normalised query), so one query never sits in
two splits and held-out figures measure generalisation to unseen queries.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_prep.common import assign_split, fail, write_parquet
from data_prep.config import CTCVRTableConfig
from data_prep.impression_log import ImpressionLog, labelled_rows
from relate_common.jsonio import write_json, write_jsonl
from relate_common.lang import detect_language, normalize_language
from relate_common.records import RecordError, is_missing, selling_points_field, text_field

TEXT_FIELDS = ("query", "bidword", "title", "description")
TRUTH_FIELDS = ("truth_p_click", "truth_p_cvr", "truth_p_ctcvr")
SPLITS = ("train", "val", "test")
OUTPUT_COLUMNS = ("record_id", "query", "bidword", "selling_points", "title", "description", "industry",
                  "language", "click", "conversion", "weight", "split")


def ad_fields(raw: dict[str, Any], source: str, row: int, separator: str) -> dict[str, Any]:
    """The text side of one log row, validated."""
    out: dict[str, Any] = {name: text_field(raw, name, source, row, required=True) for name in TEXT_FIELDS}
    points = raw.get("selling_points")
    absent = is_missing(points) or (isinstance(points, str) and not points.strip())  # an empty CSV cell
    out["selling_points"] = [] if absent else selling_points_field(raw, source, row, separator)
    out["record_id"] = text_field(raw, "record_id", source, row, required=False)
    out["industry"] = text_field(raw, "industry", source, row, required=False)
    lang = text_field(raw, "language", source, row, required=False)
    if lang:
        out["language"] = normalize_language(lang)
        if out["language"] is None:
            raise RecordError(source, row, "language", f"unknown language '{lang}' (supported: zh, en)")
    else:
        out["language"] = detect_language(out["query"] + " " + out["title"] + " " + out["description"])
    return out


def truth_fields(raw: dict[str, Any], source: str, row: int) -> dict[str, float]:
    """Simulator truth columns present in the row, as floats in [0, 1]; p_ctcvr derived if absent."""
    truth = {}
    for name in TRUTH_FIELDS:
        value = raw.get(name)
        if is_missing(value):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise RecordError(source, row, name, f"expected a probability in [0, 1], got {value!r}")
        truth[name] = float(value)
    if "truth_p_ctcvr" not in truth and {"truth_p_click", "truth_p_cvr"} <= truth.keys():
        truth["truth_p_ctcvr"] = truth["truth_p_click"] * truth["truth_p_cvr"]
    return truth


def normalised_query(query: str) -> str:
    """The split key: one query, however spaced or cased, lands in one split."""
    return " ".join(query.lower().split())


def split_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Impressions, clicks, conversions and the CTR / CVR / CTCVR they imply (weighted)."""
    imps = sum(r["weight"] for r in rows)
    clicks = sum(r["weight"] for r in rows if r["click"])
    convs = sum(r["weight"] for r in rows if r["conversion"])
    return {
        "rows": len(rows), "impressions": imps, "clicks": clicks, "conversions": convs,
        "queries": len({normalised_query(r["query"]) for r in rows}),
        "ctr": clicks / imps if imps else float("nan"),
        "cvr": convs / clicks if clicks else float("nan"),
        "ctcvr": convs / imps if imps else float("nan"),
    }


def build_parser() -> argparse.ArgumentParser:
    d = CTCVRTableConfig()
    p = argparse.ArgumentParser(
        prog="build_ctcvr_table",
        description="Turn impression logs into ESMM train/val/test tables, split by query.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--logs", type=Path, required=True, help="impression log: .parquet, .jsonl or .csv")
    p.add_argument("--output-dir", type=Path, required=True, help="where train/val/test.parquet and summary.json go")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help=f"share of queries in val (default {d.val_fraction})")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help=f"share of queries in test (default {d.test_fraction})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"salt of the query hash (default {d.seed})")
    p.add_argument("--aggregated-mode", choices=("weight", "expand"), default=d.aggregated_mode,
                   help="aggregated rows: weighted rows or one row per impression (default %(default)s)")
    p.add_argument("--sp-separator", default=d.selling_point_separator, help="separator when selling_points is one string")
    p.add_argument("--skip-invalid", action="store_true", help="write rejected rows with their reason to OUTPUT_DIR/rejected.jsonl and go on")
    return p


@dataclass(frozen=True)
class CTCVRTableRun:
    """The settings of one ``build_ctcvr_table`` run (the CLI's flags, typed)."""

    logs: Path  # impression log: .parquet, .jsonl or .csv
    output_dir: Path  # where train/val/test.parquet and summary.json go
    table: CTCVRTableConfig = field(default_factory=CTCVRTableConfig)  # split fractions, seed, modes
    skip_invalid: bool = False  # rejected rows to OUTPUT_DIR/rejected.jsonl instead of exit 2


def run(config: CTCVRTableRun) -> dict[str, Any]:
    """Build the tables of ``config``, print the report and return the summary (also summary.json).

    Exits 2 (SystemExit) on invalid input, naming file, row and field.
    """
    cfg = config.table
    if not config.logs.exists():
        fail(f"{config.logs}: no such file")
    source = str(config.logs)
    fractions = {"val": cfg.val_fraction, "test": cfg.test_fraction}
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    rejected: list[dict[str, Any]] = []
    split_of_query: dict[str, str] = {}
    has_truth = False

    def parse(raw: dict[str, Any], row_no: int, shape: str) -> tuple[dict[str, Any], list[tuple[int, int, float]], dict[str, float]]:
        ad = ad_fields(raw, source, row_no, cfg.selling_point_separator)
        return ad, labelled_rows(raw, shape, cfg.aggregated_mode, source, row_no), truth_fields(raw, source, row_no)

    log = ImpressionLog(config.logs, config.skip_invalid, rejected)
    for _, (ad, labels, truth) in log.rows(parse):
        has_truth = has_truth or bool(truth)
        key = normalised_query(ad["query"])
        split = split_of_query.get(key) or split_of_query.setdefault(key, assign_split(key, cfg.seed, fractions))
        for click, conversion, weight in labels:
            by_split[split].append({**ad, "click": click, "conversion": conversion, "weight": weight, "split": split, **truth})
    shape, rows_read = log.shape, log.rows_read

    out = config.output_dir
    columns = OUTPUT_COLUMNS + (TRUTH_FIELDS if has_truth else ())
    for split, rows in by_split.items():
        # A row lacking a truth column another row has gets NaN, never a silent 0.
        write_parquet([{c: r.get(c, float("nan")) for c in columns} for r in rows], out / f"{split}.parquet")
    if config.skip_invalid:
        write_jsonl(rejected, out / "rejected.jsonl")
    stats = {split: split_summary(rows) for split, rows in by_split.items()}
    summary = {"logs": source, "shape": shape, "rows_read": rows_read, "rejected": len(rejected),
               "splits": stats, "outputs": {s: str(out / f"{s}.parquet") for s in SPLITS}}
    write_json(summary, out / "summary.json")

    print(f"build_ctcvr_table: {source} ({shape} rows{', ' + cfg.aggregated_mode if shape == 'aggregated' else ''})")
    print(f"  rows read {rows_read}, rejected {len(rejected)}" + (f"  -> {out / 'rejected.jsonl'}" if config.skip_invalid else ""))
    print(f"  {'split':<6} {'rows':>8} {'queries':>8} {'impressions':>12} {'CTR':>8} {'CVR':>8} {'CTCVR':>8}")
    for split, s in stats.items():
        print(f"  {split:<6} {s['rows']:>8} {s['queries']:>8} {s['impressions']:>12.0f} {s['ctr']:>8.2%} {s['cvr']:>8.2%} {s['ctcvr']:>8.3%}")
    print(f"  outputs {out}/{{train,val,test}}.parquet")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: parse and check the flags, then :func:`run`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (0 <= args.val_fraction and 0 <= args.test_fraction and args.val_fraction + args.test_fraction < 1):
        parser.error("--val-fraction and --test-fraction must be >= 0 and sum to less than 1")
    table = CTCVRTableConfig(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                             aggregated_mode=args.aggregated_mode, selling_point_separator=args.sp_separator)
    return run(CTCVRTableRun(logs=args.logs, output_dir=args.output_dir, table=table, skip_invalid=args.skip_invalid))

if __name__ == "__main__":
    main()
