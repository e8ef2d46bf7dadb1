"""What ``examples/run_relate_cpu.sh`` runs around verl's loop: the inputs, then a summary.

``prepare``: the bundled sample through the real data pipeline into RUN_DIR (RL parquet, simulated
impressions, CTCVR tables, the CTCVR scorer, the starting policy), with the demo's stages (each
skipped when up to date, ``examples/stages.py``), and writes the Hydra overrides that point
``main_relate`` at them into ``RUN_DIR/overrides.txt`` (one per line).

``summary``: the per-step table of a run's ``metrics.jsonl`` (verl's FileLogger: one
``{"step": n, "data": {metric: value}}`` line per step).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from data_prep.config import SAMPLE_RECORDS
from examples.demo import FULL, SMOKE, Layout, build_stages, starting_model_dir
from examples.stages import run_stages
from relate_common import metric_names

POLICIES = ("smollm2", "tiny", "testbed")
PREPARE_STAGES = ("rl-dataset", "impression-logs", "ctcvr-tables", "ctcvr-scorer", "starting-model")
OVERRIDES_FILE = "overrides.txt"
# Columns of the summary: verl's names, then every per-component reward mean and penalised-token
# count of ours (recipe/relate/reward_manager.py, relate_trainer.py), then verl's timing.
SUMMARY_FIRST = (metric_names.SCORE_MEAN, "response_length/mean", "actor/pg_loss", "training/rollout_probs_diff_max")
SUMMARY_PREFIXES = (metric_names.REWARD_PREFIX, metric_names.PENALISED_TOKENS_PREFIX)
SUMMARY_LAST = ("timing_s/step",)


def prepare(run_dir: Path, policy: str, impressions: int, seed: int, model: Path | None = None) -> list[str]:
    """Build the run's inputs under ``run_dir``; return the Hydra overrides that use them. ``model``: a
    policy folder to start from instead of building ``policy``'s starting model."""
    # the smoke budget's small data, but the testbed at its full size: a 40-step testbed writes no ads
    budget = dataclasses.replace(SMOKE, policy=policy, impressions=impressions, testbed_steps=FULL.testbed_steps,
                                 testbed_recombined=FULL.testbed_recombined)
    wanted = [name for name in PREPARE_STAGES if model is None or name != "starting-model"]
    stages = [s for s in build_stages(run_dir, SAMPLE_RECORDS, budget, seed) if s.name in wanted]
    run_stages(stages, run_dir)
    layout = Layout(run_dir)
    return [
        f"actor_rollout_ref.model.path={model.resolve() if model is not None else starting_model_dir(budget, layout)}",
        f"data.train_files={layout.dataset / 'train.parquet'}",
        f"data.val_files={layout.dataset / 'val.parquet'}",
        f"relate.ctcvr_model_dir={layout.scorer}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
    ]


def read_metrics(path: Path) -> list[dict]:
    """The lines of a verl FileLogger file, in order (ValueError naming the line if one is not JSON)."""
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({err})") from err
    return rows


def summary(path: Path) -> str:
    """A fixed-width table: one row per logged step; the summary columns present in the file."""
    rows = read_metrics(path)
    names = sorted({m for row in rows for m in row["data"]})
    ours = [m for m in names if m.startswith(SUMMARY_PREFIXES)]
    present = [m for m in (*SUMMARY_FIRST, *ours, *SUMMARY_LAST) if m in names]
    lines = ["step  " + "  ".join(f"{m:>{max(len(m), 10)}}" for m in present)]
    for row in rows:
        cells = []
        for m in present:
            value = row["data"].get(m)
            cells.append(f"{'-' if value is None else f'{value:.4g}':>{max(len(m), 10)}}")
        lines.append(f"{row['step']:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.cpu_run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build the run's inputs and write RUN_DIR/overrides.txt")
    prep.add_argument("--run-dir", type=Path, required=True, help="the run's output folder (absolute paths are written)")
    prep.add_argument("--policy", choices=POLICIES, default="smollm2",
                      help="smollm2: SmolLM2-135M-Instruct (default); tiny: the 2-layer tiny test policy; "
                           "testbed: the testbed policy (python -m testbed), built at the demo's full size")
    prep.add_argument("--impressions", type=int, default=SMOKE.impressions,
                      help=f"simulated impressions for the CTCVR scorer (default {SMOKE.impressions})")
    prep.add_argument("--seed", type=int, default=0, help="data split / simulation / scorer seed (default 0)")
    summ = sub.add_parser("summary", help="print the per-step table of a metrics.jsonl")
    summ.add_argument("metrics", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "prepare":
        run_dir = args.run_dir.resolve()
        overrides = prepare(run_dir, args.policy, args.impressions, args.seed)
        (run_dir / OVERRIDES_FILE).write_text("".join(f"{o}\n" for o in overrides))
        print(f"[cpu_run] inputs ready; overrides in {run_dir / OVERRIDES_FILE}", flush=True)
        return 0
    print(summary(args.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
