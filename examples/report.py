"""The demo's report: ``report.md`` (and ``report.html`` when the ``markdown`` package is installed)
plus its plots in ``plots/``, from the files the earlier demo stages wrote.

Sections: settings and stage times; the CTCVR scorer's evaluation table and reliability plot;
the per-component reward curves of the training run (paper Figure 3 style); Table 1, Table 3 and
the predicted-vs-simulated lift of the trained model (after) against the starting model
(before), as ``recipe.relate.evaluate`` wrote them; the simulator's true CTCVR of both; three
example prompts with the ad before and after training.

Nothing here computes a metric: the numbers come from ``ctcvr_model.evaluate``,
``recipe.relate.evaluate`` and the trainer's ``metrics.csv``; a missing file or section is an
error naming it, never a silently shorter report. Every file is written atomically.

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

from relate_common.jsonio import write_text_atomic

REWARD_CURVES = "reward_curves.png"
SCORER_RELIABILITY = "scorer_reliability.png"
PLOT_FILES = (REWARD_CURVES, SCORER_RELIABILITY)
# recipe.relate.evaluate's evaluation.md sections copied into the report (heading prefixes).
EVALUATION_SECTIONS = ("Table 1", "Table 3", "Predicted vs simulated lift")
TOTAL_SCORE = "critic/score/mean"
COMPONENT_PREFIX = "relate/reward/"
DIVERSITY_SCORE = "relate/diversity_score/mean"
N_EXAMPLES = 3


class ReportError(RuntimeError):
    """An input of the report is missing or not what the demo stages write."""


@dataclass(frozen=True)
class ReportInputs:
    """Files written by the earlier demo stages, and the settings to print."""

    scorer_eval_json: Path  # ctcvr_model.evaluate: evaluation.json
    scorer_reliability_png: Path  # ctcvr_model.evaluate: reliability.png
    metrics_csv: Path  # local_trainer: metrics.csv
    before_jsonl: Path  # recipe.relate.generate with the starting model
    after_jsonl: Path  # recipe.relate.generate with the trained model
    evaluation_json: Path  # recipe.relate.evaluate (after = experiment, before = baseline)
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
    """(metrics.csv key, panel title): the total sentence reward, then every reward component logged in
    the paper's order (``reward_fns.config.COMPONENTS``); with diversity at token level (RELATE) the
    batch diversity score (eq. 4) stands in for the diversity component."""
    from reward_fns.config import COMPONENTS

    logged = {k for r in rows for k in r}
    components = sorted((k for k in logged if k.startswith(COMPONENT_PREFIX)),
                        key=lambda k: (COMPONENTS.index(k[len(COMPONENT_PREFIX):])
                                       if k[len(COMPONENT_PREFIX):] in COMPONENTS else len(COMPONENTS), k))
    if not components:
        raise ReportError(f"metrics.csv has no {COMPONENT_PREFIX}<component> columns: not a RELATE training log")
    metrics = [(TOTAL_SCORE, "total sentence reward (r_i)")] if TOTAL_SCORE in logged else []
    metrics += [(k, f"{k[len(COMPONENT_PREFIX):]} reward") for k in components]
    if COMPONENT_PREFIX + "diversity" not in logged and DIVERSITY_SCORE in logged:
        metrics.append((DIVERSITY_SCORE, "diversity score (eq. 4; token-level credit)"))
    return metrics


def plot_reward_curves(rows: list[dict[str, float]], path: Path, run_name: str) -> Path:
    """Figure 3 style: one panel per reward component (and the total), reward vs training step."""
    tmp = _tmp_path(path)
    plots_module().plot_curves({run_name: rows}, curve_metrics(rows), tmp,
                               title=f"Training reward per component (batch mean), {run_name}", x_key="step",
                               x_label="training step")
    os.replace(tmp, path)
    return path


# ---- rendering ----------------------------------------------------------------------------------


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec)


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}%"


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


def curves_section(rows: list[dict[str, float]], plot_name: str) -> str:
    metrics = curve_metrics(rows)
    first, last = rows[0], rows[-1]
    lines = ["## 2. Training curves (paper Figure 3 style)", "",
             f"![Per-component reward over training steps](plots/{plot_name})", "",
             f"Batch means of each reward component over {len(rows)} training steps "
             f"(step {int(first['step'])} vs step {int(last['step'])}):", "",
             "| reward | first step | last step |", "|---|---:|---:|"]
    lines += [f"| {title} | {_fmt(first.get(key))} | {_fmt(last.get(key))} |" for key, title in metrics]
    return "\n".join(lines) + "\n"


def evaluation_sections(inputs: ReportInputs) -> str:
    md = _require(inputs.evaluation_md, "recipe.relate.evaluate report").read_text(encoding="utf-8")
    head = ["## 3. Before vs after training: Table 1 and Table 3", "",
            "From `recipe.relate.evaluate`: **baseline = before** (the starting model), **experiment = after** "
            "(the trained model), the same val prompts, greedy decoding. CTCVR \"predicted\" is the learned scorer "
            "(what the reward saw); \"simulated\" is the simulator's ground-truth user model.", ""]
    return "\n".join(head) + "\n" + "\n".join(markdown_sections(md, inputs.evaluation_md, EVALUATION_SECTIONS))


def simulated_section(result: dict[str, Any]) -> str:
    cmp_ = result.get("comparison") or {}
    if cmp_.get("simulated_ctcvr_pct") is None:
        raise ReportError("evaluation.json has no paired before/after comparison (comparison.simulated_ctcvr_pct)")
    sim, pred = cmp_["simulated_ctcvr_pct"], cmp_["predicted_ctcvr_pct"]
    before, after = result["baseline"], result["experiment"]
    rows = [
        ("CTCVR (%) simulated online (user model truth)", _fmt(sim["baseline"]), _fmt(sim["experiment"]),
         _pct(cmp_.get("simulated_lift"))),
        ("CTCVR (%) predicted by the scorer", _fmt(pred["baseline"]), _fmt(pred["experiment"]),
         _pct(cmp_.get("predicted_lift"))),
        ("format ok", _fmt(before.get("format_ok_rate"), ".1%"), _fmt(after.get("format_ok_rate"), ".1%"), ""),
        ("mean sentence reward", _fmt(before.get("mean_sentence_reward"), ".3f"),
         _fmt(after.get("mean_sentence_reward"), ".3f"), ""),
    ]
    lines = ["## 4. Simulated online CTCVR, before vs after", "",
             "| | before | after | relative change (eq. 10) |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", f"Paired over {cmp_['paired_records']} val records ({cmp_.get('records_improved_simulated', 'n/a')} "
              "improved under the simulator). The simulated number is what an online A/B test would measure in this "
              "world; a predicted lift well above the simulated one is reward hacking of the learned scorer."]
    return "\n".join(lines) + "\n"


def pick_examples(before: list[dict[str, Any]], after: list[dict[str, Any]], k: int = N_EXAMPLES) -> list[str]:
    """Ids of ``k`` val prompts both sets answered: the first of each language in file order, then the next ones."""
    after_ids = {r["id"] for r in after}
    ids = list(dict.fromkeys(r["id"] for r in before if r["id"] in after_ids))
    if len(ids) < k:
        raise ReportError(f"only {len(ids)} prompts answered both before and after training; the report shows {k}")
    language = {r["id"]: r.get("language") for r in before}
    firsts = list(dict.fromkeys({language[i]: i for i in reversed(ids)}.values()))
    chosen = sorted(firsts[:k], key=ids.index)
    chosen += [i for i in ids if i not in chosen][:k - len(chosen)]
    return sorted(chosen, key=ids.index)


def examples_section(inputs: ReportInputs) -> str:
    before = read_jsonl(inputs.before_jsonl, "generations before training")
    after = read_jsonl(inputs.after_jsonl, "generations after training")
    scored_dir = inputs.evaluation_json.parent
    scores = {name: {r["id"]: r for r in read_jsonl(scored_dir / f"scored_{name}.jsonl", f"per-text scores ({name})")}
              for name in ("baseline", "experiment")}
    by_id = {"before": {r["id"]: r for r in before}, "after": {r["id"]: r for r in after}}
    lines = [f"## 5. Example ads ({N_EXAMPLES} val prompts, before and after training)", ""]
    for n, rid in enumerate(pick_examples(before, after), start=1):
        rec = by_id["before"][rid]
        points = rec.get("selling_points") or []
        points = points if isinstance(points, list) else [points]
        lines += [f"### Example {n}: `{rid}` ({rec.get('language')})", "",
                  f"- query: {rec.get('query')}", f"- bidword: {rec.get('bidword')}",
                  f"- selling points: {'; '.join(map(str, points))}", ""]
        for label, name in (("before", "baseline"), ("after", "experiment")):
            s = scores[name].get(rid, {})
            lines += [f"**{label}** (sentence reward {_fmt(s.get('sentence_reward'), '.3f')}, CTCVR predicted "
                      f"{_fmt(_scale(s.get('predicted_ctcvr')), '.4f')}%, simulated "
                      f"{_fmt(_scale(s.get('simulated_ctcvr')), '.4f')}%, "
                      f"{'compliant' if s.get('compliant') else 'not compliant'}):", "",
                      _fence(by_id[label][rid]["response"]), ""]
    return "\n".join(lines)


def _scale(x: Any) -> float | None:
    return None if x is None else 100.0 * float(x)


def honest_note(result: dict[str, Any], settings: dict[str, Any]) -> str:
    before, after = result["baseline"], result["experiment"]
    return ("> Read the numbers as they are: a CPU demo trains for "
            f"{settings.get('steps', '?')} steps of {settings.get('prompts_per_step', '?')} prompts x "
            f"G={settings.get('group_size', '?')} (the paper: 150 steps of 288 prompts x 5 on 8 GPUs). "
            f"The starting model writes the requested two-line ad in {_fmt(before.get('format_ok_rate'), '.0%')} of "
            f"the val prompts, the trained one in {_fmt(after.get('format_ok_rate'), '.0%')}; small models and few "
            "steps move the metrics little and noisily.\n")


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
    from recipe.relate.local_trainer import read_metrics_csv

    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_metrics_csv(_require(inputs.metrics_csv, "training metrics")) if r.get("step", 0) >= 1]
    if not rows:
        raise ReportError(f"{inputs.metrics_csv}: no training steps logged")
    result = read_json(inputs.evaluation_json, "recipe.relate.evaluate result")
    if not result.get("baseline"):
        raise ReportError(f"{inputs.evaluation_json}: evaluated without the before set as baseline")
    copy_atomic(_require(inputs.scorer_reliability_png, "scorer reliability plot"), plots / SCORER_RELIABILITY)
    plot_reward_curves(rows, plots / REWARD_CURVES, run_name=f"RELATE, {inputs.settings.get('policy', 'policy')}")

    title = "RELATE demo report"
    text = "\n".join([
        f"# {title}", "",
        "RELATE trained in local mode (CPU, one process) on the bundled sample records, against a learned ESMM "
        "CTCVR scorer; the simulator's ground-truth user model plays the online A/B test. Produced by "
        "`make demo` (`python -m examples.demo`).", "",
        honest_note(result, inputs.settings),
        settings_section(inputs),
        scorer_section(inputs, SCORER_RELIABILITY),
        curves_section(rows, REWARD_CURVES),
        evaluation_sections(inputs),
        simulated_section(result),
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
