"""Evaluate generated ads: paper Table 1 and Table 3, plus simulated online CTCVR (DESIGN.md sec. 5).

    python -m recipe.relate.evaluate --generations GEN.jsonl [--baseline BASE.jsonl]
        --ctcvr-model DIR [--records RECORDS] [--preset relate] [--config YAML]
        [--tokenizer DIR] [--output-dir DIR]

What is measured, per set of texts (the experiment, and the baseline when given):

* Table 1 (paper sec. 4.2): compliance rate (eq. 11), diversity (eq. 12) and delta CTCVR (eq. 10)
  of the experiment against the baseline, CTCVR as PREDICTED by the learned ESMM scorer
  (``--ctcvr-model``), i.e. what the RL reward saw.
* Table 3 (paper sec. 4.4): structural quality, CTCVR (%) predicted, diversity, semantic quality.
  Both tables come from ``reward_fns.score_batch`` and ``reward_fns.metrics.table1`` / ``table3``:
  the same code as the rewards and ``python -m reward_fns.score``, with every component computed
  (``compute="all"``) whatever the preset weights. Diversity is computed within each set (its own
  high-frequency n-grams G_high, counted across its record groups), as eq. 12 does.
* Simulated online CTCVR: the ground-truth user model of the log simulator
  (``data_prep.user_model.UserModel``) scores the same texts: each response is parsed with
  ``relate_common.ad_format.parse_ad`` and its title / description are scored with the record's
  query, bidword, selling points, industry and language. These are FRESH-IMPRESSION
  probabilities (p_click * p_cvr with no template fatigue): every text is judged as if shown for
  the first time, so repeating a template across records costs nothing here (diversity is
  measured separately). A response that does not parse scores as the ad with the fields that
  could be read (an empty title/description if none).
* Predicted vs simulated lift: delta CTCVR by the scorer and by the simulator, and their gap
  (predicted minus simulated, in percentage points). A large positive gap means the policy
  found what the scorer over-rewards: reward hacking made visible.

Lifts are PAIRED: only records (``id``) present in both sets count, CTCVR is first averaged over
the samples of each record, then over records (each record weighs equally, as in a query-level
traffic split), and eq. 10 is applied to those means. Without ``--baseline`` every delta is
n/a; nothing is estimated.

Input rows (JSONL, CSV or parquet; the format ``recipe.relate.generate`` writes and
``reward_fns.score`` reads): the record fields (id, query, bidword, selling_points, language,
industry, ...) and the ad, either as ``response`` (raw model text; ``title`` / ``description``
are then the record's reference ad) or as ``title`` + ``description`` (rendered with
``relate_common.ad_format.render_ad``, e.g. reference ads used as a baseline set). Optional
``group_id`` (default: the record id).

``--records FILE``: an ad-records file (JSONL/CSV/parquet in the records schema, or the verl RL
parquet of ``data_prep/build_dataset.py``, whose ``reward_model.ground_truth`` is used). Then a
generation row may carry only ``id`` plus its ad (``response``, or ``title`` + ``description``):
every record field the row lacks (or leaves empty) is filled from the record with that id;
fields present in the row win. The join applies to the experiment and the baseline file. A row
whose id is not in the records file is an error.

Output: the markdown report (printed and written to OUTPUT_DIR/evaluation.md), the same numbers
as JSON (OUTPUT_DIR/evaluation.json) and per-text scores (OUTPUT_DIR/scored_experiment.jsonl,
scored_baseline.jsonl). OUTPUT_DIR defaults to GEN's folder / ``<GEN stem>_evaluation``.

Exit codes: 0 ok; 2 invalid input (the message names the file, the row and the field) or an
unusable --ctcvr-model / config.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from relate_common.ad_format import parse_ad, render_ad
from relate_common.jsonio import jsonable, write_json, write_jsonl
from relate_common.records import AdRecord, RecordError, is_missing, parse_record, read_rows
from reward_fns.ctcvr import scorer_item

SIMULATOR_NOTE = ("data_prep.user_model.UserModel, fresh impressions (p_click * p_cvr, no template fatigue: "
                  "each text is scored as if never shown before)")
RECORD_FIELDS = ("id", "query", "bidword", "selling_points", "language", "landing_page", "industry", "title", "description")


# ---- input --------------------------------------------------------------------------------------


@dataclass
class EvalSet:
    """One set of generated texts and, after :func:`score_set`, its scores."""

    name: str
    path: str
    records: list[AdRecord]
    responses: list[str]
    groups: list[str]
    raws: list[dict[str, Any]]
    predicted: np.ndarray | None = None  # (N,) scorer pCTCVR of each text
    truth_click: np.ndarray | None = None  # (N,) simulator p_click (fresh)
    truth_cvr: np.ndarray | None = None  # (N,) simulator p_cvr
    scores: Any = None  # reward_fns.BatchScores
    notes: list[str] = field(default_factory=list)

    @property
    def truth_ctcvr(self) -> np.ndarray:
        return self.truth_click * self.truth_cvr


def _record_fields_of(raw: dict[str, Any]) -> dict[str, Any]:
    """A records-file row as plain record fields (an RL-parquet row: its ground truth)."""
    reward_model = raw.get("reward_model")
    if isinstance(reward_model, dict) and isinstance(reward_model.get("ground_truth"), dict):
        return dict(reward_model["ground_truth"])
    return raw


def load_records_index(path: str) -> dict[str, dict[str, Any]]:
    """{record id: raw record fields} from a records file; every row validated with parse_record."""
    index: dict[str, dict[str, Any]] = {}
    for row_no, raw in read_rows(path):
        if isinstance(raw, RecordError):
            raise raw
        fields = _record_fields_of(raw)
        rec = parse_record(fields, source=str(path), row=row_no)
        if rec.id in index:
            raise RecordError(str(path), row_no, "id", f"duplicate record id '{rec.id}'")
        index[rec.id] = fields
    if not index:
        raise RecordError(str(path), 0, None, "no records")
    return index


def join_record(raw: dict[str, Any], index: dict[str, dict[str, Any]] | None, source: str, row: int) -> dict[str, Any]:
    """``raw`` with the record fields it lacks filled from ``index`` (see ``--records``)."""
    if index is None:
        return raw
    rid = raw.get("id")
    if is_missing(rid) or str(rid).strip() == "":
        raise RecordError(source, row, "id", "missing: --records joins rows to records by id")
    if isinstance(rid, float) and rid.is_integer():
        rid = int(rid)
    key = str(rid).strip()
    if key not in index:
        raise RecordError(source, row, "id", f"record '{key}' is not in the --records file")
    present = {k: v for k, v in raw.items() if not is_missing(v) and not (isinstance(v, str) and not v.strip())}
    return {**index[key], **present}


def read_set(path: str, name: str, index: dict[str, dict[str, Any]] | None) -> EvalSet:
    """Read and validate a generations file; RecordError names the first bad row and field."""
    source = str(path)
    if not Path(path).is_file():
        raise RecordError(source, 0, None, "file not found")
    records, responses, groups, raws = [], [], [], []
    for row_no, raw in read_rows(path):
        if isinstance(raw, RecordError):
            raise raw
        response = raw.get("response")
        if response is not None and not isinstance(response, str):
            raise RecordError(source, row_no, "response", f"expected a string, got {type(response).__name__}")
        if response is None:
            for name_ in ("title", "description"):
                value = raw.get(name_)
                if is_missing(value) or not str(value).strip():
                    raise RecordError(source, row_no, name_, "missing: a row needs 'response' or 'title' + 'description'")
        merged = join_record(raw, index, source, row_no)
        rec = parse_record(merged, source=source, row=row_no)
        if response is None:
            response = render_ad(rec.title, rec.description, rec.language)
        gid = raw.get("group_id")
        records.append(rec)
        responses.append(response)
        groups.append(str(gid) if not is_missing(gid) else rec.id)
        raws.append(raw)
    if not records:
        raise RecordError(source, 0, None, "no rows")
    return EvalSet(name=name, path=source, records=records, responses=responses, groups=groups, raws=raws)


# ---- scoring ------------------------------------------------------------------------------------


def predict_ctcvr(scorer: Any, es: EvalSet) -> tuple[np.ndarray, list[float | None]]:
    """(predicted pCTCVR of each text, reference pCTCVR per text for the ctcvr reward component).

    Reference = the scorer's prediction for the record's reference ad, as in training; rows given
    as title + description are their own reference; rows without any use the set's mean reference.
    """
    parsed = [parse_ad(r) for r in es.responses]
    _, pred = scorer.score([scorer_item(rec, p.title, p.description) for rec, p in zip(es.records, parsed)])
    pred = np.asarray(pred, dtype=np.float64)
    ref: list[float | None] = [None] * len(pred)
    ref_ids = OrderedDict()
    for i, (rec, raw) in enumerate(zip(es.records, es.raws)):
        if "response" not in raw:
            ref[i] = float(pred[i])
        elif rec.title and rec.description:
            ref_ids.setdefault(rec.id, rec)
    if ref_ids:
        _, ref_pred = scorer.score([scorer_item(r, r.title, r.description) for r in ref_ids.values()])
        by_id = {rid: float(p) for rid, p in zip(ref_ids, ref_pred)}
        ref = [by_id.get(rec.id, r) if r is None else r for r, rec in zip(ref, es.records)]
    known = [r for r in ref if r is not None]
    if len(known) < len(ref):
        fill = float(np.mean(known)) if known else float(np.mean(pred))
        ref = [fill if r is None else r for r in ref]
        es.notes.append(f"{len(ref) - len(known)} row(s) without a reference ad use the mean reference {fill:.4g} "
                        "in the ctcvr reward component (not in Tables 1/3)")
    return pred, ref


def simulate_truth(user_model: Any, es: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    """Fresh-impression (p_click, p_cvr) of each text from the simulator's ground truth."""
    ads = []
    for rec, response in zip(es.records, es.responses):
        p = parse_ad(response)
        ads.append({"query": rec.query, "bidword": rec.bidword, "selling_points": rec.selling_points,
                    "industry": rec.industry, "language": rec.language, "title": p.title, "description": p.description})
    p_click, p_cvr = user_model.score(ads)  # shown_before=None: fresh, no fatigue
    return np.asarray(p_click, dtype=np.float64), np.asarray(p_cvr, dtype=np.float64)


def score_set(es: EvalSet, ctx: Any, tokenizer: Any, scorer: Any, user_model: Any) -> None:
    """Fill ``es`` with predicted CTCVR, simulated truth and ``reward_fns.score_batch`` scores."""
    from reward_fns import score_batch

    enc = [tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in es.responses]
    es.predicted, reference = predict_ctcvr(scorer, es)
    es.truth_click, es.truth_cvr = simulate_truth(user_model, es)
    es.scores = score_batch(es.records, es.responses, [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc],
                            group_ids=es.groups, ctx=ctx, predicted_ctcvr=es.predicted, reference_ctcvr=reference,
                            compute="all")


# ---- metrics ------------------------------------------------------------------------------------


def _mean(x: Any) -> float | None:
    vals = [float(v) for v in x if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def per_record_means(es: EvalSet, values: np.ndarray, ids: list[str]) -> list[float]:
    """Mean of ``values`` over the rows of each record in ``ids`` (in that order)."""
    sums: dict[str, list[float]] = {}
    for rec, v in zip(es.records, values):
        sums.setdefault(rec.id, []).append(float(v))
    return [float(np.mean(sums[i])) for i in ids]


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Rank correlation of two per-text series; None when undefined (< 3 texts or constant)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def set_metrics(es: EvalSet, idx: list[int] | None = None) -> dict[str, Any]:
    """Table 1 (without delta) and Table 3 rows plus simulated truth for the rows ``idx`` (all)."""
    from reward_fns import table1, table3

    idx = list(range(len(es.records))) if idx is None else idx
    resp = [es.scores.responses[i] for i in idx]
    div = [r.diversity_score for r in resp]
    pred = [float(es.predicted[i]) for i in idx]
    t1 = table1([r.compliant for r in resp], div, pred, None)
    t3 = table3([r.values() for r in resp], div, pred)
    truth = es.truth_ctcvr[idx]
    return {
        "n": len(idx),
        "records": len({es.records[i].id for i in idx}),
        "table1": t1,
        "table3": t3,
        "simulated": {
            "ctcvr_pct": 100 * float(np.mean(truth)),
            "p_click_pct": 100 * float(np.mean(es.truth_click[idx])),
            "p_cvr_pct": 100 * float(np.mean(es.truth_cvr[idx])),
        },
        "spearman_predicted_vs_simulated": spearman(np.asarray(pred), truth),
        "format_ok_rate": float(np.mean([resp_i.parsed.ok for resp_i in resp])),
        "mean_sentence_reward": _mean([r.sentence_reward for r in resp]),
    }


def describe_set(es: EvalSet) -> dict[str, Any]:
    """Overall and per-language metrics plus provenance of one set."""
    out = set_metrics(es)
    out["file"] = es.path
    models = Counter(str(r["model"]) for r in es.raws if r.get("model") is not None)
    out["models"] = dict(models)
    finish = Counter(str(r["finish_reason"]) for r in es.raws if r.get("finish_reason") is not None)
    out["finish_reasons"] = dict(finish)
    out["by_language"] = {
        lang: set_metrics(es, [i for i, r in enumerate(es.records) if r.language == lang])
        for lang in sorted({r.language for r in es.records})
    }
    stats = es.scores.credit.stats
    runs = Counter(es.responses[b][a:e] for b, spans in enumerate(es.scores.credit.diversity_spans) for a, e in spans)
    out["diversity_detail"] = {"groups": int(stats.n_groups), "threshold_groups": int(stats.threshold),
                               "high_freq_ngrams": int(len(stats.high_freq_ngrams)),
                               "top_templates": [{"text": t, "responses": c} for t, c in runs.most_common(5)]}
    out["notes"] = list(es.notes)
    return out


def compare(exp: EvalSet, base: EvalSet, language: str | None = None) -> dict[str, Any]:
    """Paired predicted and simulated lifts (eq. 10) of ``exp`` over ``base`` (see module docstring)."""
    from reward_fns import table1
    from reward_fns.metrics import delta_ctcvr

    def ids_of(es: EvalSet) -> list[str]:
        return list(OrderedDict.fromkeys(r.id for r in es.records if language is None or r.language == language))

    base_ids = set(ids_of(base))
    common = [i for i in ids_of(exp) if i in base_ids]
    out: dict[str, Any] = {"paired_records": len(common),
                           "experiment_only_records": len(ids_of(exp)) - len(common),
                           "baseline_only_records": len(base_ids) - len(common)}
    if not common:
        out.update(predicted_lift=None, simulated_lift=None, gap=None,
                   note="no record in both sets: lifts are n/a")
        return out
    e_pred, b_pred = per_record_means(exp, exp.predicted, common), per_record_means(base, base.predicted, common)
    e_true, b_true = per_record_means(exp, exp.truth_ctcvr, common), per_record_means(base, base.truth_ctcvr, common)
    rows = [i for i, r in enumerate(exp.records) if language is None or r.language == language]
    resp = [exp.scores.responses[i] for i in rows]
    # Table 1's delta through metrics.table1 (eq. 10 on the paired per-record means).
    predicted = table1([r.compliant for r in resp], [r.diversity_score for r in resp], e_pred, b_pred)["delta_ctcvr"]
    simulated = delta_ctcvr(e_true, b_true)
    out.update(
        predicted_ctcvr_pct={"experiment": 100 * float(np.mean(e_pred)), "baseline": 100 * float(np.mean(b_pred))},
        simulated_ctcvr_pct={"experiment": 100 * float(np.mean(e_true)), "baseline": 100 * float(np.mean(b_true))},
        predicted_lift=predicted,
        simulated_lift=simulated,
        gap=None if predicted is None or simulated is None else predicted - simulated,
        records_improved_simulated=int(sum(e > b for e, b in zip(e_true, b_true))),
    )
    return out


# ---- report -------------------------------------------------------------------------------------


def _f(x: float | None, kind: str = "num") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if kind == "pct":
        return f"{100 * x:.2f}%"
    if kind == "signed_pct":
        return f"{100 * x:+.2f}%"
    if kind == "pp":
        return f"{100 * x:+.2f} pp"
    if kind == "ctcvr":
        return f"{x:.4f}"
    return f"{x:.3f}"


def render_markdown(result: dict[str, Any]) -> str:
    """The evaluation report as markdown (Tables 1 and 3, predicted vs simulated lift, notes)."""
    s, exp, base, cmp_ = result["settings"], result["experiment"], result.get("baseline"), result.get("comparison")
    lines = ["# RELATE evaluation", ""]
    lines.append(f"- experiment: `{exp['file']}`: {exp['n']} texts, {exp['records']} records"
                 + (f", model {', '.join(f'`{m}`' for m in exp['models'])}" if exp["models"] else ""))
    if base:
        lines.append(f"- baseline: `{base['file']}`: {base['n']} texts, {base['records']} records"
                     + (f", model {', '.join(f'`{m}`' for m in base['models'])}" if base["models"] else ""))
    else:
        lines.append("- baseline: none (every delta is n/a)")
    lines.append(f"- reward preset `{s['preset']}` (all components computed); CTCVR scorer `{s['ctcvr_model']}`; "
                 f"tokenizer `{s['tokenizer']}`" + (f"; records joined from `{s['records']}`" if s["records"] else ""))
    lines.append(f"- simulated online CTCVR: {s['simulator']}")
    lines.append("- lifts are paired over the records both sets cover (per-record means, each record weighs equally)")
    lines.append("")

    sets = [("baseline", base), ("experiment", exp)] if base else [("experiment", exp)]

    def delta(name: str, key: str, lang: str | None = None) -> str:
        if name == "baseline":
            return "(baseline)"
        if not cmp_:
            return "n/a"
        c = cmp_ if lang is None else cmp_.get("by_language", {}).get(lang)
        return _f(c.get(key), "signed_pct") if c else "n/a"

    lines += ["## Table 1 (paper sec. 4.2)", "",
              "| set | Compliance Rate | Diversity | ΔCTCVR (predicted) | ΔCTCVR (simulated online) |",
              "|---|---:|---:|---:|---:|"]
    for name, m in sets:
        lines.append(f"| {name} | {_f(m['table1']['compliance_rate'], 'pct')} | {_f(m['table1']['diversity'])} | "
                     f"{delta(name, 'predicted_lift')} | {delta(name, 'simulated_lift')} |")
        for lang, sub in m["by_language"].items():
            lines.append(f"| &nbsp;&nbsp;{name} {lang} | {_f(sub['table1']['compliance_rate'], 'pct')} | "
                         f"{_f(sub['table1']['diversity'])} | {delta(name, 'predicted_lift', lang)} | "
                         f"{delta(name, 'simulated_lift', lang)} |")
    lines += ["", "## Table 3 (paper sec. 4.4)", "",
              "| set | Structural Quality | CTCVR(%) predicted | Diversity | Semantic Quality | CTCVR(%) simulated |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, m in sets:
        for label, sub in [(name, m)] + [(f"&nbsp;&nbsp;{name} {lang}", v) for lang, v in m["by_language"].items()]:
            t3 = sub["table3"]
            lines.append(f"| {label} | {_f(t3['structural_quality'])} | {_f(t3['ctcvr_pct'], 'ctcvr')} | "
                         f"{_f(t3['diversity'])} | {_f(t3['semantic_quality'])} | {_f(sub['simulated']['ctcvr_pct'], 'ctcvr')} |")
    lines += ["", "## Predicted vs simulated lift (reward hacking check)", ""]
    if not cmp_:
        lines.append("n/a: no baseline.")
    elif cmp_.get("predicted_lift") is None and cmp_.get("simulated_lift") is None:
        lines.append(f"n/a: {cmp_.get('note', 'no paired records')}.")
    else:
        lines += ["| | predicted (scorer) | simulated (user model) |", "|---|---:|---:|",
                  f"| CTCVR(%) baseline | {_f(cmp_['predicted_ctcvr_pct']['baseline'], 'ctcvr')} | "
                  f"{_f(cmp_['simulated_ctcvr_pct']['baseline'], 'ctcvr')} |",
                  f"| CTCVR(%) experiment | {_f(cmp_['predicted_ctcvr_pct']['experiment'], 'ctcvr')} | "
                  f"{_f(cmp_['simulated_ctcvr_pct']['experiment'], 'ctcvr')} |",
                  f"| ΔCTCVR | {_f(cmp_['predicted_lift'], 'signed_pct')} | {_f(cmp_['simulated_lift'], 'signed_pct')} |",
                  "",
                  f"Gap (predicted - simulated lift): **{_f(cmp_['gap'], 'pp')}** over {cmp_['paired_records']} paired "
                  f"records ({cmp_['records_improved_simulated']} improved under the simulator; "
                  f"{cmp_['experiment_only_records']} experiment-only and {cmp_['baseline_only_records']} "
                  "baseline-only records left out). A positive gap means the learned scorer rates the experiment, "
                  "relative to the baseline, higher than the simulated users do; after RL against that scorer a "
                  "large positive gap is reward hacking made visible."]
    lines.append("")
    lines.append("Per-text rank agreement of scorer and simulator (Spearman): "
                 + "; ".join(f"{name} {_f(m['spearman_predicted_vs_simulated'])}" for name, m in sets) + ".")
    lines += ["", "## Details", ""]
    for name, m in sets:
        d = m["diversity_detail"]
        fr = ", ".join(f"{k} {v}" for k, v in sorted(m["finish_reasons"].items())) or "n/a"
        lines.append(f"- {name}: format ok {_f(m['format_ok_rate'], 'pct')}; finish reasons: {fr}; mean sentence "
                     f"reward {_f(m['mean_sentence_reward'])}; simulated p_click {m['simulated']['p_click_pct']:.3f}%, "
                     f"p_cvr {m['simulated']['p_cvr_pct']:.3f}%; G_high: {d['high_freq_ngrams']} n-grams in >= "
                     f"{d['threshold_groups']} of {d['groups']} groups")
        for t in d["top_templates"][:3]:
            lines.append(f"  - penalised in {t['responses']} texts: `{t['text'][:60]}`")
        for note in m["notes"]:
            lines.append(f"  - note: {note}")
    return "\n".join(lines) + "\n"


# ---- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m recipe.relate.evaluate",
        description="Table 1 / Table 3 of the RELATE paper for a set of generated ads (optionally against a baseline "
        "set), with the learned CTCVR scorer's prediction AND the simulator's ground-truth (fresh-impression) "
        "CTCVR, and the gap between predicted and simulated lift. Full description: the module docstring.",
    )
    p.add_argument("--generations", required=True, help="experiment texts: JSONL/CSV/parquet rows with the record "
                   "fields and 'response' (or 'title' + 'description'), e.g. from recipe.relate.generate")
    p.add_argument("--baseline", default=None, help="baseline texts, same format (e.g. the reference ads or another "
                   "model's generations); without it every delta is n/a")
    p.add_argument("--ctcvr-model", required=True, help="ctcvr_model directory: the learned scorer whose prediction "
                   "is Table 1's delta CTCVR and Table 3's CTCVR")
    p.add_argument("--records", default=None, help="records file (records schema, or the RL parquet): fills the "
                   "record fields of rows that carry only 'id' and the ad; row fields win; unknown id = error")
    p.add_argument("--preset", default=None, help="reward preset for the sentence reward: model1..model4 | relate "
                   "(default relate); the table metrics use every component whatever the preset")
    p.add_argument("--config", default=None, help="reward config YAML (a 'relate:' section or its content)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for token lengths and n-grams (default: "
                   "SmolLM2-135M-Instruct's; use the same one for sets you compare)")
    p.add_argument("--output-dir", default=None, help="where evaluation.md / evaluation.json / scored_*.jsonl go "
                   "(default: <generations folder>/<generations stem>_evaluation)")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    return p


def scored_rows(es: EvalSet) -> list[dict[str, Any]]:
    """Per-text scores of one set (for inspection; not a reward_fns.score output)."""
    rows = []
    for i, (rec, raw, s) in enumerate(zip(es.records, es.raws, es.scores.responses)):
        rows.append({"row": i + 1, "id": rec.id, "sample": raw.get("sample"), "group_id": es.groups[i],
                     "language": rec.language, "response": es.responses[i], "compliant": s.compliant,
                     "diversity_score": s.diversity_score, "components": s.values(),
                     "sentence_reward": s.sentence_reward, "predicted_ctcvr": float(es.predicted[i]),
                     "simulated_ctcvr": float(es.truth_ctcvr[i]), "simulated_p_click": float(es.truth_click[i]),
                     "simulated_p_cvr": float(es.truth_cvr[i]), "format_problems": s.parsed.problems})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    from reward_fns.config import ConfigError
    from reward_fns.score import _load_config  # the reward CLI's config loading, shared

    try:
        cfg = _load_config(args.config, args.preset)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        index = load_records_index(args.records) if args.records else None
        exp = read_set(args.generations, "experiment", index)
        base = read_set(args.baseline, "baseline", index) if args.baseline else None
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from transformers import AutoTokenizer

    from data_prep.user_model import UserModel
    from reward_fns import RewardContext
    from reward_fns.ctcvr import load_ctcvr_scorer

    try:
        if not Path(args.ctcvr_model).is_dir():
            raise FileNotFoundError("not a directory")
        scorer = load_ctcvr_scorer(args.ctcvr_model)
        if scorer is None:
            raise RuntimeError("ctcvr_model provides no CTCVRScorer")
    except Exception as e:
        print(f"error: --ctcvr-model {args.ctcvr_model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    tok_dir = args.tokenizer
    if tok_dir is None:
        from relate_common.assets import smollm2_tokenizer_dir

        tok_dir = str(smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    ctx = RewardContext.build(cfg, tokenizer=tokenizer)
    user_model = UserModel()
    sets = [s for s in (base, exp) if s is not None]
    for es in tqdm(sets, desc="score sets", unit="set", disable=None):
        score_set(es, ctx, tokenizer, scorer, user_model)

    result: dict[str, Any] = {
        "settings": {"preset": cfg.preset, "ctcvr_model": str(args.ctcvr_model), "tokenizer": str(tok_dir),
                     "records": args.records, "simulator": SIMULATOR_NOTE,
                     "diversity": "eq. 12 within each set (its own G_high across its record groups)",
                     "lift": "eq. 10 on per-record means over the records both sets cover"},
        "experiment": describe_set(exp),
        "baseline": describe_set(base) if base else None,
        "comparison": None,
    }
    if base is not None:
        comparison = compare(exp, base)
        comparison["by_language"] = {lang: compare(exp, base, lang) for lang in sorted({r.language for r in exp.records})}
        result["comparison"] = comparison
        result["experiment"]["table1"]["delta_ctcvr"] = comparison["predicted_lift"]
        for lang, sub in result["experiment"]["by_language"].items():
            sub["table1"]["delta_ctcvr"] = comparison["by_language"][lang]["predicted_lift"]
    result["seconds"] = round(time.time() - t0, 2)

    out_dir = Path(args.output_dir) if args.output_dir else Path(args.generations).parent / f"{Path(args.generations).stem}_evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(result)
    (out_dir / "evaluation.md").write_text(markdown, encoding="utf-8")
    write_json(jsonable(result), out_dir / "evaluation.json")
    for es in sets:
        write_jsonl(jsonable(scored_rows(es)), out_dir / f"scored_{es.name}.jsonl")
    if not args.quiet:
        print(markdown)
    print(f"wrote {out_dir / 'evaluation.md'}, {out_dir / 'evaluation.json'} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
