"""The main job on the bundled defaults (``make demo``).

Stages so far: build the verl RL dataset from the sample records, simulate impression logs
with the ground-truth user model, build the ESMM CTCVR tables, train the ESMM CTCVR scorer (with
its two baselines) and evaluate it on the held-out queries. Each stage is skipped when its
outputs are up to date; ``--force`` redoes everything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ctcvr_model.evaluate as ctcvr_evaluate
import ctcvr_model.train as ctcvr_train
import data_prep.build_ctcvr_table as build_ctcvr_table
import data_prep.build_dataset as build_dataset
import data_prep.common
import data_prep.prompts
import data_prep.simulate_logs as simulate_logs
import data_prep.user_model
import relate_common.records
from data_prep.config import SAMPLE_RECORDS
from examples.stages import Stage, run_stages, sources_of

DEFAULT_IMPRESSIONS = 1_000_000  # ctcvr_model/README.md: ~940 training conversions; 200k is too few for the style components


def build_stages(out: Path, records: Path, impressions: int, seed: int) -> list[Stage]:
    dataset, logs, tables = out / "dataset", out / "logs" / "impressions.parquet", out / "ctcvr_tables"
    scorer, scorer_eval = out / "ctcvr_model", out / "ctcvr_eval"
    common = sources_of(data_prep.common, relate_common.records)
    return [
        Stage("rl-dataset",
              lambda: build_dataset.main(["--input", str(records), "--output-dir", str(dataset), "--seed", str(seed)]),
              inputs=[records, *common, *sources_of(build_dataset, data_prep.prompts)],
              outputs=[dataset / "train.parquet", dataset / "val.parquet"]),
        Stage("impression-logs",
              lambda: simulate_logs.main(["--records", str(records), "--output", str(logs),
                                          "--impressions", str(impressions), "--seed", str(seed)]),
              inputs=[records, *common, *sources_of(simulate_logs, data_prep.user_model)],
              outputs=[logs]),
        Stage("ctcvr-tables",
              lambda: build_ctcvr_table.main(["--logs", str(logs), "--output-dir", str(tables), "--seed", str(seed)]),
              inputs=[logs, *common, *sources_of(build_ctcvr_table)],
              outputs=[tables / f"{s}.parquet" for s in ("train", "val", "test")]),
        Stage("ctcvr-scorer",
              lambda: ctcvr_train.main(["--table", str(tables / "train.parquet"), "--val", str(tables / "val.parquet"),
                                        "--output-dir", str(scorer), "--seed", str(seed)]),
              inputs=[tables / "train.parquet", tables / "val.parquet", *sources_of(ctcvr_train)],
              outputs=[scorer / "config.json", scorer / "metrics.json"]),
        Stage("ctcvr-evaluation",
              lambda: ctcvr_evaluate.main(["--model-dir", str(scorer), "--table", str(tables / "test.parquet"),
                                           "--output-dir", str(scorer_eval)]),
              inputs=[scorer / "config.json", tables / "test.parquet", *sources_of(ctcvr_evaluate)],
              outputs=[scorer_eval / "evaluation.json", scorer_eval / "reliability.png"]),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run the RELATE demo pipeline on the bundled sample records.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=Path("outputs/demo"), help="where every stage writes")
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="ad records (JSONL/CSV/parquet)")
    p.add_argument("--impressions", type=int, default=DEFAULT_IMPRESSIONS, help="simulated impressions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    args = p.parse_args(argv)
    stages = build_stages(args.output_dir, args.records, args.impressions, args.seed)
    run_stages(stages, args.output_dir, force=args.force)
    print("\noutputs:")
    for stage in stages:
        for path in stage.outputs:
            print(f"  {stage.name:<16} {path}")


if __name__ == "__main__":
    main()
