"""What an evaluation writes besides its JSON: the report as markdown (Tables 1 and 3 with 95% intervals,
predicted vs simulated lift, the notes of each run: evaluation.md) and each run's per-text scores
(scored_<run>.jsonl)."""

from __future__ import annotations

import math
from typing import Any


def _f(x: float | None, kind: str = "num") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if kind == "pct":
        return f"{100 * x:.1f}%"
    if kind == "signed_pct":
        return f"{100 * x:+.2f}%"
    if kind == "pp":
        return f"{100 * x:+.2f} pp"
    if kind == "ctcvr":
        return f"{x:.4f}"
    return f"{x:.3f}"


def _ci(m: dict[str, Any] | None, kind: str = "num") -> str:
    """``value [lo, hi]`` of a ``{"value", "ci95"}`` entry."""
    if not m or m.get("value") is None:
        return "n/a"
    ci = m.get("ci95")
    return _f(m["value"], kind) + (f" [{_f(ci[0], kind)}, {_f(ci[1], kind)}]" if ci else "")


def _rows(run: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(run["name"], run)] + [(f"&nbsp;&nbsp;{run['name']} {lang}", sub) for lang, sub in run["by_language"].items()]


def render_markdown(result: dict[str, Any]) -> str:
    """The evaluation report as markdown (Tables 1 and 3 with intervals, predicted vs simulated lift, notes)."""
    s, runs, baseline = result["settings"], result["runs"], result["baseline"]
    lines = ["# RELATE evaluation", ""]
    for run in runs:
        lines.append(f"- run `{run['name']}`{' (baseline)' if run['name'] == baseline else ''}: `{run['file']}`: "
                     f"{run['n']} texts, {run['records']} records"
                     + (f", model {', '.join(f'`{m}`' for m in run['models'])}" if run["models"] else ""))
    if baseline is None:
        lines.append("- baseline: none (every delta is n/a)")
    lines.append(f"- reward preset `{s['preset']}` (all components computed); CTCVR scorer `{s['ctcvr_model']}`; "
                 f"tokenizer `{s['tokenizer']}`" + (f"; records joined from `{s['records']}`" if s["records"] else ""))
    lines.append(f"- simulated online CTCVR: {s['simulator']}")
    b = s["bootstrap"]
    lines.append(f"- [lo, hi]: 95% bootstrap interval, {b['resamples']} resamples of records (seed {b['seed']})"
                 if b["resamples"] else "- no intervals (--bootstrap 0)")
    lines.append("- lifts are paired over the records both runs cover (per-record means, each record weighs equally)")
    lines.append("")

    def delta(name: str, sub: dict[str, Any], key: str) -> str:
        if name == baseline:
            return "(baseline)"
        d = sub.get("delta_vs_baseline")
        return "n/a" if d is None else _ci(d.get(key), "signed_pct")

    def table(columns: list[tuple[str, Any]]) -> list[str]:
        """One row per run and language: ``columns`` = [(heading, cell(run name, row) -> str)]."""
        out = ["| run | " + " | ".join(h for h, _ in columns) + " |", "|---" + "|---:" * len(columns) + "|"]
        for run in runs:
            out += [f"| {label} | " + " | ".join(cell(run["name"], sub) for _, cell in columns) + " |"
                    for label, sub in _rows(run)]
        return out

    def metric(key: str, kind: str = "num") -> Any:
        return lambda name, sub: _ci(sub["metrics"][key], kind)

    lines += ["## Table 1 (paper sec. 4.2)", ""] + table([
        ("Format OK", metric("format_ok_rate", "pct")), ("Compliance Rate", metric("compliance_rate", "pct")),
        ("Diversity", metric("diversity")),
        ("ΔCTCVR (predicted)", lambda name, sub: delta(name, sub, "predicted_lift")),
        ("ΔCTCVR (simulated online)", lambda name, sub: delta(name, sub, "simulated_lift"))])
    lines += ["", "## Table 3 (paper sec. 4.4)", ""] + table([
        ("Structural Quality", metric("structural_quality")), ("CTCVR(%) predicted", metric("predicted_ctcvr_pct", "ctcvr")),
        ("Diversity", metric("diversity")), ("Semantic Quality", metric("semantic_quality")),
        ("CTCVR(%) simulated", metric("simulated_ctcvr_pct", "ctcvr"))])
    lines += ["", "## Predicted vs simulated lift (reward hacking check)", ""]
    compared = [run for run in runs if run["delta_vs_baseline"] is not None]
    if not compared:
        lines.append("n/a: no baseline run.")
    else:
        lines += ["| run vs baseline | paired records | ΔCTCVR predicted | ΔCTCVR simulated | gap (predicted - simulated) "
                  "| records improved (simulated) |", "|---|---:|---:|---:|---:|---:|"]
        for run in compared:
            d = run["delta_vs_baseline"]
            lines.append(f"| {run['name']} vs {d['baseline']} | {d['paired_records']} | "
                         f"{_ci(d['predicted_lift'], 'signed_pct')} | {_ci(d['simulated_lift'], 'signed_pct')} | "
                         f"{_ci(d['gap'], 'pp')} | {d['records_improved_simulated'] if d['records_improved_simulated'] is not None else 'n/a'} |")
        lines += ["", "A positive gap means the learned scorer rates the run, relative to the baseline, higher than the "
                  "simulated users do; after RL against that scorer a large positive gap is reward hacking made visible."]
    lines.append("")
    lines.append("Per-text rank agreement of scorer and simulator (Spearman): "
                 + "; ".join(f"{run['name']} {_f(run['spearman_predicted_vs_simulated'])}" for run in runs) + ".")
    lines += ["", "## Details", ""]
    for run in runs:
        d = run["diversity_detail"]
        fr = ", ".join(f"{k} {v}" for k, v in sorted(run["finish_reasons"].items())) or "n/a"
        lines.append(f"- {run['name']}: finish reasons: {fr}; mean sentence reward {_f(run['mean_sentence_reward'])}; "
                     f"simulated p_click {run['simulated_p_click_pct']:.3f}%, p_cvr {run['simulated_p_cvr_pct']:.3f}%; "
                     f"G_high: {d['high_freq_ngrams']} n-grams in >= {d['threshold_groups']} of {d['groups']} groups")
        for t in d["top_templates"][:3]:
            lines.append(f"  - penalised in {t['responses']} texts: `{t['text'][:60]}`")
        for note in run["notes"]:
            lines.append(f"  - note: {note}")
    return "\n".join(lines) + "\n"


def scored_rows(es: Any) -> list[dict[str, Any]]:
    """Per-text scores of one run, a scored ``relate_eval.evaluate.EvalSet`` (for inspection; not a
    reward_fns.score output)."""
    rows = []
    for i, (rec, raw, s) in enumerate(zip(es.records, es.ads.raws, es.scores.responses)):
        rows.append({"row": i + 1, "id": rec.id, "sample": raw.get("sample"), "group_id": es.ads.groups[i],
                     "language": rec.language, "query": rec.query, "response": es.responses[i],
                     "format_ok": s.parsed.ok, "compliant": s.compliant,
                     "diversity_score": s.diversity_score, "components": s.values(),
                     "sentence_reward": s.sentence_reward, "predicted_ctcvr": float(es.predicted[i]),
                     "simulated_ctcvr": float(es.truth_ctcvr[i]), "simulated_p_click": float(es.truth_click[i]),
                     "simulated_p_cvr": float(es.truth_cvr[i]), "format_problems": s.parsed.problems})
    return rows
