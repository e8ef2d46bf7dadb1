"""Compare the five local-mode ablation runs: paper Table 3 and a Figure 3 style plot.

    python -m examples.ablation.compare_local --runs-dir outputs/ablation_local
    python -m examples.ablation.compare_local --run model1=DIR1 ... --run relate=DIR5 --output-dir OUT
    python -m examples.ablation.compare_local --runs-dir outputs/ablation_local --no-eval   # training metrics only

Input: the five run folders of ``python -m recipe.relate.local_trainer`` with presets model1,
model2, model3, model4 and relate (paper Table 2), e.g. as ``examples/ablation/run_local_ablation.sh``
writes them: ``--runs-dir PARENT`` (subfolders named after the presets) and/or ``--run PRESET=DIR``.
Each folder needs ``metrics.csv`` and ``config.yaml``; the held-out evaluation also needs ``final/``.

Checks before anything is computed (each failure names the run and the file or key):

* every preset has a folder, and the folder's ``config.yaml`` trained that preset;
* the five configs are identical except ``relate.preset``, ``local.output_dir`` and
  ``trainer.experiment_name`` (same seed, data, step budget, starting model, hyper-parameters:
  the ablation's premise; ``--allow-config-diff`` downgrades this to a warning);
* every run finished: its last ``metrics.csv`` step is ``local.max_steps`` (``--allow-incomplete``
  compares unfinished runs at their last steps, e.g. to peek at a running ablation with --no-eval).

Table 3, two sources, both written:

1. HELD-OUT (the default and what the paper's Table 3 reports): each run's ``final/`` model
   (the policy after its last step) generates ads for the val split with
   ``recipe.relate.generate`` (greedy, one sample per prompt, the training response budget, by
   default), and ``recipe.relate.evaluate`` scores them: structural quality, CTCVR (%) predicted
   by the learned ESMM scorer (what the reward saw), diversity (eq. 12 within the set),
   semantic quality, every component computed whatever the preset; plus the simulator's
   ground-truth CTCVR (%), so that a CTCVR gain bought by hacking the scorer shows. The starting
   policy is evaluated the same way (``--initial-model``) as a step-0 reference row. Generations
   and evaluations are cached in the output folder and redone only when a model or a setting
   changed.
2. TRAINING (``--window`` last steps of ``metrics.csv``, always; the only one with ``--no-eval``):
   the same four metrics on the training batches (sampled rollouts of train prompts), from the
   reward manager's per-component means. A run only logs the components its preset computes, so
   Model 1 has no CTCVR and Models 1-3 no semantic quality there ("n/a", never a zero). Cheap,
   but one batch of a few prompts is noisy and the metrics of rewarded components are the ones
   being optimised.

Figure (``curves.png``): the four metrics over training steps, one line per run (training
metrics, as paper Figure 3 plots training rewards; a run without a metric shows "not in its
reward" in that subplot's legend).

Outputs in ``--output-dir`` (default RUNS_DIR/comparison): ``table3.md``, ``table3.json``,
``curves.png``, and with the held-out evaluation ``generations/<name>.jsonl`` and
``evaluation/<name>/evaluation.{md,json}``.

Exit codes: 0 ok; 2 a missing or inconsistent run, a missing metric, or a failed generation or
evaluation (the message names it).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # also runnable as a script: python examples/ablation/compare_local.py
    sys.path.insert(0, str(ROOT))

from relate_common.jsonio import jsonable, write_json  # noqa: E402 (after the path set-up above)

PRESETS = ("model1", "model2", "model3", "model4", "relate")
LABELS = {"model1": "Model 1", "model2": "Model 2", "model3": "Model 3", "model4": "Model 4", "relate": "RELATE"}
INITIAL = "initial"
INITIAL_LABEL = "Initial policy (step 0)"
# Table 3's columns: (key, header).
COLUMNS = (("structural_quality", "Structural Quality"), ("ctcvr_pct", "CTCVR(%)"), ("diversity", "Diversity"),
           ("semantic_quality", "Semantic Quality"))
# recipe.relate.evaluate's metric key of a COLUMNS key, where they differ.
EVALUATE_METRIC = {"ctcvr_pct": "predicted_ctcvr_pct"}
# Config keys that may (must) differ between the five runs.
VARYING_KEYS = ("relate.preset", "local.output_dir", "trainer.experiment_name")
# Training metrics.csv columns behind the four metrics (see recipe.relate.relate_trainer.relate_metrics).
STRUCTURAL_COLUMNS = {"length": "relate/reward/length", "format": "relate/reward/format"}
SEMANTIC_COLUMNS = {"relevance": "relate/reward/relevance", "correctness": "relate/reward/correctness",
                    "risk_blacklist": "relate/reward/risk_blacklist", "risk_judge": "relate/reward/risk_judge"}
CTCVR_COLUMN = "relate/predicted_ctcvr/mean"
DIVERSITY_COLUMN = "relate/diversity_score/mean"


class CompareError(Exception):
    """A missing or inconsistent run, metric or output; the message names it."""


# ---- runs -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished (or, with --allow-incomplete, running) local-mode run."""

    preset: str
    path: Path
    config: dict[str, Any]
    rows: list[dict[str, float]]
    active: list[str] = field(default_factory=list)  # reward components the preset computes in training

    @property
    def label(self) -> str:
        return LABELS[self.preset]

    @property
    def last_step(self) -> int:
        return int(max(r["step"] for r in self.rows))

    @property
    def max_steps(self) -> int:
        return int(self.config["local"]["max_steps"])


def run_folders(runs_dir: Path | None, pairs: Sequence[str]) -> dict[str, Path]:
    """{preset: folder} from --runs-dir (subfolders named after the presets) and --run PRESET=DIR."""
    folders: dict[str, Path] = {}
    if runs_dir is not None:
        if not runs_dir.is_dir():
            raise CompareError(f"--runs-dir {runs_dir}: not a folder")
        folders = {p: runs_dir / p for p in PRESETS}
    for pair in pairs:
        preset, sep, path = pair.partition("=")
        if not sep or preset not in PRESETS or not path:
            raise CompareError(f"--run {pair!r}: expected PRESET=DIR with PRESET one of {', '.join(PRESETS)}")
        folders[preset] = Path(path)
    missing = [p for p in PRESETS if p not in folders]
    if missing:
        raise CompareError(f"no run folder for {', '.join(missing)}: give --runs-dir PARENT or --run PRESET=DIR "
                           "for each of the five presets")
    return folders


def load_run(preset: str, path: Path) -> Run:
    """Read a run folder's config.yaml and metrics.csv; CompareError names what is missing."""
    from omegaconf import OmegaConf

    from examples.plots import read_metrics
    from recipe.relate.relate_config import split_relate_section

    if not path.is_dir():
        raise CompareError(f"run folder of {preset} not found: {path}")
    for name in ("config.yaml", "metrics.csv"):
        if not (path / name).is_file():
            raise CompareError(f"run {preset}: {path / name} not found (has the {preset} run started? "
                               "local_trainer writes it at the first step)")
    config = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=True)
    trained = (config.get("relate") or {}).get("preset")
    if trained != preset:
        raise CompareError(f"run {preset}: {path / 'config.yaml'} has relate.preset={trained!r}, not {preset!r}")
    rows = [r for r in read_metrics(path / "metrics.csv") if "step" in r and r["step"] >= 1]
    if not rows:
        raise CompareError(f"run {preset}: {path / 'metrics.csv'} has no training step")
    _, reward = split_relate_section(config["relate"])
    return Run(preset=preset, path=path, config=config, rows=rows, active=reward.active_components())


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': leaf} of a nested dict (lists are leaves)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _normalised(value: Any, own: Mapping[str, str]) -> str:
    """``value`` as JSON with the run's own values of varying keys (``own``) replaced by placeholders."""
    text = json.dumps(value, sort_keys=True, default=str)
    for key, string in own.items():
        text = text.replace(string, f"<{key}>")
    return text


def config_differences(runs: Mapping[str, Run]) -> list[str]:
    """'key: model1=..., model2=...' for every config key the runs disagree on, except VARYING_KEYS
    and values that differ only where they embed a varying key's value (interpolations such as
    trainer.default_local_dir = 'checkpoints/relate/${trainer.experiment_name}')."""
    flat = {p: flatten(r.config) for p, r in runs.items()}
    # The preset name alone ('relate') is too common a word to replace; the other varying values are not.
    own = {p: {k: f[k] for k in VARYING_KEYS[1:] if isinstance(f.get(k), str) and f[k]} for p, f in flat.items()}
    keys = sorted(set().union(*flat.values()) - set(VARYING_KEYS))
    out = []
    for key in keys:
        values = {p: flat[p].get(key, "<absent>") for p in runs}
        if len({_normalised(v, own[p]) for p, v in values.items()}) > 1:
            out.append(f"{key}: " + ", ".join(f"{p}={v!r}" for p, v in values.items()))
    return out


def check_runs(runs: Mapping[str, Run], allow_config_diff: bool, allow_incomplete: bool) -> list[str]:
    """The ablation's premises (see the module docstring); returns the warnings it downgraded."""
    warnings = []
    diffs = config_differences(runs)
    if diffs:
        msg = ("the runs' configs differ beyond the preset (an ablation changes one thing): " + "; ".join(diffs[:8])
               + (f"; ... ({len(diffs)} keys)" if len(diffs) > 8 else ""))
        if not allow_config_diff:
            raise CompareError(msg + " (--allow-config-diff to compare anyway)")
        warnings.append(msg)
    unfinished = [f"{p} at step {r.last_step} of local.max_steps={r.max_steps} ({r.path})"
                  for p, r in runs.items() if r.last_step < r.max_steps]
    if unfinished:
        msg = "unfinished runs: " + "; ".join(unfinished)
        if not allow_incomplete:
            raise CompareError(msg + " (rerun examples/ablation/run_local_ablation.sh: each run resumes from its "
                               "last checkpoint; or --allow-incomplete)")
        warnings.append(msg)
    steps = {p: r.last_step for p, r in runs.items()}
    if len(set(steps.values())) > 1:
        warnings.append("runs end at different steps: " + ", ".join(f"{p} {s}" for p, s in steps.items()))
    return warnings


# ---- training metrics -------------------------------------------------------------------------------


def training_point(run: Run, row: Mapping[str, float]) -> dict[str, float | None]:
    """The four Table 3 metrics of one metrics.csv row (None = not computed by this preset).

    Uses ``reward_fns.metrics.structural_quality`` / ``semantic_quality`` on the batch means of
    the components (the per-text mean of a linear combination is the combination of the means).
    A component the preset computes but the row lacks is an error naming the column.
    """
    from reward_fns.metrics import semantic_quality, structural_quality

    def column(component: str | None, key: str) -> float | None:
        expected = component is None or component in run.active
        value = row.get(key)
        if value is None or not math.isfinite(value):
            if expected and not (component == "risk_judge"):  # the judge runs only when configured
                raise CompareError(f"run {run.preset}: {run.path / 'metrics.csv'} step {int(row['step'])} has no "
                                   f"{key!r}, which the {run.preset} preset computes")
            return None
        return float(value) if expected else None

    structural = structural_quality({c: column(c, k) for c, k in STRUCTURAL_COLUMNS.items()})
    semantic = semantic_quality({c: column(c, k) for c, k in SEMANTIC_COLUMNS.items()})
    ctcvr = column("ctcvr", CTCVR_COLUMN)
    return {"step": float(row["step"]), "structural_quality": structural,
            "ctcvr_pct": None if ctcvr is None else 100.0 * ctcvr,
            "diversity": column(None, DIVERSITY_COLUMN), "semantic_quality": semantic}


def training_curve(run: Run) -> list[dict[str, float | None]]:
    """``training_point`` of every training step of the run, in step order."""
    return [training_point(run, row) for row in sorted(run.rows, key=lambda r: r["step"])]


def training_row(run: Run, curve: Sequence[Mapping[str, float | None]], window: int) -> dict[str, Any]:
    """Table 3 row from the last ``window`` training steps (mean of the finite values)."""
    last = list(curve)[-window:]
    row: dict[str, Any] = {"model": run.label, "preset": run.preset,
                           "steps": [int(p["step"]) for p in last]}
    for key, _ in COLUMNS:
        values = [p[key] for p in last if p[key] is not None]
        row[key] = sum(values) / len(values) if values else None
    return row


# ---- held-out evaluation ----------------------------------------------------------------------------


def _model_stamp(model: Path) -> dict[str, Any]:
    """Size and mtime of a model folder's files: the cache key of its generations."""
    return {p.name: [p.stat().st_size, round(p.stat().st_mtime, 3)] for p in sorted(model.iterdir()) if p.is_file()}


def _cached(sidecar: Path, key: dict[str, Any], outputs: Sequence[Path]) -> bool:
    if not sidecar.is_file() or not all(p.exists() for p in outputs):
        return False
    try:
        return json.loads(sidecar.read_text(encoding="utf-8")) == key
    except json.JSONDecodeError:
        return False


def _run_cached(label: str, sidecar: Path, key: dict[str, Any], output: Path, run: Callable[[], int],
                failure: str) -> None:
    """Run a CLI ``main`` unless ``output`` exists and ``sidecar`` holds the same ``key``; the
    sidecar is written only after success, so an interrupted run is redone."""
    if _cached(sidecar, key, [output]):
        print(f"{label}: cached ({output})", flush=True)
        return
    print(f"{label} ...", flush=True)
    t0 = time.perf_counter()
    sidecar.unlink(missing_ok=True)
    if run() != 0:
        raise CompareError(failure)
    sidecar.write_text(json.dumps(key, default=str), encoding="utf-8")
    print(f"{label}: {time.perf_counter() - t0:.1f} s", flush=True)


def evaluate_model(name: str, model: Path, preset: str, reward_section: Mapping[str, Any], out: Path,
                   args: argparse.Namespace, step: str) -> dict[str, Any]:
    """Generate with ``recipe.relate.generate`` and score with ``recipe.relate.evaluate`` (both
    in-process through their CLIs' ``main``); returns evaluate's ``experiment`` section."""
    import yaml

    from recipe.relate import evaluate as evaluate_cli
    from recipe.relate import generate as generate_cli
    from recipe.relate.relate_config import RECIPE_KEYS

    if not (model / "config.json").is_file():
        raise CompareError(f"{name}: no model in {model} (a finished run writes final/ after its last step)")
    generations = out / "generations" / f"{name}.jsonl"
    eval_dir = out / "evaluation" / name
    gen_argv = ["--model", str(model), "--data", str(args.data), "--n", str(args.n), "--output", str(generations),
                "--temperature", str(args.temperature), "--top-p", str(args.top_p),
                "--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
                "--seed", str(args.seed), *(["--limit", str(args.limit)] if args.limit else []), "--no-progress"]
    data_stat = Path(args.data).stat()
    gen_key = {"argv": gen_argv, "model": _model_stamp(model), "data": [data_stat.st_size, round(data_stat.st_mtime, 3)]}
    _run_cached(f"{step} generate {name}", generations.with_suffix(".settings.json"), gen_key, generations,
                lambda: generate_cli.main(gen_argv),
                f"{name}: recipe.relate.generate failed on {model} (its message is above)")

    eval_dir.mkdir(parents=True, exist_ok=True)
    reward_yaml = eval_dir / "reward_config.yaml"  # the run's own reward config (recipe keys dropped)
    reward_yaml.write_text(yaml.safe_dump({k: v for k, v in reward_section.items() if k not in RECIPE_KEYS}),
                           encoding="utf-8")
    eval_argv = ["--generations", str(generations), "--ctcvr-model", str(args.ctcvr_model), "--preset", preset,
                 "--config", str(reward_yaml), "--tokenizer", str(model), "--output-dir", str(eval_dir), "--quiet"]
    eval_key = {"argv": eval_argv, "generations": gen_key, "reward": reward_section,
                "ctcvr_model": _model_stamp(Path(args.ctcvr_model)) if Path(args.ctcvr_model).is_dir() else None}
    result = eval_dir / "evaluation.json"
    _run_cached(f"{step} evaluate {name}", eval_dir / "settings.json", eval_key, result,
                lambda: evaluate_cli.main(eval_argv),
                f"{name}: recipe.relate.evaluate failed on {generations} (its message is above)")
    return evaluate_cli.run_result(json.loads(result.read_text(encoding="utf-8")), "experiment")


def heldout_row(label: str, preset: str, experiment: Mapping[str, Any]) -> dict[str, Any]:
    """Table 3 row from evaluate's ``experiment`` run (its metrics' point values)."""
    m = {key: entry["value"] for key, entry in experiment["metrics"].items()}
    row = {"model": label, "preset": preset, **{key: m.get(EVALUATE_METRIC.get(key, key)) for key, _ in COLUMNS}}
    row["simulated_ctcvr_pct"] = m["simulated_ctcvr_pct"]
    row["texts"] = experiment["n"]
    row["format_ok_rate"] = m["format_ok_rate"]
    return row


def initial_model_path(spec: str, runs: Mapping[str, Run]) -> Path | None:
    """--initial-model: 'none', a folder, or 'auto' = the runs' actor_rollout_ref.model.path
    (null: SmolLM2-135M-Instruct, as local_trainer resolves it)."""
    if spec == "none":
        return None
    if spec != "auto":
        return Path(spec)
    path = next(iter(runs.values())).config["actor_rollout_ref"]["model"].get("path")
    if path in (None, "", "smollm2"):
        from relate_common.assets import smollm2_model_dir

        return Path(smollm2_model_dir())
    return Path(path)


# ---- output -----------------------------------------------------------------------------------------


def _fmt(value: Any, key: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.4f}" if key in ("ctcvr_pct", "simulated_ctcvr_pct") else f"{value:.3f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], extra: Sequence[tuple[str, str]] = (),
                   reference: Mapping[str, Any] | None = None) -> list[str]:
    """Table 3 layout (Model ID + the four metrics, then ``extra`` columns); ``reference`` is an
    italic row after the five."""
    columns = list(COLUMNS) + list(extra)
    lines = ["| Model ID | " + " | ".join(h for _, h in columns) + " |", "|---" + "|---:" * len(columns) + "|"]
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(_fmt(row.get(k), k) for k, _ in columns) + " |")
    if reference is not None:
        lines.append(f"| *{reference['model']}* | " + " | ".join(f"*{_fmt(reference.get(k), k)}*" for k, _ in columns)
                     + " |")
    return lines


def render_markdown(result: Mapping[str, Any]) -> str:
    """table3.md: the held-out table (when run), the training table, settings and warnings."""
    s = result["settings"]
    lines = ["# Local ablation: paper Table 3", ""]
    lines.append("Runs: " + ", ".join(f"{LABELS[p]} `{path}`" for p, path in s["runs"].items()) + ".")
    lines.append(f"Training steps: {', '.join(map(str, s['last_steps']))} (local.max_steps {s['max_steps']}); "
                 f"seed {s['seed']}; "
                 f"starting model `{s['model_path']}`.")
    lines.append("")
    held = result.get("heldout")
    if held:
        h = held["settings"]
        decoding = "greedy" if h["temperature"] == 0 else f"temperature {h['temperature']}, top-p {h['top_p']}"
        prompts = "all" if h["limit"] is None else f"the first {h['limit']}"
        lines += ["## Held-out (the paper's Table 3)", "",
                  f"Each run's `final/` model on `{h['data']}` ({held['rows'][0]['texts']} texts: "
                  f"{prompts} prompts x {h['n']}, {decoding}, "
                  f"max {h['max_new_tokens']} new tokens), scored by `recipe.relate.evaluate` with every component "
                  f"computed. CTCVR(%) is predicted by the learned scorer `{h['ctcvr_model']}` (what the reward saw); "
                  "CTCVR(%) simulated is the simulator's ground truth (fresh impressions): a predicted gain that the "
                  "simulator does not share is the scorer being hacked. Format ok: share of texts that parse as "
                  "title + description.", ""]
        lines += markdown_table(held["rows"], extra=(("simulated_ctcvr_pct", "CTCVR(%) simulated"),
                                                     ("format_ok_rate", "format ok")),
                                reference=held.get("initial"))
        lines.append("")
    t = result["training"]
    window = t["window"]
    lines += ["## Training batches" + (" (no held-out evaluation: --no-eval)" if not held else ""), "",
              f"The same metrics on the training rollouts (sampled, train prompts), "
              f"{'at the last step' if window == 1 else f'mean of the last {window} steps'}, from `metrics.csv`. "
              "n/a: the preset does not compute that component in training (Model 1 has no CTCVR scorer, "
              "Models 1-3 no semantic rewards).", ""]
    lines += markdown_table(t["rows"])
    lines += ["", f"Curves: `{result['figure']}`."]
    if result["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"


# ---- CLI --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m examples.ablation.compare_local",
        description="Paper Table 3 (structural quality, CTCVR, diversity, semantic quality per configuration) and "
        "Figure 3 style training curves for the five local-mode ablation runs (presets model1..model4, relate). "
        "The table's main source is a held-out evaluation of each run's final/ model on the val split "
        "(recipe.relate.generate + recipe.relate.evaluate); the same metrics on the training batches are always "
        "reported too. Full description: the module docstring.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="parent folder with one run folder per preset: model1 model2 model3 model4 relate")
    p.add_argument("--run", action="append", default=[], metavar="PRESET=DIR",
                   help="a run folder for one preset (repeat; overrides --runs-dir for that preset)")
    p.add_argument("--output-dir", type=Path, default=None, help="where table3.md/.json, curves.png and the "
                   "evaluation files go (default: RUNS_DIR/comparison; required without --runs-dir)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out generation and evaluation: the table "
                   "comes from the training metrics only (seconds instead of minutes)")
    p.add_argument("--window", type=int, default=1, help="training table: mean of the last K logged steps "
                   "(1 = the last step, as the paper's 'at step 150')")
    p.add_argument("--smoothing", type=float, default=0.0, help="EMA weight of the curves in [0, 1) (0: raw)")
    ev = p.add_argument_group("held-out evaluation (defaults from the runs' config.yaml)")
    ev.add_argument("--data", type=Path, default=None, help="RL parquet to generate on (default: data.val_files)")
    ev.add_argument("--ctcvr-model", type=Path, default=None, help="ctcvr_model folder that scores CTCVR "
                    "(default: relate.ctcvr_model_dir)")
    ev.add_argument("--limit", type=int, default=None, help="only the first K prompts of --data (default: all)")
    ev.add_argument("--n", type=int, default=1, help="samples per prompt")
    ev.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (as local mode's validation)")
    ev.add_argument("--top-p", type=float, default=1.0)
    ev.add_argument("--max-new-tokens", type=int, default=None, help="default: data.max_response_length")
    ev.add_argument("--batch-size", type=int, default=16, help="sequences per generate() call")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (irrelevant when greedy)")
    ev.add_argument("--initial-model", default="auto", help="also evaluate the starting policy as a step-0 "
                    "reference row: auto (the runs' actor_rollout_ref.model.path), a model folder, or none")
    p.add_argument("--allow-config-diff", action="store_true",
                   help="compare runs whose configs differ beyond the preset (warning instead of error)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="compare runs that stopped before local.max_steps at their last logged step")
    return p


def _steps_text(runs: Mapping[str, Run]) -> str:
    last = max(r.last_step for r in runs.values())
    return "step 1" if last == 1 else f"steps 1-{last}"


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Everything but argument parsing; returns the table3.json content (also written)."""
    from examples.plots import plot_curves

    if args.window < 1:
        raise CompareError("--window must be >= 1")
    folders = run_folders(args.runs_dir, args.run)
    out = args.output_dir or (args.runs_dir / "comparison" if args.runs_dir else None)
    if out is None:
        raise CompareError("--output-dir is required without --runs-dir")
    runs = {p: load_run(p, folders[p]) for p in PRESETS}
    warnings = check_runs(runs, args.allow_config_diff, args.allow_incomplete)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    first = runs[PRESETS[0]]

    curves = {p: training_curve(r) for p, r in runs.items()}
    training = {"window": args.window, "rows": [training_row(runs[p], curves[p], args.window) for p in PRESETS]}
    figure = plot_curves(
        {runs[p].label: curves[p] for p in PRESETS},
        [(key, label + (" (predicted)" if key == "ctcvr_pct" else "")) for key, label in COLUMNS],
        out / "curves.png",
        f"Table 3 metrics on the training batches, {_steps_text(runs)} (seed {first.config['local']['seed']})",
        smoothing=args.smoothing, x_label="training step",
        notes={runs[p].label: "not in its reward" for p in PRESETS})
    print(f"wrote {figure}")

    heldout = None
    if not args.no_eval:
        args.data = args.data or Path(first.config["data"]["val_files"])
        ctcvr = args.ctcvr_model or first.config["relate"].get("ctcvr_model_dir")
        if not ctcvr:
            raise CompareError("no CTCVR model: pass --ctcvr-model (the runs' relate.ctcvr_model_dir is empty)")
        args.ctcvr_model = Path(ctcvr)
        for name, path in (("--data", args.data), ("--ctcvr-model", args.ctcvr_model)):
            if not path.exists():
                raise CompareError(f"{name} {path}: not found")
        args.max_new_tokens = args.max_new_tokens or int(first.config["data"]["max_response_length"])
        initial = initial_model_path(args.initial_model, runs)
        jobs = [(p, runs[p].path / "final", p, runs[p].config["relate"]) for p in PRESETS]
        if initial is not None:
            jobs.append((INITIAL, initial, "relate", runs["relate"].config["relate"]))
        rows, t0 = {}, time.perf_counter()
        for i, (name, model, preset, section) in enumerate(jobs, start=1):
            rows[name] = evaluate_model(name, model, preset, section, out, args, f"[{i}/{len(jobs)}]")
        print(f"held-out evaluation: {time.perf_counter() - t0:.1f} s")
        heldout = {
            "settings": {"data": args.data, "ctcvr_model": args.ctcvr_model, "limit": args.limit, "n": args.n,
                         "temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                         "seed": args.seed, "initial_model": initial},
            "rows": [heldout_row(runs[p].label, p, rows[p]) for p in PRESETS],
            "initial": heldout_row(INITIAL_LABEL, INITIAL, rows[INITIAL]) if INITIAL in rows else None,
        }
    result = {
        "settings": {"runs": {p: runs[p].path for p in PRESETS}, "last_steps": sorted({r.last_step for r in runs.values()}),
                     "max_steps": first.max_steps, "seed": first.config["local"]["seed"],
                     "model_path": first.config["actor_rollout_ref"]["model"].get("path") or "SmolLM2-135M-Instruct"},
        "heldout": heldout,
        "training": training,
        "figure": figure,
        "warnings": warnings,
    }
    markdown = render_markdown(result)
    (out / "table3.md").write_text(markdown, encoding="utf-8")
    write_json(jsonable(result), out / "table3.json")
    print(markdown)
    print(f"wrote {out / 'table3.md'}, {out / 'table3.json'}, {figure}")
    return jsonable(result)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        compare(args)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
