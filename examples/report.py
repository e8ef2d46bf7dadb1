"""The demo's report: ``report.md`` (and ``report.html`` when the ``markdown`` package is installed)
plus its plots in ``plots/``, from the files the earlier demo stages wrote.

Sections: settings and stage times; the CTCVR scorer's evaluation table and reliability plot; the
SFT cold start's loss; the per-component reward curves of the RELATE run (paper Figure 3 style);
Table 1 with one row per policy (starting model, SFT, RELATE from SFT) and 95% bootstrap
intervals, Table 3 and predicted vs simulated CTCVR, as ``relate_eval.evaluate`` wrote them;
example prompts where the three policies' ads differ.

Nothing here computes a metric: the numbers come from ``ctcvr_model.evaluate``,
``relate_eval.evaluate`` and verl's FileLogger files (``metrics.jsonl`` of each training job);
a missing file or section is an error naming it, never a silently shorter report. Every file is
written atomically.

    python -m examples.report --demo-dir outputs/demo     # rebuild the report of a finished demo
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relate_common import metric_names
from relate_common.jsonio import write_text_atomic

REWARD_CURVES = "reward_curves.png"
SCORER_RELIABILITY = "scorer_reliability.png"
PLOT_FILES = (REWARD_CURVES, SCORER_RELIABILITY)
# relate_eval.evaluate's evaluation.md sections copied into the report (heading prefixes).
EVALUATION_SECTIONS = ("Table 1", "Table 3", "Predicted vs simulated")
SFT_LOSS, SFT_VAL_LOSS = "train/loss", "val/loss"
FORMAT_METRIC = "format_ok_rate"  # relate_eval.evaluate's share of format-valid responses
N_EXAMPLES = 3


class ReportError(RuntimeError):
    """An input of the report is missing or not what the demo stages write."""


@dataclass(frozen=True)
class ReportInputs:
    """Files written by the earlier demo stages, and the settings to print."""

    scorer_eval_json: Path  # ctcvr_model.evaluate: evaluation.json
    scorer_reliability_png: Path  # ctcvr_model.evaluate: reliability.png
    sft_metrics: Path  # verl's FileLogger of the SFT job (examples/verl_jobs.py)
    relate_metrics: Path  # verl's FileLogger of the RELATE job
    generations: dict[str, Path]  # Table 1 row name -> relate_eval.generate output, in row order
    evaluation_json: Path  # relate_eval.evaluate with one --run per row, the first the baseline
    state_dir: Path | None = None  # where the stage markers are (stage times); None: no times
    stages: tuple[str, ...] = ()  # stage names in pipeline order (for the times table)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluation_md(self) -> Path:
        return self.evaluation_json.with_name("evaluation.md")


# ---- atomic writes ------------------------------------------------------------------------------


def _tmp_path(path: Path) -> Path:
    """A sibling temporary name with the same suffix (matplotlib picks the format from it)."""
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def copy_atomic(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


# ---- reading ------------------------------------------------------------------------------------


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ReportError(f"{path}: missing ({what}); run the demo stages before the report")
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(_require(path, what).read_text(encoding="utf-8"))
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({what}): {e}") from None


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(_require(path, what).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise ReportError(f"{path}:{n}: not valid JSON ({what}): {e}") from None
    if not rows:
        raise ReportError(f"{path}: no rows ({what})")
    return rows


def markdown_sections(text: str, source: Path, wanted: Sequence[str]) -> list[str]:
    """The ``## <heading>`` sections of ``text`` whose heading starts with each of ``wanted``,
    demoted to ``###``, in the order asked; ReportError names a missing one."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        if current is not None:
            current.append(line)
    out = []
    for prefix in wanted:
        match = [h for h in sections if h.startswith(prefix)]
        if not match:
            raise ReportError(f"{source}: no section '## {prefix}...' (found: {', '.join(sections) or 'none'})")
        body = sections[match[0]]
        out.append("\n".join(["#" + body[0], *body[1:]]).rstrip() + "\n")
    return out


# ---- plots --------------------------------------------------------------------------------------


def plots_module() -> Any:
    """``examples.plots`` (the shared curve plotter), imported on use."""
    import examples.plots

    return examples.plots


def curve_metrics(rows: list[dict[str, float]]) -> list[tuple[str, str]]:
    """(metric name, panel title): the total sentence reward, then every reward component logged in
    the paper's order (``reward_fns.config.COMPONENTS``); with diversity at token level (RELATE) the
    batch diversity score (eq. 4) stands in for the diversity component."""
    from reward_fns.config import COMPONENTS

    logged = {k for r in rows for k in r}
    components = sorted((k for k in logged if metric_names.component_of(k) is not None),
                        key=lambda k: (COMPONENTS.index(metric_names.component_of(k))
                                       if metric_names.component_of(k) in COMPONENTS else len(COMPONENTS), k))
    if not components:
        raise ReportError(f"the training log has no {metric_names.REWARD_PREFIX}<component> metrics: not a RELATE run")
    metrics = [(metric_names.SCORE_MEAN, "total sentence reward (r_i)")] if metric_names.SCORE_MEAN in logged else []
    metrics += [(k, f"{metric_names.component_of(k)} reward") for k in components]
    if metric_names.reward_metric("diversity") not in logged and metric_names.DIVERSITY_SCORE_MEAN in logged:
        metrics.append((metric_names.DIVERSITY_SCORE_MEAN, "diversity score (eq. 4; token-level credit)"))
    return metrics


def plot_reward_curves(rows: list[dict[str, float]], path: Path, run_name: str, policy: str) -> Path:
    """Figure 3 style: one panel per reward component (and the total), reward vs training step; the
    legend names the run, the title also the policy (a long name would cover the panels)."""
    tmp = _tmp_path(path)
    plots_module().plot_curves({run_name: rows}, curve_metrics(rows), tmp,
                               title=f"Training reward per component (batch mean), {run_name}\npolicy: {policy}",
                               x_key="step", x_label="training step")
    os.replace(tmp, path)
    return path


# ---- rendering ----------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def _fence(text: str) -> str:
    """``text`` in a fenced block that its own backticks cannot close."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text.rstrip() or '(empty response)'}\n{fence}"


def settings_section(inputs: ReportInputs) -> str:
    s = inputs.settings
    lines = ["## Settings", ""]
    if s:
        lines += ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s.items()]
    else:
        lines.append("(none recorded)")
    if inputs.state_dir is not None and inputs.stages:
        from examples.stages import stage_times

        times = stage_times(inputs.state_dir, [n for n in inputs.stages if n != "report"])
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
        lines += ["", f"Stage times, from the last completed run of each stage ({os.cpu_count()} CPUs; load average "
                  f"{load} when this report was written; the machine may be shared):", "",
                  "| stage | seconds |", "|---|---:|"]
        lines += [f"| {name} | {_fmt(t, '.1f')} |" for name, t in times.items()]
        done = [t for t in times.values() if t is not None]
        lines.append(f"| total | {sum(done):.1f} |")
    return "\n".join(lines) + "\n"


def scorer_section(inputs: ReportInputs, plot_name: str) -> str:
    from ctcvr_model.evaluate import markdown_table

    result = read_json(inputs.scorer_eval_json, "CTCVR scorer evaluation")
    return "\n".join([
        "## 1. CTCVR scorer (ESMM) on held-out queries", "",
        "The learned scorer the RL reward uses, with its two baselines and the simulator's truth (oracle) on the "
        "test split of the CTCVR tables (queries never seen in training).", "",
        markdown_table(result), "",
        f"![Reliability of the CTCVR scorer](plots/{plot_name})", ""])


def verl_metric_rows(path: Path, what: str) -> list[dict[str, float]]:
    """verl's FileLogger lines merged per step: ``[{"step": n, metric: value, ...}]`` in step order
    (verl writes a step's training and validation metrics as separate lines)."""
    from examples.cpu_run import read_metrics

    try:
        lines = read_metrics(_require(path, what))
    except ValueError as e:
        raise ReportError(f"{e} ({what})") from None
    by_step: dict[int, dict[str, float]] = {}
    for line in lines:
        by_step.setdefault(int(line["step"]), {"step": int(line["step"])}).update(line["data"])
    if not by_step:
        raise ReportError(f"{path}: no steps logged ({what})")
    return [by_step[k] for k in sorted(by_step)]


def sft_section(rows: list[dict[str, float]]) -> str:
    train = [r for r in rows if SFT_LOSS in r]
    if not train:
        raise ReportError(f"the SFT job logged no {SFT_LOSS}")
    val = [r for r in rows if SFT_VAL_LOSS in r]
    lines = ["## 2. SFT cold start (verl's SFT trainer on the CPU backend)", "",
             "The Qwen-SFT analogue: the starting model tuned on the RL prompts answered by the logged ads with the "
             "best posterior CTCVR (`data_prep/build_sft_dataset.py`).", "",
             "| step | train loss | val loss |", "|---:|---:|---:|"]
    lines += [f"| {int(r['step'])} | {_fmt(r.get(SFT_LOSS))} | {_fmt(r.get(SFT_VAL_LOSS))} |"
              for r in rows if SFT_LOSS in r or SFT_VAL_LOSS in r]
    if not val:
        lines += ["", "verl logged no validation loss for this run."]
    return "\n".join(lines) + "\n"


def curves_section(rows: list[dict[str, float]], plot_name: str) -> str:
    metrics = curve_metrics(rows)
    first, last = rows[0], rows[-1]
    lines = ["## 3. RELATE training curves (paper Figure 3 style)", "",
             f"![Per-component reward over training steps](plots/{plot_name})", "",
             f"Batch means of each reward component over {len(rows)} steps of verl's loop "
             f"(step {int(first['step'])} vs step {int(last['step'])}):", "",
             "| reward | first step | last step |", "|---|---:|---:|"]
    lines += [f"| {title} | {_fmt(first.get(key))} | {_fmt(last.get(key))} |" for key, title in metrics]
    return "\n".join(lines) + "\n"


def evaluation_sections(inputs: ReportInputs) -> str:
    md = _require(inputs.evaluation_md, "relate_eval.evaluate report").read_text(encoding="utf-8")
    rows = ", ".join(f"**{name}**" for name in inputs.generations)
    head = ["## 4. Table 1 and Table 3: starting model, SFT, RELATE from SFT", "",
            f"From `relate_eval.evaluate`, one row per policy ({rows}; the first is the baseline of every delta), "
            "the same val prompts, greedy decoding. Each figure has a 95% bootstrap interval over the val prompts. "
            "CTCVR \"predicted\" is the learned scorer (what the reward saw); \"simulated\" is the simulator's "
            "ground-truth user model: a predicted gain well above the simulated one is reward hacking.", ""]
    return "\n".join(head) + "\n" + "\n".join(markdown_sections(md, inputs.evaluation_md, EVALUATION_SECTIONS))


def pick_examples(sets: dict[str, list[dict[str, Any]]], k: int = N_EXAMPLES) -> list[str]:
    """Ids of up to ``k`` val prompts every set answered, those whose responses differ first (the first
    of each language in file order, then the next ones), then prompts with identical answers."""
    names = list(sets)
    by_id = {n: {r["id"]: r["response"] for r in rows} for n, rows in sets.items()}
    ids = [i for i in dict.fromkeys(r["id"] for r in sets[names[0]]) if all(i in by_id[n] for n in names)]
    if not ids:
        raise ReportError("no val prompt was answered by every policy")
    language = {r["id"]: r.get("language") for r in sets[names[0]]}
    differ = [i for i in ids if len({by_id[n][i] for n in names}) > 1]
    firsts = list(dict.fromkeys({language[i]: i for i in reversed(differ)}.values()))
    chosen = sorted(firsts[:k], key=ids.index)
    chosen += [i for i in differ if i not in chosen][:k - len(chosen)]
    chosen += [i for i in ids if i not in chosen][:k - len(chosen)]
    return sorted(chosen, key=ids.index)


def examples_section(inputs: ReportInputs) -> str:
    sets = {name: read_jsonl(path, f"generations of {name}") for name, path in inputs.generations.items()}
    scored_dir = inputs.evaluation_json.parent
    scores = {name: {r["id"]: r for r in read_jsonl(scored_dir / f"scored_{name}.jsonl", f"per-text scores ({name})")}
              for name in sets}
    by_id = {name: {r["id"]: r for r in rows} for name, rows in sets.items()}
    chosen = pick_examples(sets)
    same = sum(len({by_id[n][i]["response"] for n in sets}) == 1 for i in chosen)
    lines = [f"## 5. Example ads ({len(chosen)} val prompts, one ad per policy)", ""]
    if same:
        lines += [f"{same} of these prompts got the same ad from every policy (no prompt with differing ads was left).", ""]
    first = next(iter(sets))
    for n, rid in enumerate(chosen, start=1):
        rec = by_id[first][rid]
        points = rec.get("selling_points") or []
        points = points if isinstance(points, list) else [points]
        lines += [f"### Example {n}: `{rid}` ({rec.get('language')})", "",
                  f"- query: {rec.get('query')}", f"- bidword: {rec.get('bidword')}",
                  f"- selling points: {'; '.join(map(str, points))}", ""]
        for name in sets:
            sc = scores[name].get(rid, {})
            lines += [f"**{name}** (sentence reward {_fmt(sc.get('sentence_reward'), '.3f')}, CTCVR predicted "
                      f"{_fmt(_scale(sc.get('predicted_ctcvr')), '.4f')}%, simulated "
                      f"{_fmt(_scale(sc.get('simulated_ctcvr')), '.4f')}%, "
                      f"{'compliant' if sc.get('compliant') else 'not compliant'}):", "",
                      _fence(by_id[name][rid]["response"]), ""]
    return "\n".join(lines)


def _scale(x: Any) -> float | None:
    return None if x is None else 100.0 * float(x)


def run_metric(result: dict[str, Any], name: str, metric: str) -> dict[str, Any]:
    """``{"value", "ci95"}`` of one metric of one run in relate_eval.evaluate's evaluation.json."""
    from relate_eval.evaluate import run_result

    try:
        return run_result(result, name)["metrics"][metric]
    except KeyError as e:
        raise ReportError(f"evaluation.json: {e}") from None


def honest_note(result: dict[str, Any], inputs: ReportInputs) -> str:
    s = inputs.settings

    def fmt_ok(name: str) -> str:
        m = run_metric(result, name, FORMAT_METRIC)
        lo, hi = m["ci95"] or (None, None)
        return f"{name} {_fmt(m['value'], '.0%')} [{_fmt(lo, '.0%')}, {_fmt(hi, '.0%')}]"

    return ("> Read the numbers as they are: a CPU demo tunes for "
            f"{s.get('sft_steps', '?')} SFT steps of {s.get('sft_batch', '?')} ads and trains RELATE for "
            f"{s.get('steps', '?')} steps of {s.get('prompts_per_step', '?')} prompts x G={s.get('group_size', '?')} "
            "(the paper: 150 steps of 288 prompts x 5 on 8 GPUs). Share of val prompts answered in the two-line "
            f"format: {'; '.join(fmt_ok(name) for name in inputs.generations)}. Where an interval of a difference "
            "holds 0, the data do not separate the rows.\n")


def to_html(markdown_text: str, title: str) -> str | None:
    """The report as a standalone HTML page, or None when the ``markdown`` package is not installed."""
    try:
        import markdown
    except ImportError:
        return None
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def build_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write ``out_dir/plots/*.png``, ``out_dir/report.md`` (last) and ``report.html`` if possible."""
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    sft_rows = verl_metric_rows(inputs.sft_metrics, "SFT training metrics")
    rows = verl_metric_rows(inputs.relate_metrics, "RELATE training metrics")
    result = read_json(inputs.evaluation_json, "relate_eval.evaluate result")
    copy_atomic(_require(inputs.scorer_reliability_png, "scorer reliability plot"), plots / SCORER_RELIABILITY)
    plot_reward_curves(rows, plots / REWARD_CURVES, run_name="RELATE from SFT",
                       policy=str(inputs.settings.get("policy", "n/a")))

    title = "RELATE demo report"
    text = "\n".join([
        f"# {title}", "",
        "The SFT cold start and RELATE trained through verl's own trainers on the CPU backend, on the bundled "
        "sample records, against a learned ESMM CTCVR scorer; the simulator's ground-truth user model plays the "
        "online A/B test. Produced by `make demo` (`python -m examples.demo`).", "",
        f"**Policy: {inputs.settings.get('policy', 'n/a')}.**", "",
        honest_note(result, inputs),
        settings_section(inputs),
        scorer_section(inputs, SCORER_RELIABILITY),
        sft_section(sft_rows),
        curves_section(rows, REWARD_CURVES),
        evaluation_sections(inputs),
        examples_section(inputs),
    ])
    page = to_html(text, title)
    if page is not None:
        write_text_atomic(out_dir / "report.html", page)
    else:
        (out_dir / "report.html").unlink(missing_ok=True)  # never leave an older report's HTML beside a new .md
    return write_text_atomic(out_dir / "report.md", text)


def main(argv: list[str] | None = None) -> int:
    """Rebuild the report of a finished demo folder, with the budget its last report stage recorded."""
    from examples.demo import FULL, Budget, Layout, report_inputs
    from examples.stages import MARKER_PREFIX, MARKER_SUFFIX, read_marker

    p = argparse.ArgumentParser(prog="python -m examples.report",
                                description="Rebuild report.md / report.html / plots/ of a finished demo folder "
                                "(the demo's report stage does this itself).")
    p.add_argument("--demo-dir", type=Path, default=Path("outputs/demo"), help="the demo's --output-dir")
    args = p.parse_args(argv)
    recorded = read_marker(args.demo_dir / f"{MARKER_PREFIX}report{MARKER_SUFFIX}").get("params", {}).get("budget")
    budget = Budget(**recorded) if recorded else FULL
    path = build_report(report_inputs(Layout(args.demo_dir), budget), args.demo_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
