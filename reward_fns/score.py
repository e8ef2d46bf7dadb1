"""Score a file of generated ads with the RELATE rewards and print Table 1 / Table 3.

    python -m reward_fns.score --input GEN.jsonl --output SCORED.jsonl [--preset relate]
        [--config FILE] [--ctcvr-model DIR] [--tokenizer DIR] [--summary-json F] [--skip-invalid]

Input rows (JSONL, CSV or parquet) carry the record fields (id, query, bidword, selling_points,
language, landing_page, ...) and the generated ad, either as ``response`` (the raw model text) or
as ``title`` + ``description`` (rendered with relate_common.ad_format.render_ad). Optional:
``group_id`` (default: the record id, so the G samples of one prompt form one group).

Output rows: the input fields, ``response``, every component value, ``sentence_reward`` under the
chosen preset, ``diversity_score``, ``compliant``, the triggers and the penalised character spans
(blacklist and G_high occurrences), and ``token_penalty`` for presets with token-level rewards.

CTCVR: with ``--ctcvr-model`` the ctcvr_model scorer predicts the generated ad and the record's
reference ad (when the row has a separate ``response`` and the record holds a reference
title / description); without it CTCVR is reported as n/a. Nothing is ever estimated.

Exit codes: 0 ok; 2 invalid input (the message names the row and the field), unless
--skip-invalid, which skips such rows and reports them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from relate_common.ad_format import render_ad
from relate_common.jsonio import jsonable
from relate_common.records import AdRecord, RecordError, parse_record, read_rows

from reward_fns.config import ConfigError, RewardConfig
from reward_fns.metrics import format_summary, table1, table3


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reward_fns.score", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="generated ads: .jsonl, .csv or .parquet")
    p.add_argument("--output", required=True, help="scored rows, JSONL")
    p.add_argument("--preset", default=None, help="model1 | model2 | model3 | model4 | relate (default: relate)")
    p.add_argument("--config", default=None, help="reward config YAML (a 'relate:' section or its content)")
    p.add_argument("--ctcvr-model", default=None, help="ctcvr_model directory; CTCVR is n/a without it")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2-135M-Instruct's)")
    p.add_argument("--summary-json", default=None, help="write the Table 1 / Table 3 summary here")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid rows instead of exiting with 2")
    return p


def _load_config(path: str | None, preset_name: str | None) -> RewardConfig:
    import yaml

    data: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping")
        data = loaded.get("relate", loaded) if set(loaded) == {"relate"} else loaded
        data = dict(data or {})
    if preset_name:
        data["preset"] = preset_name
    return RewardConfig.from_dict(data)


def read_generated(path: str, skip_invalid: bool) -> tuple[list[AdRecord], list[str], list[Any], list[dict], list[RecordError]]:
    """(records, responses, group ids, raw rows, rejected) from a generated-ads file."""
    records, responses, groups, raws, rejected = [], [], [], [], []
    for row_no, raw in read_rows(path):
        try:
            if isinstance(raw, RecordError):
                raise raw
            rec = parse_record(raw, source=str(path), row=row_no)
            response = raw.get("response")
            if response is not None and not isinstance(response, str):
                raise RecordError(str(path), row_no, "response", f"expected a string, got {type(response).__name__}")
            if response is None:
                for name in ("title", "description"):
                    if not rec.__dict__[name]:
                        raise RecordError(str(path), row_no, name, "missing: a row needs 'response' or 'title' + 'description'")
                response = render_ad(rec.title, rec.description, rec.language)
            records.append(rec)
            responses.append(response)
            gid = raw.get("group_id")
            groups.append(str(gid) if gid is not None else rec.id)
            raws.append(raw)
        except RecordError as err:
            if not skip_invalid:
                raise
            rejected.append(err)
    return records, responses, groups, raws, rejected


def _ctcvr(model_dir: str | None, records: list[AdRecord], responses: list[str], raws: list[dict]) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(predicted (N,), reference (N,) or None, note). None predicted = n/a."""
    if not model_dir:
        return None, None, "n/a (no --ctcvr-model)"
    from reward_fns.ctcvr import load_ctcvr_scorer, scorer_item

    scorer = load_ctcvr_scorer(model_dir)
    if scorer is None:
        return None, None, "n/a (ctcvr_model provides no CTCVRScorer)"
    from relate_common.ad_format import parse_ad

    items = []
    for rec, resp in zip(records, responses):
        p = parse_ad(resp)
        items.append(scorer_item(rec, p.title, p.description))
    _, pred = scorer.score(items)
    # A reference exists only when the generated ad came as 'response' and the record holds a
    # reference title / description; rows given as title + description ARE their own reference.
    ref_idx = [i for i, (rec, raw) in enumerate(zip(records, raws)) if "response" in raw and rec.title and rec.description]
    ref = None
    if ref_idx:
        ref_items = [scorer_item(records[i], records[i].title, records[i].description) for i in ref_idx]
        _, ref_pred = scorer.score(ref_items)
        ref = np.full(len(records), np.nan)
        ref[ref_idx] = ref_pred
    elif records:
        ref = np.asarray(pred, dtype=np.float64).copy()  # the rows are the reference ads themselves
    return np.asarray(pred, dtype=np.float64), ref, f"ctcvr_model scorer at {model_dir}"


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    t0 = time.time()
    try:
        cfg = _load_config(args.config, args.preset)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        records, responses, groups, raws, rejected = read_generated(args.input, args.skip_invalid)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for err in rejected:
        print(f"skipped: {err}", file=sys.stderr)
    if not records:
        print("error: no valid rows to score", file=sys.stderr)
        return 2

    from transformers import AutoTokenizer

    from reward_fns.compose import RewardContext, score_batch

    tok_dir = args.tokenizer
    if tok_dir is None:
        from relate_common.assets import smollm2_tokenizer_dir

        tok_dir = str(smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    enc = [tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in responses]
    ids = [e["input_ids"] for e in enc]
    offsets = [e["offset_mapping"] for e in enc]

    try:
        pred, ref, ctcvr_note = _ctcvr(args.ctcvr_model, records, responses, raws)
    except Exception as e:  # a model directory the user named but that cannot be used
        print(f"error: --ctcvr-model {args.ctcvr_model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    ctx = RewardContext.build(cfg, tokenizer=tokenizer)
    if pred is None and "ctcvr" in cfg.weights:
        # The preset's reward needs CTCVR; score everything else and say so, never invent it.
        print(f"note: preset '{cfg.preset}' weights ctcvr but CTCVR is {ctcvr_note}; "
              "sentence_reward excludes it", file=sys.stderr)
        cfg.weights.pop("ctcvr")
    ref_list = None if ref is None else [None if np.isnan(x) else float(x) for x in ref]
    if pred is not None and ref_list is not None and any(r is None for r in ref_list) and cfg.ctcvr.fallback_reference is None:
        # Rows without a reference ad: compare against the set's mean prediction, stated in the note.
        mean_ref = float(np.nanmean(ref)) if np.isfinite(ref).any() else float(np.mean(pred))
        ref_list = [mean_ref if r is None else r for r in ref_list]
        ctcvr_note += f"; rows without a reference ad use the mean reference {mean_ref:.4g}"
    scores = score_batch(
        records, responses, ids, offsets, group_ids=groups, ctx=ctx,
        predicted_ctcvr=pred, reference_ctcvr=ref_list, compute="all",
    )

    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as f:
        for raw, resp, s, p in zip(raws, responses, scores.responses, (pred if pred is not None else [None] * len(raws))):
            row = dict(raw)
            row["response"] = resp
            d = s.to_dict()
            row.update({f"reward_{k}": v for k, v in d["components"].items()})
            row["sentence_reward"] = d["sentence_reward"]
            row["diversity_score"] = d["diversity_score"]
            row["compliant"] = d["compliant"]
            row["predicted_ctcvr"] = None if p is None else float(p)
            row["triggers"] = d["triggers"]
            row["penalised_spans"] = d["penalised_spans"]
            if "token_penalty" in d:
                row["token_penalty"] = d["token_penalty"]
            f.write(json.dumps(jsonable(row), ensure_ascii=False) + "\n")

    values = [s.values() for s in scores.responses]
    div = [s.diversity_score for s in scores.responses]
    comp = [s.compliant for s in scores.responses]
    base = None if ref is None else [x for x in ref if np.isfinite(x)]
    t1 = table1(comp, div, None if pred is None else list(pred), base)
    t3 = table3(values, div, None if pred is None else list(pred))
    by_lang: dict[str, dict[str, Any]] = {}
    for lang in sorted({r.language for r in records}):
        idx = [i for i, r in enumerate(records) if r.language == lang]
        lp = None if pred is None else [pred[i] for i in idx]
        lb = None if ref is None else [ref[i] for i in idx if np.isfinite(ref[i])]
        by_lang[lang] = {
            "n": len(idx),
            "table1": table1([comp[i] for i in idx], [div[i] for i in idx], lp, lb),
            "table3": table3([values[i] for i in idx], [div[i] for i in idx], lp),
        }
    stats = scores.credit.stats
    # The penalised runs themselves (whole templates, not their n-gram pieces), most widespread first.
    runs = Counter(
        responses[b][a:e] for b, spans in enumerate(scores.credit.diversity_spans) for a, e in spans
    )
    templates = [{"text": t, "responses": c} for t, c in runs.most_common(10)]
    summary = {
        "input": str(args.input),
        "n": len(records),
        "rejected": [e.to_json() for e in rejected],
        "preset": cfg.preset,
        "ctcvr": ctcvr_note,
        "table1": t1,
        "table3": t3,
        "by_language": by_lang,
        "diversity": {"groups": stats.n_groups, "threshold_groups": stats.threshold,
                      "high_freq_ngrams": int(len(stats.high_freq_ngrams)), "top": templates},
        "mean_sentence_reward": float(np.mean([s.sentence_reward for s in scores.responses])),
        "seconds": round(time.time() - t0, 2),
    }
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(jsonable(summary), ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_summary(Path(args.input).name, t1, t3, len(records), by_lang))
    print(f"\nCTCVR: {ctcvr_note}")
    print(f"G_high: {summary['diversity']['high_freq_ngrams']} n-grams used by >= {stats.threshold} of {stats.n_groups} groups")
    for t in templates[:5]:
        print(f"  penalised in {t['responses']:>4} responses: {t['text']!r}")
    print(f"wrote {out_path} ({len(records)} rows, {len(rejected)} skipped) in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
