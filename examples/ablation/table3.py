"""Table 3 over seeds, and the paper's ablation findings as verdicts with intervals (pure functions).

Input: for each preset, one scored evaluation set per seed (``relate_eval.evaluate.EvalSet``:
greedy generations of that run's final policy on the held-out prompts), all over the same
records. For each Table 3 metric (``reward_fns.metrics`` via ``evaluate.per_text_values``):

* value: the mean over seeds of each seed's mean over texts;
* seed range: the lowest and highest of the per-seed means (what a rerun with another seed moves);
* 95% interval: percentile bootstrap over RECORDS (the held-out prompts), the same draws for every
  seed and every preset (``reward_fns.intervals.bootstrap_counts``), each resample averaged over
  seeds. It measures how much the prompt sample decides the number, not the seed: both are shown.

A finding compares two presets on one metric (paper sec. 4.4.2). Its verdict, decided here and
never by hand:

* ``reproduced``: the bootstrap interval of the paired difference excludes 0 on the paper's side
  AND every seed's difference has that sign;
* ``opposite``: the same, on the other side;
* ``not separated``: otherwise (the interval holds 0, or the seeds disagree);
* ``not testable at this size``: the mechanism the finding is about never acted in training
  (G_high empty in every step of the runs involved), so the comparison says nothing about it.

The paper reports no intervals and one run per preset; the seeds, intervals and rule are ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reward_fns.intervals import bootstrap_counts, percentile_interval, record_sums, safe_ratio

# Table 3's columns: (relate_eval.evaluate metric key, header), then the simulator's CTCVR (ours).
COLUMNS = (("structural_quality", "Structural Quality"), ("predicted_ctcvr_pct", "CTCVR(%) predicted"),
           ("diversity", "Diversity"), ("semantic_quality", "Semantic Quality"),
           ("simulated_ctcvr_pct", "CTCVR(%) simulated"))
PAPER_TABLE3 = {  # paper Table 3, step 150 (Qwen3-8B): structural, CTCVR(%), diversity, semantic
    "model1": (0.937, 0.128, 0.478, 0.881), "model2": (0.834, 0.450, 0.211, 0.658),
    "model3": (0.824, 0.320, 0.894, 0.621), "model4": (0.812, 0.184, 0.923, 0.935),
    "relate": (0.815, 0.203, 0.965, 0.939),
}
PAPER_KEYS = ("structural_quality", "predicted_ctcvr_pct", "diversity", "semantic_quality")


@dataclass(frozen=True)
class Finding:
    """One claim of paper sec. 4.4.2: preset ``a`` is higher (``sign`` +1) or lower (-1) than ``b`` on ``metric``."""

    claim: str
    metric: str
    a: str
    b: str
    sign: int
    needs_g_high: bool = False  # about the diversity mechanism: untestable while G_high stays empty


FINDINGS = (
    Finding("the CTCVR reward raises CTCVR (Model 2 > Model 1)", "predicted_ctcvr_pct", "model2", "model1", +1),
    Finding("the CTCVR reward costs diversity (Model 2 < Model 1)", "diversity", "model2", "model1", -1),
    Finding("the CTCVR reward costs semantic quality (Model 2 < Model 1)", "semantic_quality", "model2", "model1", -1),
    Finding("structural quality is highest with structure alone (Model 1 > Model 2)", "structural_quality",
            "model1", "model2", +1),
    Finding("a sentence-level diversity reward buys diversity back (Model 3 > Model 2)", "diversity",
            "model3", "model2", +1, needs_g_high=True),
    Finding("the diversity reward slows CTCVR (Model 3 < Model 2)", "predicted_ctcvr_pct", "model3", "model2", -1,
            needs_g_high=True),
    Finding("semantic rewards raise semantic quality (Model 4 > Model 3)", "semantic_quality", "model4", "model3", +1),
    *(Finding(f"token-level credit improves {label} over Model 4 (RELATE > Model 4)", key, "relate", "model4", +1,
              needs_g_high=True)
      for key, label in (("structural_quality", "structural quality"), ("predicted_ctcvr_pct", "CTCVR"),
                         ("diversity", "diversity"), ("semantic_quality", "semantic quality"))),
)


@dataclass(frozen=True)
class SeedSums:
    """One run's per-record sums and text counts of one metric: (R,) each, records in a fixed order."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.sums.sum() / self.counts.sum()) if self.counts.sum() > 0 else math.nan

    def resampled(self, draws: np.ndarray) -> np.ndarray:
        """(B,) the mean on each resample of ``draws`` (B, R)."""
        return safe_ratio(draws @ self.sums, draws @ self.counts)


def seed_sums(values: np.ndarray, record_of_text: np.ndarray, n_records: int) -> SeedSums:
    """Per-record sums of per-text ``values`` (N,) (NaN: not computed, left out)."""
    return SeedSums(*record_sums(values, record_of_text, n_records))


def _interval(stats: np.ndarray) -> list[float] | None:
    lo, hi = percentile_interval(stats)
    return None if lo is None else [lo, hi]


def cell(seeds: Sequence[SeedSums], draws: np.ndarray) -> dict:
    """{"value", "seeds", "seed_range", "ci95"} of one preset and metric over its seeds."""
    per_seed = [s.mean for s in seeds]
    boot = np.mean([s.resampled(draws) for s in seeds], axis=0) if draws.shape[0] else np.zeros(0)
    return {"value": float(np.mean(per_seed)), "seeds": per_seed, "seed_range": [min(per_seed), max(per_seed)],
            "ci95": _interval(boot)}


def difference(a: Sequence[SeedSums], b: Sequence[SeedSums], draws: np.ndarray) -> dict:
    """Paired a - b: the mean over seeds, each seed's own difference (seed i of a vs seed i of b: the
    same prompts in the same order) and the bootstrap interval over records (the same draws for both)."""
    if len(a) != len(b):
        raise ValueError(f"presets compared over different seed counts: {len(a)} vs {len(b)}")
    per_seed = [x.mean - y.mean for x, y in zip(a, b)]
    boot = (np.mean([x.resampled(draws) for x in a], axis=0) - np.mean([y.resampled(draws) for y in b], axis=0)) \
        if draws.shape[0] else np.zeros(0)
    return {"value": float(np.mean(per_seed)), "seeds": per_seed, "ci95": _interval(boot)}


def verdict(diff: dict, sign: int, mechanism_acted: bool = True) -> str:
    """The rule of the module docstring."""
    if not mechanism_acted:
        return "not testable at this size"
    ci, seeds = diff["ci95"], diff["seeds"]
    if ci is None or any(not math.isfinite(s) for s in seeds):
        return "not separated"
    lo, hi = sorted((sign * ci[0], sign * ci[1]))  # the interval on the paper's side: > 0 agrees with the paper
    if lo > 0 and all(sign * s > 0 for s in seeds):
        return "reproduced"
    if hi < 0 and all(sign * s < 0 for s in seeds):
        return "opposite"
    return "not separated"


def table3(sums: Mapping[str, Mapping[str, Sequence[SeedSums]]], n_records: int, resamples: int = 1000,
           seed: int = 0, g_high: Mapping[str, float] | None = None) -> dict:
    """Table 3 and the findings.

    sums: {row name: {metric: [SeedSums per seed]}}, every row over the same ``n_records`` records
    (rows: the presets and a reference row such as the SFT start); g_high: {preset: mean |G_high|
    over its training steps and seeds} (None: not known, every finding counts as testable).
    """
    draws = bootstrap_counts(n_records, resamples, seed)
    rows = {name: {m: cell(per_metric[m], draws) for m, _ in COLUMNS} for name, per_metric in sums.items()}
    findings = []
    for f in FINDINGS:
        if f.a not in sums or f.b not in sums:
            continue
        d = difference(sums[f.a][f.metric], sums[f.b][f.metric], draws)
        acted = not f.needs_g_high or g_high is None or all(g_high.get(p, 0.0) > 0 for p in (f.a, f.b)
                                                            if p in ("model3", "model4", "relate"))
        findings.append({"claim": f.claim, "metric": f.metric, "a": f.a, "b": f.b, "sign": f.sign,
                         "paper": _paper_difference(f), "difference": d, "verdict": verdict(d, f.sign, acted)})
    return {"rows": rows, "findings": findings, "records": n_records,
            "bootstrap": {"resamples": resamples, "seed": seed, "unit": "record (held-out prompt)"}}


def _paper_difference(f: Finding) -> float:
    i = PAPER_KEYS.index(f.metric) if f.metric in PAPER_KEYS else None
    return math.nan if i is None else PAPER_TABLE3[f.a][i] - PAPER_TABLE3[f.b][i]


# ---- markdown -------------------------------------------------------------------------------------


def _num(x: float | None, digits: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _digits(metric: str) -> int:
    return 4 if "ctcvr" in metric else 3


def render(result: Mapping, labels: Mapping[str, str]) -> str:
    """Table 3 (value, seed range, 95% interval), the paper's row beside each preset, and the findings."""
    lines = ["| run | " + " | ".join(h for _, h in COLUMNS) + " |", "|---" + "|---:" * len(COLUMNS) + "|"]
    for name, row in result["rows"].items():
        cells = []
        for m, _ in COLUMNS:
            c, k = row[m], _digits(m)
            ci = c["ci95"]
            cells.append(f"{_num(c['value'], k)} (seeds {_num(c['seed_range'][0], k)}-{_num(c['seed_range'][1], k)}; "
                         + (f"[{_num(ci[0], k)}, {_num(ci[1], k)}])" if ci else "no interval)"))
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
        if name in PAPER_TABLE3:
            paper = dict(zip(PAPER_KEYS, PAPER_TABLE3[name]))
            lines.append("| &nbsp;&nbsp;paper (Qwen3-8B, step 150) | "
                         + " | ".join(_num(paper.get(m), 3) if m in paper else "" for m, _ in COLUMNS)
                         + " |")
    lines += ["", "| finding (paper sec. 4.4.2) | metric | paper | here: difference [95% interval] (per seed) | verdict |",
              "|---|---|---:|---|---|"]
    for f in result["findings"]:
        d, k = f["difference"], _digits(f["metric"])
        ci = d["ci95"]
        here = (f"{_num(d['value'], k)} " + (f"[{_num(ci[0], k)}, {_num(ci[1], k)}]" if ci else "[n/a]")
                + " (" + ", ".join(_num(s, k) for s in d["seeds"]) + ")")
        lines.append(f"| {f['claim']} | {f['metric']} | {_num(f['paper'], 3)} | {here} | **{f['verdict']}** |")
    return "\n".join(lines) + "\n"
