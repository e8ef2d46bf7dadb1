"""``python -m testbed``: build the testbed policy, and probe what a policy writes on held-out prompts.

    python -m testbed build --output outputs/testbed                 # the bundled records, defaults of testbed.config
    python -m testbed build --output /tmp/tb --steps 40 --recombined 30   # a tiny one (tests)
    python -m testbed probe --model outputs/testbed --data outputs/demo/dataset/val.parquet --samples 4

The testbed is a stand-in policy for CPU runs, not a model to deploy: see testbed/README.md.
Exit codes: 0 ok; 2 invalid input (the message names the file, row and field).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from data_prep.config import SAMPLE_RECORDS
from testbed.config import TestbedConfig


def build_parser() -> argparse.ArgumentParser:
    d = TestbedConfig()
    p = argparse.ArgumentParser(prog="python -m testbed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the testbed from the records and save a Hugging Face model folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--output", type=Path, required=True, help="model folder to write (replaced if present)")
    b.add_argument("--records", type=Path, default=None,
                   help="ad records (JSONL / CSV / parquet); default: the bundled sample. Val records "
                        "(by the RL set's split rule) never enter the corpus")
    b.add_argument("--seed", type=int, default=d.seed, help="corpus, weights and batch order")
    b.add_argument("--steps", type=int, default=d.pretrain.steps, help="pre-training steps")
    b.add_argument("--recombined", type=int, default=d.pretrain.recombined_records,
                   help="made-up records in the corpus (one ad per simulator variant each; testbed.corpus)")
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    q = sub.add_parser("probe", help="format-valid and fact-copying shares of a policy's ads on an RL parquet",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    q.add_argument("--model", type=Path, required=True, help="Hugging Face model folder")
    q.add_argument("--data", type=Path, required=True, help="verl RL parquet (data_prep/build_dataset.py), e.g. val.parquet")
    q.add_argument("--samples", type=int, default=4, help="sampled responses per prompt (temperature 1) beside the greedy one")
    q.add_argument("--max-new-tokens", type=int, default=96, help="generation budget per response")
    q.add_argument("--output", type=Path, default=None, help="also write the figures as JSON here")
    return p


@dataclass(frozen=True)
class BuildRun:
    """``build``: train the testbed (``testbed`` sizes) from ``records`` into the model folder ``output``."""

    output: Path
    records: Path = SAMPLE_RECORDS
    testbed: TestbedConfig = TestbedConfig()
    progress: bool = True


@dataclass(frozen=True)
class ProbeRun:
    """``probe``: greedy and ``samples`` sampled ads per prompt of the RL parquet ``data`` by ``model``."""

    model: Path
    data: Path
    samples: int = 4
    max_new_tokens: int = 96
    output: Path | None = None  # also write the figures as JSON here


def run_build(run: BuildRun) -> int:
    from relate_common.records import RecordError, load_records
    from testbed.build import build_testbed

    config = run.testbed
    if config.pretrain.steps < 1 or config.pretrain.recombined_records < 0:
        print("error: --steps must be >= 1 and --recombined >= 0", file=sys.stderr)
        return 2
    try:
        records, _ = load_records(run.records)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = build_testbed(records, run.output, config, progress=run.progress)
    c, t = report["corpus"], report["timings"]
    print(f"testbed: {report['parameters']:,} parameters, vocabulary {report['vocab_size']}; corpus {c['pairs']} pairs "
          f"({c['records']} records), prompt {c['mean_prompt_tokens']:.0f} / ad {c['mean_ad_tokens']:.0f} tokens mean, "
          f"{c['dropped_over_max_length']} pairs over {config.pretrain.max_length} tokens left out; "
          f"{c['copied_ad_token_share']:.1%} of ad tokens copy the prompt")
    print(f"loss {report['loss_first']:.3f} -> {report['loss_last_50']:.3f} (mean of the last 50 steps); corpus "
          f"{t['corpus_s']:.1f} s, tokenizer {t['tokenizer_s']:.1f} s, pre-training {t['pretrain_s']:.1f} s")
    print("copy supervision (mean of the last 50 steps): " + ", ".join(
        f"{k.replace('_', ' ')} {v:.3f}" for k, v in report["copy_losses_last_50"].items()))
    print(f"wrote {run.output}")
    return 0


def run_probe(run: ProbeRun) -> int:
    from relate_eval.generate import load_policy
    from relate_common.rl_row import read_rl_parquet
    from relate_common.jsonio import write_json
    from relate_common.records import RecordError
    from testbed.probe import format_probe, probe_rows, sample_ads

    if run.samples < 1 or run.max_new_tokens < 1:
        print("error: --samples and --max-new-tokens must be >= 1", file=sys.stderr)
        return 2
    if not run.model.is_dir():
        print(f"error: --model {run.model}: not a model folder", file=sys.stderr)
        return 2
    try:
        rows = read_rl_parquet(run.data)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model, tokenizer = load_policy(str(run.model), device="cpu")
    messages, records = [r.messages for r in rows], [r.record for r in rows]
    greedy = sample_ads(model, tokenizer, messages, n=1, temperature=0.0, max_new_tokens=run.max_new_tokens)
    sampled = sample_ads(model, tokenizer, messages, n=run.samples, temperature=1.0, max_new_tokens=run.max_new_tokens)
    figures = {"greedy": probe_rows(records, greedy), "sampled": probe_rows(records, sampled)}
    print(format_probe(figures["greedy"], f"{run.model}: greedy, {len(records)} prompts of {run.data}"))
    print()
    print(format_probe(figures["sampled"], f"{run.samples} samples per prompt at temperature 1 (first sample's shares)"))
    if run.output is not None:
        write_json(figures, run.output)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        return run_probe(ProbeRun(model=args.model, data=args.data, samples=args.samples,
                                  max_new_tokens=args.max_new_tokens, output=args.output))
    d = TestbedConfig()
    testbed = dataclasses.replace(d, seed=args.seed, pretrain=dataclasses.replace(
        d.pretrain, steps=args.steps, recombined_records=args.recombined, threads=args.threads))
    return run_build(BuildRun(output=args.output, records=args.records or SAMPLE_RECORDS, testbed=testbed,
                              progress=not args.no_progress))


if __name__ == "__main__":
    sys.exit(main())
