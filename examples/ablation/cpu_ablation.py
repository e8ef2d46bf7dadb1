"""The paper's ablation (sec. 4.4: Table 2's five presets, Table 3, Figure 3) at testbed scale,
every run through verl's own loop on the CPU backend.

    python -m examples.ablation.cpu_ablation                        # the defaults (README: measured time)
    python -m examples.ablation.cpu_ablation --steps 40 --seeds 1 2 3 --output-dir outputs/ablation
    python -m examples.ablation.cpu_ablation --smoke --output-dir /tmp/ablation_smoke

(``bash examples/ablation/run_cpu_ablation.sh`` is the same with STEPS / SEEDS / OUT_DIR / SMOKE.)

Stages, each skipped when its outputs are up to date (``examples/stages.py``, the demo's rule):

1. the starting point, in ``--base-dir`` (default: the demo's folder, so ``make demo`` and the
   ablation share it; with ``--smoke`` the smoke demo's, ``outputs/demo-smoke``): the demo's stages up to its SFT cold start (RL dataset, simulated logs,
   CTCVR scorer, the testbed policy, verl SFT). Every preset starts from that SFT policy.
2. ``train-<preset>-seed<S>``: ``recipe.relate.main_relate backend=cpu`` with ``relate.preset``
   one of model1..model4, relate; every other setting is the demo's RL job
   (``examples.demo.relate_job``); the seed sets the data order (``data.seed``, verl
   trainer/ppo/utils.py:160-162) and the rollout's sampling seed (``actor_rollout_ref.rollout.seed``,
   verl_cpu/rollout.py). Two runs of one seed see the same prompts in the same order, but their
   samples are not draw-for-draw the same: the CPU rollout batches verl's concurrent requests as
   they arrive. ``relate.log_components=all`` logs every reward component of every
   preset (the reward itself is the preset's), so Figure 3 shows what Model 1 is not rewarded for.
   Runs start seed by seed, two at a time (``--runs-at-once``), so a first seed is complete before a second one is much under way.
3. ``generate-*``: greedy ads on the held-out (val) prompts by the SFT policy and by each run's
   final policy (``relate_eval.generate``, the demo's generation budget).
4. ``table3``: one scoring of every generation (``relate_eval.evaluate.score_runs``: every
   component, predicted and simulated CTCVR), aggregated over seeds by ``table3.py`` (mean, seed
   range, 95% bootstrap interval over prompts; the paper's findings as verdicts).
5. ``figure3``: each preset's per-component training reward per step, mean over seeds, seed range
   shaded (verl's FileLogger ``metrics.jsonl`` of each run).

Outputs under ``--output-dir`` (default outputs/ablation): ``table3.md``, ``table3.json``,
``figure3.png``, ``runs/<preset>-seed<S>/`` (verl's job folder: ``job.log``, ``metrics.jsonl``,
``final/``), ``generations/<run>.jsonl``, ``evaluation/scored_<run>.jsonl``.

Rerunning skips what is done; an interrupted training run resumes from verl's newest checkpoint
(``trainer.save_freq``: the demo's ``checkpoint_every``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import examples.demo as demo
import examples.verl_jobs as verl_jobs
from relate_common import metric_names
from data_prep.config import SAMPLE_RECORDS
from examples.ablation import table3 as t3
from examples.cli import override_at_least
from examples.stages import Stage, code_inputs, run_stages
from verl_cpu.threads import threads_per_process

PRESETS = ("model1", "model2", "model3", "model4", "relate")
LABELS = {"sft": "SFT (start of every run)", "model1": "Model 1", "model2": "Model 2", "model3": "Model 3",
          "model4": "Model 4", "relate": "RELATE"}
START = "sft"
DEFAULT_OUTPUT = Path("outputs/ablation")
SMOKE_BASE = Path("outputs/demo-smoke")  # make demo-smoke's folder (Makefile DEMO_SMOKE_DIR)
# Figure 3's panels: (metric of the training log, title). Diversity as the batch's eq. 4 score, which
# every preset logs (as a reward it is sentence-level in Models 3-4 and token-level in RELATE).
FIGURE3_METRICS = ((metric_names.SCORE_MEAN, "sentence reward r_i (the preset's own)"),
                   *((metric_names.reward_metric(c), f"{label} reward")
                     for c, label in (("length", "length"), ("format", "format"), ("ctcvr", "CTCVR"))),
                   (metric_names.DIVERSITY_SCORE_MEAN, "diversity score (eq. 4)"),
                   *((metric_names.reward_metric(c), f"{label} reward") for c, label in
                     (("relevance", "relevance"), ("correctness", "correctness"), ("risk_blacklist", "risk (blacklist)"))),
                   (metric_names.G_HIGH_SIZE, "|G_high| (high-frequency n-grams)"))
G_HIGH = metric_names.G_HIGH_SIZE
PENALISED = metric_names.PENALISED_TOKENS_DIVERSITY
SCORE = metric_names.SCORE_MEAN


@dataclass(frozen=True)
class AblationBudget:
    """The ablation's sizes: the demo budget of the starting point and the RL runs, steps and seeds."""

    base: demo.Budget  # data, scorer, testbed, SFT and every RL setting but the preset (examples/demo.py)
    steps: int  # RL steps per run (trainer.total_training_steps)
    seeds: tuple[int, ...]  # one run per preset and seed
    # Runs side by side, each with cores / runs_at_once torch threads: a verl run on CPU leaves the
    # cores idle much of its start-up (measured in the README), so two overlap well; three did not.
    runs_at_once: int = 2


# Sized from measured runs (README "Table 3 at testbed scale"): 10 runs of 50 steps, two at a time,
# 385-463 s a pair on 2 cores; 50.4 min from nothing.
DEFAULT = AblationBudget(base=demo.FULL, steps=50, seeds=(1, 2))
# Every stage at a tiny size: the demo's smoke starting point, 2 steps, one seed.
SMOKE = AblationBudget(base=demo.SMOKE, steps=2, seeds=(1,))


@dataclass(frozen=True)
class AblationLayout:
    """Where the ablation writes, under its output folder."""

    out: Path

    table3_md = property(lambda self: self.out / "table3.md")
    table3_json = property(lambda self: self.out / "table3.json")
    figure3 = property(lambda self: self.out / "figure3.png")
    evaluation = property(lambda self: self.out / "evaluation")

    def run_dir(self, name: str) -> Path:
        return self.out / "runs" / name

    def generations(self, name: str) -> Path:
        return self.out / "generations" / f"{name}.jsonl"


def run_name(preset: str, seed: int) -> str:
    return f"{preset}-seed{seed}"


def rl_budget(budget: AblationBudget) -> demo.Budget:
    return dataclasses.replace(budget.base, steps=budget.steps)


def ablation_job(budget: AblationBudget, base: demo.Layout, layout: AblationLayout, preset: str,
                 seed: int) -> verl_jobs.Job:
    """One run: the demo's RL job with another preset, folder and seed; nothing else differs (its
    torch threads are the cores' share of one of ``runs_at_once`` runs)."""
    job = demo.relate_job(rl_budget(budget), base, preset=preset, run_dir=layout.run_dir(run_name(preset, seed)),
                          extra=(f"data.seed={seed}", f"actor_rollout_ref.rollout.seed={seed}",
                                 "relate.log_components=all"))
    return dataclasses.replace(job, threads=threads_per_process(budget.runs_at_once))


def runs_of(budget: AblationBudget) -> list[tuple[str, int]]:
    """(preset, seed) of every run, seed by seed."""
    return [(p, s) for s in budget.seeds for p in PRESETS]


def base_stages(budget: AblationBudget, base_dir: Path, records: Path, cache: Path | None) -> list[Stage]:
    """The demo's stages up to and including its SFT cold start, writing in ``base_dir``."""
    stages = demo.build_stages(base_dir, records, budget.base, seed=0, embedding_cache=cache)
    names = [s.name for s in stages]
    return stages[: names.index("sft-train") + 1]


def ablation_stages(budget: AblationBudget, base_dir: Path, out: Path) -> list[Stage]:
    """Training, generation, Table 3 and Figure 3 stages (state in ``out``)."""
    import examples.plots
    import relate_eval.evaluate as evaluate_mod

    base, layout = demo.Layout(base_dir), AblationLayout(out)
    rl = rl_budget(budget)
    inputs = demo.relate_inputs(base)
    sft_final = verl_jobs.Job("sft", base.sft_run, ()).final
    stages, jobs = [], {}
    for preset, seed in runs_of(budget):
        name = run_name(preset, seed)
        job = jobs[name] = ablation_job(budget, base, layout, preset, seed)
        stages.append(Stage(f"train-{name}", (lambda j=job: verl_jobs.run_job(j, inputs)), inputs=inputs,
                            outputs=[*demo.hf_files(job.final), job.metrics], params={"argv": job.argv()[1:]}))
    policies = {START: sft_final, **{name: job.final for name, job in jobs.items()}}
    stages += [demo.generation_stage(f"generate-{name}", model, base, rl, layout.generations(name))
               for name, model in policies.items()]
    generations = [layout.generations(name) for name in policies]
    stages.append(Stage("table3", lambda: write_table3(budget, base, layout, list(jobs)),
                        inputs=[*generations, *(j.metrics for j in jobs.values()), base.scorer / "config.json",
                                base.scorer / "model.safetensors",
                                *code_inputs(t3, evaluate_mod), Path(__file__)],
                        outputs=[layout.table3_md, layout.table3_json], params={"seeds": list(budget.seeds)}))
    stages.append(Stage("figure3", lambda: write_figure3(budget, layout, jobs),
                        inputs=[*(j.metrics for j in jobs.values()), *code_inputs(examples.plots), Path(__file__)],
                        outputs=[layout.figure3], params={"seeds": list(budget.seeds)}))
    return stages


# ---- Table 3 --------------------------------------------------------------------------------------


def training_summary(job: verl_jobs.Job) -> dict[str, Any]:
    """What a run did in training: steps, mean |G_high| and penalised diversity tokens, reward first/last 10."""
    from examples.report import verl_metric_rows

    rows = verl_metric_rows(job.metrics, f"training log of {job.run_dir.name}")

    def mean(key: str, part: Sequence[dict]) -> float | None:
        vals = [float(r[key]) for r in part if key in r]
        return sum(vals) / len(vals) if vals else None

    k = min(10, len(rows))
    return {"steps": len(rows), "g_high_mean": mean(G_HIGH, rows), "penalised_diversity_tokens_mean": mean(PENALISED, rows),
            "score_first": mean(SCORE, rows[:k]), "score_last": mean(SCORE, rows[-k:])}


def write_table3(budget: AblationBudget, base: demo.Layout, layout: AblationLayout, run_names: list[str]) -> int:
    """Score every generation once, aggregate over seeds, write table3.md / table3.json."""
    import numpy as np

    from relate_eval.evaluate import EvaluationError, per_text_values, record_index, score_runs
    from relate_eval.render import scored_rows
    from relate_common.jsonio import jsonable, write_json, write_jsonl, write_text_atomic

    names = [START, *run_names]
    try:
        scored = score_runs([(n, str(layout.generations(n))) for n in names], base.scorer, preset="relate")
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sets = dict(zip(names, scored.sets))
    ids, _ = record_index(sets[START].records, list(range(len(sets[START].records))))
    position = {rid: k for k, rid in enumerate(ids)}
    sums: dict[str, dict[str, list[t3.SeedSums]]] = {}
    for name, es in sets.items():
        missing = set(ids) - {r.id for r in es.records}
        if missing or any(r.id not in position for r in es.records):
            print(f"error: {es.path}: covers other prompts than {sets[START].path} (e.g. {sorted(missing)[:3]})",
                  file=sys.stderr)
            return 2
        row = START if name == START else name.rsplit("-seed", 1)[0]
        rec_of_text = np.asarray([position[r.id] for r in es.records], dtype=np.int64)
        values = per_text_values(es)
        for metric, _ in t3.COLUMNS:
            sums.setdefault(row, {}).setdefault(metric, []).append(t3.seed_sums(values[metric], rec_of_text, len(ids)))
        layout.evaluation.mkdir(parents=True, exist_ok=True)
        write_jsonl(jsonable(scored_rows(es)), layout.evaluation / f"scored_{name}.jsonl")
    training = {name: training_summary(verl_jobs.Job("relate", layout.run_dir(name), ())) for name in run_names}
    g_high = {p: float(np.mean([training[run_name(p, s)]["g_high_mean"] or 0.0 for s in budget.seeds])) for p in PRESETS}
    result = t3.table3(sums, len(ids), g_high=g_high)
    result.update(settings={**dataclasses.asdict(budget), "evaluation": scored.settings}, training=training,
                  g_high_mean=g_high)
    write_json(jsonable(result), layout.table3_json)
    write_text_atomic(layout.table3_md, render_table3(budget, result))
    print(layout.table3_md.read_text(encoding="utf-8"))
    return 0


def render_table3(budget: AblationBudget, result: dict[str, Any]) -> str:
    rl = rl_budget(budget)
    lines = ["# Table 3 at testbed scale (paper sec. 4.4), through verl's loop on CPU", "",
             f"- policy: {demo.POLICY_NAMES.get(rl.policy, rl.policy)}; every run starts from its SFT checkpoint",
             f"- {len(PRESETS)} presets x seeds {list(budget.seeds)}; {rl.steps} RL steps of {rl.prompts_per_step} prompts "
             f"x G={rl.group_size}, lr {rl.rl_lr:g}; the same data, settings and seeds in every preset",
             f"- held-out: greedy ads on {result['records']} val prompts by each final policy; every component scored "
             "(relate_eval.evaluate), CTCVR(%) predicted by the learned scorer and simulated by the ground-truth "
             "user model",
             "- cells: mean over seeds (seed range; 95% bootstrap interval over prompts, 1000 resamples)", ""]
    lines.append(t3.render(result, LABELS))
    lines += ["", "Verdicts: `reproduced` = the paired difference's interval excludes 0 on the paper's side and "
              "every seed agrees; `opposite` = the same on the other side; `not separated` = otherwise; "
              "`not testable at this size` = G_high stayed empty in training.", "",
              "Training (per run): steps, mean |G_high| per step, mean penalised diversity tokens per response, "
              "batch sentence reward (mean of the first and last 10 steps):", ""]
    for name, t in result["training"].items():
        def f(x: Any) -> str:
            return "n/a" if x is None else f"{x:.3f}"
        lines.append(f"- {name}: {t['steps']} steps; |G_high| {f(t['g_high_mean'])}; penalised tokens "
                     f"{f(t['penalised_diversity_tokens_mean'])}; reward {f(t['score_first'])} -> {f(t['score_last'])}")
    return "\n".join(lines) + "\n"


# ---- Figure 3 -------------------------------------------------------------------------------------


def write_figure3(budget: AblationBudget, layout: AblationLayout, jobs: dict[str, verl_jobs.Job]) -> Path:
    """Each preset's training curves: mean over seeds, the seeds' range shaded."""
    import os

    from examples.plots import plot_curves, seed_bands
    from examples.report import verl_metric_rows

    keys = [k for k, _ in FIGURE3_METRICS]
    means, bands = {}, {}
    for preset in PRESETS:
        rows = [verl_metric_rows(jobs[run_name(preset, s)].metrics, f"training log of {run_name(preset, s)}")
                for s in budget.seeds]
        means[LABELS[preset]], bands[LABELS[preset]] = seed_bands(rows, keys)
    tmp = layout.figure3.with_name(f"figure3.tmp{os.getpid()}.png")
    plot_curves(means, FIGURE3_METRICS, tmp, columns=3, bands=bands, x_label="training step",
                title=f"Figure 3 at testbed scale: training rewards per preset (mean over seeds {list(budget.seeds)}, "
                      "range shaded)\npolicy: the testbed (a stand-in for RL on a CPU, not a model to deploy)")
    os.replace(tmp, layout.figure3)
    return layout.figure3


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m examples.ablation.cpu_ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", type=Path, default=None,
                   help=f"where the runs, tables and plot go (default: {DEFAULT_OUTPUT}; with --smoke "
                        "outputs/ablation-smoke)")
    p.add_argument("--base-dir", type=Path, default=None,
                   help=f"the starting point's folder: the demo's stages up to SFT (default: {demo.DEFAULT_OUTPUT}, "
                        f"shared with make demo; with --smoke {SMOKE_BASE}, shared with make demo-smoke)")
    p.add_argument("--records", type=Path, default=SAMPLE_RECORDS, help="ad records (default: the bundled sample)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"RL steps per run (default {DEFAULT.steps}; {SMOKE.steps} with --smoke)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"seeds, one run per preset each (default {' '.join(map(str, DEFAULT.seeds))}; "
                        f"{' '.join(map(str, SMOKE.seeds))} with --smoke)")
    p.add_argument("--runs-at-once", type=int, default=None,
                   help=f"verl runs side by side, the cores split between them (default {DEFAULT.runs_at_once})")
    p.add_argument("--smoke", action="store_true", help="every stage tiny: the demo's smoke starting point, "
                   f"{SMOKE.steps} steps, seed {SMOKE.seeds[0]} (the test suite runs this)")
    p.add_argument("--embedding-cache", default=None,
                   help="sentence-embedding cache of the CTCVR scorer (default: the demo's; 'none': no cache)")
    p.add_argument("--force", action="store_true", help="rerun every ablation stage (not the starting point)")
    return p


def resolve(args: argparse.Namespace) -> tuple[AblationBudget, Path, Path]:
    """(budget, output dir, base dir) from the command line."""
    budget = SMOKE if args.smoke else DEFAULT
    budget = override_at_least(budget, "steps", args.steps, 1)
    budget = override_at_least(budget, "runs_at_once", args.runs_at_once, 1)
    if args.seeds is not None:
        if len(set(args.seeds)) != len(args.seeds):
            raise SystemExit(f"error: --seeds must be distinct, got {args.seeds}")
        budget = dataclasses.replace(budget, seeds=tuple(args.seeds))
    out = args.output_dir or (Path("outputs/ablation-smoke") if args.smoke else DEFAULT_OUTPUT)
    base = args.base_dir or (SMOKE_BASE if args.smoke else demo.DEFAULT_OUTPUT)
    return budget, out, base


@dataclass(frozen=True)
class AblationRun:
    """One invocation: the budget, where it writes, the starting point's folder and inputs."""

    budget: AblationBudget = DEFAULT
    output_dir: Path = DEFAULT_OUTPUT
    base_dir: Path = demo.DEFAULT_OUTPUT
    records: Path = SAMPLE_RECORDS
    embedding_cache: Path | None = None  # the CTCVR scorer's embedding cache (None: none)
    force: bool = False  # rerun every ablation stage (not the starting point)


def run(job: AblationRun) -> int:
    """The starting point's stages, then the runs, generations, Table 3 and Figure 3; 130 on Ctrl-C."""
    budget, out, base = job.budget, job.output_dir, job.base_dir
    print(f"[ablation] steps {budget.steps}, seeds {list(budget.seeds)}, {budget.runs_at_once} run(s) at once, "
          f"output {out}, starting point {base}", flush=True)
    try:
        print("[ablation] the starting point (the demo's stages up to SFT):", flush=True)
        run_stages(base_stages(budget, base, job.records, job.embedding_cache), base)
        print("[ablation] the runs, generations, Table 3 and Figure 3:", flush=True)
        run_stages(ablation_stages(budget, base, out), out, force=job.force, at_once=budget.runs_at_once)
    except KeyboardInterrupt:
        print("[ablation] interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    layout = AblationLayout(out)
    print(f"\nTable 3: {layout.table3_md}\nFigure 3: {layout.figure3}")
    summary = json.loads(layout.table3_json.read_text(encoding="utf-8"))
    for f in summary["findings"]:
        print(f"  {f['verdict']:<26} {f['claim']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budget, out, base = resolve(args)
    return run(AblationRun(budget=budget, output_dir=out, base_dir=base, records=args.records,
                           embedding_cache=demo.resolve_embedding_cache(args.embedding_cache), force=args.force))


if __name__ == "__main__":
    sys.exit(main())
