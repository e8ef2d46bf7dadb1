"""Benchmark: verl's own loop on CPU (backend=cpu) beside local mode, same model, prompts and G.

    python benchmarks/bench_verl_cpu_step.py                     # tiny policy, 3 steps each
    python benchmarks/bench_verl_cpu_step.py --policy smollm2 --steps 3
    python benchmarks/bench_verl_cpu_step.py --poll-baseline     # also verl with its fixed 2 s replay poll

Both runs train preset ``relate`` on the inputs ``examples/cpu_run.py prepare`` builds (the bundled
sample through the real pipeline), at backend=cpu's step sizes (4 prompts x G=4, 96 new tokens,
2 prompts per update, 2 responses per micro-batch; local mode is given the same as overrides), no
checkpoints and no validation. Each run is a
fresh process; its wall time minus the sum of its step times is reported as "init" (start-up,
model loading, shutdown). Per-step times are the runs' own ``timing_s/step`` (verl's FileLogger,
local mode's metrics.csv); the steady-state figure is the mean over steps 2..N (step 1 warms up).
Goal of the CPU backend: verl step <= 1.5x the local-mode step.
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

SHARED_SIZES = ("data.train_batch_size", "data.max_response_length", "actor_rollout_ref.rollout.n",
                "actor_rollout_ref.actor.ppo_mini_batch_size", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
                "actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.actor.use_kl_loss")


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (rc {proc.returncode}); log: {log}")
    return wall


def sizes(config) -> dict[str, object]:
    from omegaconf import OmegaConf

    return {key: OmegaConf.select(config, key) for key in SHARED_SIZES}


def verl_step_sizes() -> dict[str, object]:
    """The step sizes of backend=cpu; local mode runs with the same (passed as overrides)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "recipe/relate/config"), version_base=None):
        return sizes(compose(config_name="relate_trainer", overrides=["backend=cpu"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", choices=("tiny", "smollm2"), default="tiny", help="starting policy (default tiny)")
    p.add_argument("--steps", type=int, default=3, help="RL steps per run (default 3; >= 2)")
    p.add_argument("--run-dir", type=Path, default=None, help="inputs and run folders (default: a temporary folder)")
    p.add_argument("--impressions", type=int, default=20000, help="simulated impressions for the CTCVR scorer")
    p.add_argument("--poll-baseline", action="store_true",
                   help="also run verl with relate.replay_poll_interval_s=null (verl's fixed 2 s poll)")
    args = p.parse_args(argv)
    if args.steps < 2:
        raise SystemExit("--steps must be >= 2 (step 1 is a warm-up)")

    from examples.cpu_run import OVERRIDES_FILE, prepare, read_metrics
    from recipe.relate.local_trainer import METRICS_CSV, read_metrics_csv
    from verl_cpu.env import cpu_env

    step_sizes = verl_step_sizes()
    root = args.run_dir or Path(tempfile.mkdtemp(prefix="bench_verl_cpu_"))
    root = root.resolve()
    inputs = prepare(root, args.policy, args.impressions, seed=0)
    (root / OVERRIDES_FILE).write_text("".join(f"{o}\n" for o in inputs))
    common = [o for o in inputs if not o.startswith("trainer.default_local_dir=")] + ["relate.preset=relate"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print(f"policy {args.policy}; {args.steps} steps per run; sizes {step_sizes}; runs in {root}", flush=True)

    results: dict[str, tuple[float, list[float]]] = {}
    local_dir = root / "local"
    same_sizes = [f"{key}={value}" for key, value in step_sizes.items()]
    wall = timed([sys.executable, "-m", "recipe.relate.local_trainer", *common, *same_sizes, f"local.output_dir={local_dir}",
                  f"local.max_steps={args.steps}", "local.checkpoint_every=0", "local.val_every=0",
                  "local.export_final=false", "local.tensorboard=false", "local.resume=false", "local.progress=false"],
                 env, root / "local.log")
    results["local mode"] = (wall, [row["timing_s/step"] for row in read_metrics_csv(local_dir / METRICS_CSV)])

    verl_runs = {"verl backend=cpu": []}
    if args.poll_baseline:
        verl_runs["verl backend=cpu, 2 s poll"] = ["relate.replay_poll_interval_s=null"]
    for name, extra in verl_runs.items():
        slug = "verl_poll2" if extra else "verl"
        metrics = root / f"{slug}_metrics.jsonl"
        wall = timed([sys.executable, "-m", "recipe.relate.main_relate", "backend=cpu", *common,
                      f"trainer.total_training_steps={args.steps}", "trainer.save_freq=-1",
                      f"trainer.default_local_dir={root / slug / 'checkpoints'}", *extra],
                     cpu_env({**env, "VERL_FILE_LOGGER_PATH": str(metrics)}), root / f"{slug}.log")
        results[name] = (wall, [row["data"]["timing_s/step"] for row in read_metrics(metrics)])

    base = statistics.mean(results["local mode"][1][1:])
    print(f"\n{'run':<28} {'wall s':>8} {'init s':>8}  {'step s (each)':<28} {'steady s':>9} {'x local':>8}")
    for name, (wall, steps) in results.items():
        steady = statistics.mean(steps[1:])
        each = " ".join(f"{s:.1f}" for s in steps)
        print(f"{name:<28} {wall:>8.1f} {wall - sum(steps):>8.1f}  {each:<28} {steady:>9.1f} {steady / base:>8.2f}")
    print("\nsteady = mean timing_s/step of steps 2..N; init = wall - sum of step times; x local = steady / local mode's steady")
    return 0


if __name__ == "__main__":
    sys.exit(main())
