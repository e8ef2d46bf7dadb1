"""Evaluate generated ads: paper Table 1 and Table 3 with 95% bootstrap intervals, plus simulated online CTCVR.

    python -m relate_eval.evaluate --run start=GEN0.jsonl --run sft=GEN1.jsonl --run relate=GEN2.jsonl
        --baseline-run start --ctcvr-model DIR [--records RECORDS] [--preset relate] [--config YAML]
        [--tokenizer DIR] [--bootstrap 1000] [--bootstrap-seed 0] [--output-dir DIR]
    python -m relate_eval.evaluate --generations GEN.jsonl [--baseline BASE.jsonl] --ctcvr-model DIR ...

Each ``--run NAME=FILE`` is one row of the tables (``--generations F`` is ``--run experiment=F``,
``--baseline F`` is ``--run baseline=F --baseline-run baseline``). What is measured, per run:

* Table 1 (paper sec. 4.2): compliance rate (eq. 11), diversity (eq. 12) and delta CTCVR (eq. 10)
  against the baseline run, CTCVR as PREDICTED by the learned ESMM scorer (``--ctcvr-model``),
  i.e. what the RL reward saw; plus the share of format-valid outputs.
* Table 3 (paper sec. 4.4): structural quality, CTCVR (%) predicted, diversity, semantic quality.
  Every per-text value comes from ``reward_fns.score_batch`` with every component computed
  (``compute="all"``) whatever the preset weights, and is aggregated as ``reward_fns.metrics``
  defines the columns. Diversity is computed within each run (its own high-frequency n-grams
  G_high, counted across its record groups), as eq. 12 does.
* Simulated online CTCVR: the ground-truth user model of the log simulator
  (``data_prep.user_model.UserModel``) scores the same texts: each response is parsed with
  ``relate_common.ad_format.parse_ad`` and its title / description are scored with the record's
  query, bidword, selling points, industry and language. These are FRESH-IMPRESSION
  probabilities (p_click * p_cvr with no template fatigue): every text is judged as if shown for
  the first time (diversity is measured separately). A response that does not parse scores as the
  ad with the fields that could be read (an empty title/description if none).
* Predicted vs simulated lift: delta CTCVR by the scorer and by the simulator, and their gap
  (predicted minus simulated, in percentage points). A large positive gap means the policy
  found what the scorer over-rewards: reward hacking made visible.

Intervals (``reward_fns.intervals``): percentile intervals of ``--bootstrap`` resamples of the
RECORDS (a record's samples move together), seeded by ``--bootstrap-seed``; lifts resample the
paired records of both runs with the same draws. Per-text values, G_high included, are those of
the full run. The paper reports no intervals; this method is ours.

Lifts are PAIRED: only records (``id``) present in both runs count, CTCVR is first averaged over
the samples of each record, then over records (each record weighs equally, as in a query-level
traffic split), and eq. 10 is applied to those means. Without a baseline run every delta is n/a.

Input rows: ``reward_fns.generated`` (the format ``relate_eval.generate`` writes and
``reward_fns.score`` reads): the record fields and the ad as ``response`` or ``title`` +
``description``. Empty output is scored, never skipped: an empty, whitespace or null ad fails the
format check and gets the lowest reward; only an absent ad field is an input error. The reference
pCTCVR of the ctcvr reward component follows ``reward_fns.ctcvr.predict_with_reference``, the same
rule as in training.

``--records FILE``: an ad-records file (records schema, or the verl RL parquet of
``data_prep/build_dataset.py``): a generation row may then carry only ``id`` plus its ad; the
record fields it lacks are filled from the record with that id (``reward_fns.generated``).

Output: the markdown report (printed and written to OUTPUT_DIR/evaluation.md), the same numbers
as JSON (OUTPUT_DIR/evaluation.json, one entry of ``runs`` per run) and per-text scores
(OUTPUT_DIR/scored_<NAME>.jsonl). OUTPUT_DIR defaults to ``<first file's folder>/<its stem>_evaluation``.

Exit codes: 0 ok; 2 invalid input (the message names the file, the row and the field), a record
without a reference ad where no fallback is configured, or an unusable --ctcvr-model / config.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from relate_eval.render import render_markdown, scored_rows
from relate_common.ad_format import parse_ad
from relate_common.jsonio import jsonable, write_json, write_jsonl
from relate_common.records import AdRecord, RecordError
from reward_fns.generated import GeneratedAds, load_records_index, read_generated
from reward_fns.intervals import (Interval, bootstrap_counts, lift_gap_interval, lift_interval, mean_interval,
                                  record_sums)

SIMULATOR_NOTE = ("data_prep.user_model.UserModel, fresh impressions (p_click * p_cvr, no template fatigue: "
                  "each text is scored as if never shown before)")
# The per-run metrics, in table order: (key, what it is). Each is a mean over texts with an interval.
METRICS = (
    ("format_ok_rate", "share of outputs in the exact two-line format (reward_fns.format)"),
    ("compliance_rate", "Table 1 compliance rate, eq. 11"),
    ("diversity", "Tables 1/3 diversity, eq. 12"),
    ("structural_quality", "Table 3 structural quality, (length + format) / 2"),
    ("semantic_quality", "Table 3 semantic quality, mean of relevance, correctness, risk"),
    ("predicted_ctcvr_pct", "Table 3 CTCVR(%) as predicted by the learned scorer"),
    ("simulated_ctcvr_pct", "CTCVR(%) of the simulator's ground truth, fresh impressions"),
)
RUN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# ---- input --------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """One run's generated texts and, after :func:`score_set`, its scores."""

    name: str
    ads: GeneratedAds
    predicted: np.ndarray | None = None  # (N,) scorer pCTCVR of each text
    truth_click: np.ndarray | None = None  # (N,) simulator p_click (fresh)
    truth_cvr: np.ndarray | None = None  # (N,) simulator p_cvr
    scores: Any = None  # reward_fns.BatchScores
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.ads.path

    @property
    def records(self) -> list[AdRecord]:
        return self.ads.records

    @property
    def responses(self) -> list[str]:
        return self.ads.responses

    @property
    def truth_ctcvr(self) -> np.ndarray:
        return self.truth_click * self.truth_cvr


def read_set(path: str, name: str, index: dict[str, dict[str, Any]] | None) -> EvalSet:
    """Read and validate one run's file; RecordError names the first bad row and field."""
    return EvalSet(name=name, ads=read_generated(path, records_index=index))


# ---- scoring ------------------------------------------------------------------------------------


def simulate_truth(user_model: Any, es: EvalSet, parsed: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Fresh-impression (p_click, p_cvr) of each text (``parsed``: its ParsedAd) from the simulator's ground truth."""
    ads = []
    for rec, p in zip(es.records, parsed):
        ads.append({"query": rec.query, "bidword": rec.bidword, "selling_points": rec.selling_points,
                    "industry": rec.industry, "language": rec.language, "title": p.title, "description": p.description})
    p_click, p_cvr = user_model.score(ads)  # shown_before=None: fresh, no fatigue
    return np.asarray(p_click, dtype=np.float64), np.asarray(p_cvr, dtype=np.float64)


def score_set(es: EvalSet, ctx: Any, tokenizer: Any, scorer: Any, user_model: Any) -> None:
    """Fill ``es`` with predicted CTCVR, simulated truth and ``reward_fns.score_batch`` scores."""
    from reward_fns import score_batch
    from reward_fns.ctcvr import predict_with_reference

    enc = [tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in es.responses]
    parsed = [parse_ad(r) for r in es.responses]
    es.predicted, reference = predict_with_reference(scorer, es.records, parsed, es.ads.is_reference, ctx.cfg.ctcvr)
    es.truth_click, es.truth_cvr = simulate_truth(user_model, es, parsed)
    es.scores = score_batch(es.records, es.responses, [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc],
                            group_ids=es.ads.groups, ctx=ctx, predicted_ctcvr=es.predicted,
                            reference_ctcvr=[float(r) for r in reference], compute="all")


# ---- metrics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: ``resamples`` record-level resamples from ``seed`` (0: no intervals)."""

    resamples: int = 1000
    seed: int = 0

    def counts(self, n_records: int) -> np.ndarray:
        return bootstrap_counts(n_records, self.resamples, self.seed)


def per_text_values(es: EvalSet) -> dict[str, np.ndarray]:
    """{metric: (N,) per-text value} of every METRICS key; NaN where a value was not computed."""
    from reward_fns.metrics import semantic_quality, structural_quality

    def arr(xs: Any) -> np.ndarray:
        return np.asarray([np.nan if x is None else float(x) for x in xs], dtype=np.float64)

    resp = es.scores.responses
    return {
        "format_ok_rate": arr(r.parsed.ok for r in resp),
        "compliance_rate": arr(r.compliant for r in resp),
        "diversity": arr(r.diversity_score for r in resp),
        "structural_quality": arr(structural_quality(r.values()) for r in resp),
        "semantic_quality": arr(semantic_quality(r.values()) for r in resp),
        "predicted_ctcvr_pct": 100 * es.predicted,
        "simulated_ctcvr_pct": 100 * es.truth_ctcvr,
    }


def record_index(records: list[AdRecord], idx: list[int]) -> tuple[list[str], np.ndarray]:
    """(record ids in first-seen order, (len(idx),) position of each row's record in that list)."""
    ids = list(OrderedDict.fromkeys(records[i].id for i in idx))
    pos = {rid: k for k, rid in enumerate(ids)}
    return ids, np.asarray([pos[records[i].id] for i in idx], dtype=np.int64)


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two per-text series; None when undefined (< 3 texts or constant)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def set_metrics(es: EvalSet, bootstrap: Bootstrap, idx: list[int] | None = None) -> dict[str, Any]:
    """Every METRICS value with its interval, and simulated-truth details, for the rows ``idx`` (all)."""
    idx = list(range(len(es.records))) if idx is None else idx
    ids, rec_of_row = record_index(es.records, idx)
    counts = bootstrap.counts(len(ids))
    values = per_text_values(es)
    return {
        "n": len(idx),
        "records": len(ids),
        "metrics": {k: mean_interval(values[k][idx], rec_of_row, counts).to_json() for k, _ in METRICS},
        "simulated_p_click_pct": 100 * float(np.mean(es.truth_click[idx])),
        "simulated_p_cvr_pct": 100 * float(np.mean(es.truth_cvr[idx])),
        "spearman_predicted_vs_simulated": spearman(es.predicted[idx], es.truth_ctcvr[idx]),
        "mean_sentence_reward": float(np.mean([es.scores.responses[i].sentence_reward for i in idx])),
    }


def describe_set(es: EvalSet, bootstrap: Bootstrap) -> dict[str, Any]:
    """Overall and per-language metrics plus provenance of one run."""
    out: dict[str, Any] = {"name": es.name, "file": es.path, **set_metrics(es, bootstrap)}
    out["models"] = dict(Counter(str(r["model"]) for r in es.ads.raws if r.get("model") is not None))
    out["finish_reasons"] = dict(Counter(str(r["finish_reason"]) for r in es.ads.raws if r.get("finish_reason") is not None))
    out["by_language"] = {
        lang: set_metrics(es, bootstrap, [i for i, r in enumerate(es.records) if r.language == lang])
        for lang in sorted({r.language for r in es.records})
    }
    stats = es.scores.credit.stats
    runs = Counter(es.responses[b][a:e] for b, spans in enumerate(es.scores.credit.diversity_spans) for a, e in spans)
    out["diversity_detail"] = {"groups": int(stats.n_groups), "threshold_groups": int(stats.threshold),
                               "high_freq_ngrams": int(len(stats.high_freq_ngrams)),
                               "top_templates": [{"text": t, "responses": c} for t, c in runs.most_common(5)]}
    out["notes"] = list(es.notes)
    return out


def per_record_means(es: EvalSet, values: np.ndarray, ids: list[str]) -> np.ndarray:
    """(len(ids),) mean of ``values`` over the rows of each record in ``ids`` (in that order)."""
    all_ids, rec_of_row = record_index(es.records, list(range(len(es.records))))
    sums, counts = record_sums(values, rec_of_row, len(all_ids))
    pos = {rid: k for k, rid in enumerate(all_ids)}
    at = np.asarray([pos[i] for i in ids], dtype=np.int64)
    return sums[at] / counts[at]


def compare(exp: EvalSet, base: EvalSet, bootstrap: Bootstrap, language: str | None = None) -> dict[str, Any]:
    """Paired predicted and simulated lifts (eq. 10) of ``exp`` over ``base`` with intervals."""
    def ids_of(es: EvalSet) -> list[str]:
        return list(OrderedDict.fromkeys(r.id for r in es.records if language is None or r.language == language))

    base_ids = set(ids_of(base))
    common = [i for i in ids_of(exp) if i in base_ids]
    out: dict[str, Any] = {"baseline": base.name, "paired_records": len(common),
                           "run_only_records": len(ids_of(exp)) - len(common),
                           "baseline_only_records": len(base_ids) - len(common)}
    if not common:
        none = Interval(None).to_json()
        out.update(predicted_lift=none, simulated_lift=none, gap=none, records_improved_simulated=None,
                   note="no record in both runs: lifts are n/a")
        return out
    e_pred, b_pred = per_record_means(exp, exp.predicted, common), per_record_means(base, base.predicted, common)
    e_true, b_true = per_record_means(exp, exp.truth_ctcvr, common), per_record_means(base, base.truth_ctcvr, common)
    counts = bootstrap.counts(len(common))
    out.update(
        predicted_lift=lift_interval(e_pred, b_pred, counts).to_json(),
        simulated_lift=lift_interval(e_true, b_true, counts).to_json(),
        gap=lift_gap_interval(e_pred, b_pred, e_true, b_true, counts).to_json(),
        records_improved_simulated=int(np.sum(e_true > b_true)),
    )
    return out


def evaluate_runs(sets: list[EvalSet], baseline: str | None, bootstrap: Bootstrap) -> list[dict[str, Any]]:
    """One result entry per scored run, in order; ``delta_vs_baseline`` None for the baseline itself."""
    base = next((s for s in sets if s.name == baseline), None)
    runs = []
    for es in sets:
        run = describe_set(es, bootstrap)
        run["delta_vs_baseline"] = None
        if base is not None and es is not base:
            run["delta_vs_baseline"] = compare(es, base, bootstrap)
            for lang, sub in run["by_language"].items():
                sub["delta_vs_baseline"] = compare(es, base, bootstrap, lang)
        runs.append(run)
    return runs


def run_result(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The entry of run ``name`` in an evaluation.json result."""
    for run in result["runs"]:
        if run["name"] == name:
            return run
    raise KeyError(f"no run named {name!r} (runs: {[r['name'] for r in result['runs']]})")


# ---- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m relate_eval.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="NAME=FILE",
                   help="one run (table row): a name ([A-Za-z0-9_.-]) and its texts, JSONL/CSV/parquet rows with the "
                   "record fields and 'response' (or 'title' + 'description'), e.g. from relate_eval.generate; "
                   "repeat for each run, in table order")
    p.add_argument("--baseline-run", default=None, metavar="NAME",
                   help="the run every delta is measured against (default: the --baseline file, else none)")
    p.add_argument("--generations", default=None, help="shorthand for --run experiment=FILE")
    p.add_argument("--baseline", default=None, help="shorthand for --run baseline=FILE --baseline-run baseline "
                   "(e.g. the reference ads or another model's generations)")
    p.add_argument("--ctcvr-model", required=True, help="ctcvr_model directory: the learned scorer whose prediction "
                   "is Table 1's delta CTCVR and Table 3's CTCVR")
    p.add_argument("--records", default=None, help="records file (records schema, or the RL parquet): fills the "
                   "record fields of rows that carry only 'id' and the ad; row fields win; unknown id = error")
    p.add_argument("--preset", default=None, help="reward preset for the sentence reward: model1..model4 | relate "
                   "(default relate); the table metrics use every component whatever the preset")
    p.add_argument("--config", default=None, help="reward config YAML (a 'relate:' section or its content)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for token lengths and n-grams (default: "
                   "SmolLM2-135M-Instruct's; use the same one for runs you compare)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                   help="record-level bootstrap resamples for the 95%% intervals (default 1000; 0: no intervals)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the resamples (default 0)")
    p.add_argument("--output-dir", default=None, help="where evaluation.md / evaluation.json / scored_*.jsonl go "
                   "(default: <first file's folder>/<its stem>_evaluation)")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    return p


def parse_runs(p: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[tuple[str, str]], str | None]:
    """([(name, file)] in table order, baseline name) from --run / --generations / --baseline."""
    runs: list[tuple[str, str]] = []
    if args.baseline:
        runs.append(("baseline", args.baseline))
    if args.generations:
        runs.append(("experiment", args.generations))
    for spec in args.run:
        name, sep, path = spec.partition("=")
        if not sep or not RUN_NAME.match(name) or not path:
            p.error(f"--run {spec!r}: expected NAME=FILE with NAME of letters, digits, '_', '.', '-'")
        runs.append((name, path))
    if not runs:
        p.error("give at least one --run NAME=FILE (or --generations FILE)")
    names = [n for n, _ in runs]
    if len(set(names)) < len(names):
        p.error(f"run names must be unique, got {names}")
    baseline = args.baseline_run or ("baseline" if args.baseline else None)
    if baseline is not None and baseline not in names:
        p.error(f"--baseline-run {baseline!r} is not a run (runs: {names})")
    return runs, baseline


class EvaluationError(ValueError):
    """Unusable input (a bad row, config, --ctcvr-model or missing reference); the message names it."""


@dataclass(frozen=True)
class ScoredRuns:
    """Every run scored by :func:`score_runs`, with the settings that scored them."""

    sets: list[EvalSet]
    settings: dict[str, Any]


def score_runs(runs: list[tuple[str, str]], ctcvr_model: str | Path, *, preset: str | None = None,
               config: str | None = None, records: str | None = None, tokenizer_dir: str | None = None,
               bootstrap: Bootstrap = Bootstrap()) -> ScoredRuns:
    """Read and score each ``(name, file)`` run (every component, predicted and simulated CTCVR).

    The library face of the CLI: ``main`` and the CPU ablation (``examples/ablation/cpu_ablation.py``)
    both score through it. Raises :class:`EvaluationError` naming the file, row and field.
    """
    from reward_fns.config import ConfigError, load_cli_config
    from reward_fns.ctcvr import MissingReference

    try:
        cfg = load_cli_config(config, preset)
    except (ConfigError, OSError) as e:
        raise EvaluationError(str(e)) from e
    try:
        index = load_records_index(records) if records else None
        sets = [read_set(path, name, index) for name, path in runs]
    except RecordError as e:
        raise EvaluationError(str(e)) from e

    from transformers import AutoTokenizer

    from data_prep.user_model import UserModel
    from reward_fns import RewardContext
    from reward_fns.ctcvr import load_ctcvr_scorer

    try:
        if not Path(ctcvr_model).is_dir():
            raise FileNotFoundError("not a directory")
        scorer = load_ctcvr_scorer(str(ctcvr_model))
        if scorer is None:
            raise RuntimeError("ctcvr_model provides no CTCVRScorer")
    except Exception as e:
        raise EvaluationError(f"--ctcvr-model {ctcvr_model}: {type(e).__name__}: {e}") from e
    if tokenizer_dir is None:
        from relate_common.assets import smollm2_tokenizer_dir

        tokenizer_dir = str(smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ctx = RewardContext.build(cfg, tokenizer=tokenizer)
    user_model = UserModel()
    for es in tqdm(sets, desc="score runs", unit="run", disable=None):
        try:
            score_set(es, ctx, tokenizer, scorer, user_model)
        except MissingReference as e:
            raise EvaluationError(f"{es.path}: {e}") from e
    settings = {"preset": cfg.preset, "ctcvr_model": str(ctcvr_model), "tokenizer": str(tokenizer_dir),
                "records": records, "simulator": SIMULATOR_NOTE,
                "diversity": "eq. 12 within each run (its own G_high across its record groups)",
                "lift": "eq. 10 on per-record means over the records both runs cover",
                "metrics": dict(METRICS),
                "bootstrap": {"resamples": bootstrap.resamples, "seed": bootstrap.seed, "unit": "record",
                              "interval": "percentile, 95%",
                              "held_fixed": "per-text values of the full run (G_high included)"}}
    return ScoredRuns(sets, settings)


@dataclass(frozen=True)
class EvaluationRun:
    """One evaluation (the CLI's flags, typed; defaults as the CLI's): ``runs`` are (name, generations file)."""

    runs: tuple[tuple[str, str], ...]
    ctcvr_model: str
    baseline: str | None = None  # the run every lift is measured against
    preset: str | None = None
    config: str | None = None
    records: str | None = None
    tokenizer: str | None = None
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    output_dir: str | None = None  # None: next to the first run's file
    quiet: bool = False


def run(job: EvaluationRun) -> int:
    """Score every run, compare against the baseline, write evaluation.md / .json / scored_*.jsonl; 0, or 2
    with a message on stderr when an input is unusable."""
    t0 = time.time()
    try:
        scored = score_runs(list(job.runs), job.ctcvr_model, preset=job.preset, config=job.config,
                            records=job.records, tokenizer_dir=job.tokenizer, bootstrap=job.bootstrap)
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sets = scored.sets
    result: dict[str, Any] = {"settings": scored.settings, "baseline": job.baseline,
                              "runs": evaluate_runs(sets, job.baseline, job.bootstrap)}
    result["seconds"] = round(time.time() - t0, 2)

    first = Path(job.runs[0][1])
    out_dir = Path(job.output_dir) if job.output_dir else first.parent / f"{first.stem}_evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(result)
    (out_dir / "evaluation.md").write_text(markdown, encoding="utf-8")
    write_json(jsonable(result), out_dir / "evaluation.json")
    for es in sets:
        write_jsonl(jsonable(scored_rows(es)), out_dir / f"scored_{es.name}.jsonl")
    if not job.quiet:
        print(markdown)
    print(f"wrote {out_dir / 'evaluation.md'}, {out_dir / 'evaluation.json'} in {result['seconds']} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runs, baseline = parse_runs(parser, args)
    first = Path(args.generations or runs[0][1])
    return run(EvaluationRun(runs=tuple(runs), ctcvr_model=args.ctcvr_model, baseline=baseline, preset=args.preset,
                             config=args.config, records=args.records, tokenizer=args.tokenizer,
                             bootstrap=Bootstrap(resamples=max(0, args.bootstrap), seed=args.bootstrap_seed),
                             output_dir=args.output_dir or str(first.parent / f"{first.stem}_evaluation"),
                             quiet=args.quiet))


if __name__ == "__main__":
    sys.exit(main())
