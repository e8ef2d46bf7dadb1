"""Benchmark: one verl RL step on CPU (backend=cpu), split by phase, for each policy in one run.

    python benchmarks/bench_verl_cpu_step.py                                  # testbed beside SmolLM2, 4 steps each
    python benchmarks/bench_verl_cpu_step.py --policy testbed --steps 6       # the testbed alone
    python benchmarks/bench_verl_cpu_step.py --testbed-model outputs/demo/sft/final   # the demo's SFT'd testbed
    python benchmarks/bench_verl_cpu_step.py --policy tiny --poll-baseline    # also verl's fixed 2 s replay poll

Every run trains preset ``relate`` through ``recipe.relate.main_relate backend=cpu`` on the inputs
``examples/cpu_run.py prepare`` builds from the bundled sample (RL parquet, simulated impressions,
the CTCVR scorer, the starting policy: the testbed is built at its default size unless
``--testbed-model`` names one), at ``--prompts`` x ``--group`` responses per step (default 8 x 4), no checkpoints, no
validation. Each run is a fresh process; "init" is its wall time minus the sum of its step times.

Phases are verl's own step timers (``timing_s/*``, ``trainer/ppo/v1/trainer_base.py:565-611``):
``gen`` is the rollout through the agent loop, and the sentence reward is inside it (verl's
reward-loop workers score each response as soon as it is generated, while the others still
generate, and verl times no reward phase of its own on this path); ``old_log_prob``, ``ref``,
``adv`` (RELATE's batch credit assignment and the estimator), ``update_actor``,
``update_weights`` (actor -> rollout weight sync); ``rest`` is ``step`` minus their sum. Figures
are medians over steps 2..N (step 1 warms up); ``x first`` is each policy's step over the first's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PHASES = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights")


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (rc {proc.returncode}); log: {log}")
    return wall


def phase_row(steps: list[dict[str, float]]) -> dict[str, float]:
    """Median over steps 2..N of each phase, ``rest`` and ``step`` (seconds)."""
    steady = steps[1:]
    row = {p: statistics.median(s.get(f"timing_s/{p}", 0.0) for s in steady) for p in PHASES}
    row["rest"] = statistics.median(s["timing_s/step"] - sum(s.get(f"timing_s/{p}", 0.0) for p in PHASES)
                                    for s in steady)
    row["step"] = statistics.median(s["timing_s/step"] for s in steady)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", action="append", choices=("testbed", "smollm2", "tiny"), default=None,
                   help="policy to time; repeat for several (default: testbed, then smollm2)")
    p.add_argument("--testbed-model", type=Path, default=None,
                   help="a built (e.g. SFT'd) testbed folder to time instead of building one: outputs/demo/sft/final")
    p.add_argument("--steps", type=int, default=4, help="RL steps per run (default 4; >= 2)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8; even)")
    p.add_argument("--group", type=int, default=4, help="responses per prompt, G (default 4)")
    p.add_argument("--run-dir", type=Path, default=None, help="inputs and run folders (default: a temporary folder)")
    p.add_argument("--impressions", type=int, default=20000, help="simulated impressions for the CTCVR scorer")
    p.add_argument("--poll-baseline", action="store_true",
                   help="also run each policy with relate.replay_poll_interval_s=null (verl's fixed 2 s poll)")
    args = p.parse_args(argv)
    policies = args.policy or ["testbed", "smollm2"]
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (step 1 is a warm-up)")
    if args.prompts < 2 or args.prompts % 2:
        raise SystemExit("--prompts must be even (2-prompt PPO mini-batches)")

    from examples.cpu_run import prepare, read_metrics
    from verl_cpu.env import cpu_env

    root = (args.run_dir or Path(tempfile.mkdtemp(prefix="bench_verl_cpu_"))).resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sizes = [f"data.train_batch_size={args.prompts}", f"actor_rollout_ref.rollout.n={args.group}",
             f"trainer.total_training_steps={args.steps}", "trainer.save_freq=-1", "relate.preset=relate"]
    print(f"{args.steps} steps per run of {args.prompts} prompts x G={args.group}; runs in {root}", flush=True)
    results: dict[str, tuple[float, list[float], dict[str, float]]] = {}
    for policy in policies:
        inputs = prepare(root / policy, policy, args.impressions, seed=0,
                         model=args.testbed_model if policy == "testbed" else None)
        runs = [(policy, policy, [])]  # (row name, file name, extra overrides)
        if args.poll_baseline:
            runs.append((f"{policy}, 2 s poll", f"{policy}_poll2", ["relate.replay_poll_interval_s=null"]))
        for name, slug, extra in runs:
            metrics = root / f"{slug}_metrics.jsonl"
            wall = timed([sys.executable, "-m", "recipe.relate.main_relate", "backend=cpu", *inputs, *sizes,
                          f"trainer.default_local_dir={root / slug / 'checkpoints'}", *extra],
                         cpu_env({**env, "VERL_FILE_LOGGER_PATH": str(metrics)}), root / f"{slug}.log")
            steps = [row["data"] for row in read_metrics(metrics)]
            results[name] = (wall, [s["timing_s/step"] for s in steps], phase_row(steps))

    first = next(iter(results.values()))[2]["step"]
    cols = (*PHASES, "rest", "step")
    print(f"\n{'policy':<22} {'wall s':>7} {'init s':>7} " + " ".join(f"{c:>12}" for c in cols) + f" {'x first':>8}")
    for name, (wall, each, row) in results.items():
        print(f"{name:<22} {wall:>7.1f} {wall - sum(each):>7.1f} " + " ".join(f"{row[c]:>12.2f}" for c in cols)
              + f" {row['step'] / first:>8.2f}")
        print(f"{'':<22} steps (s): " + " ".join(f"{s:.1f}" for s in each))
    print("\nphase columns: median seconds over steps 2..N (verl's timing_s/*; the sentence reward runs inside gen); "
          "rest = step - phases; x first = step / the first policy's step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
