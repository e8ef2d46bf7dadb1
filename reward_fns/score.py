"""Score a file of generated ads with the RELATE rewards and print Table 1 / Table 3.

    python -m reward_fns.score --input GEN.jsonl --output SCORED.jsonl [--preset relate]
        [--config FILE] [--ctcvr-model DIR] [--tokenizer DIR] [--summary-json F] [--skip-invalid]

Input rows (JSONL, CSV or parquet; read by ``reward_fns.generated``) carry the record fields (id,
query, bidword, selling_points, language, landing_page, ...) and the generated ad, either as
``response`` (the raw model text) or as ``title`` + ``description`` (rendered with
relate_common.ad_format.render_ad). Optional: ``group_id`` (default: the record id, so the G
samples of one prompt form one group). An empty, whitespace or null ad is model output and is
scored (format invalid, lowest reward); only an absent ad field is an input error.

Output rows: the input fields, ``response``, every component value, ``sentence_reward`` under the
chosen preset, ``diversity_score``, ``compliant``, the triggers and the penalised character spans
(blacklist and G_high occurrences), and ``token_penalty`` for presets with token-level rewards.

CTCVR: with ``--ctcvr-model`` the ctcvr_model scorer predicts each generated ad, and the reference
pCTCVR follows ``reward_fns.ctcvr.predict_with_reference``, the same rule as the verl reward
manager: a row given as title + description is its own reference, else the record's reference ad
is scored, else ``relate.ctcvr.fallback_reference`` (none configured: exit 2 naming the record).
Without ``--ctcvr-model`` CTCVR is reported as n/a. Nothing is ever estimated.

Exit codes: 0 ok; 2 invalid input (the message names the row and the field), unless
--skip-invalid, which skips such rows and reports them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from relate_common.jsonio import jsonable
from relate_common.records import RecordError

from reward_fns.config import ConfigError, RewardConfig, load_cli_config
from reward_fns.ctcvr import MissingReference
from reward_fns.generated import GeneratedAds, read_generated
from reward_fns.metrics import format_summary, table1, table3


@dataclass(frozen=True)
class ScoreSettings:
    """Everything one scoring run reads; each field is the CLI flag ``--<name with dashes>``."""

    input: str = field(metadata={"help": "generated ads: .jsonl, .csv or .parquet"})
    output: str = field(metadata={"help": "scored rows, JSONL"})
    preset: str | None = field(default=None, metadata={"help": "model1 | model2 | model3 | model4 | relate (default: relate)"})
    config: str | None = field(default=None, metadata={"help": "reward config YAML (a 'relate:' section or its content)"})
    ctcvr_model: str | None = field(default=None, metadata={"help": "ctcvr_model directory; CTCVR is n/a without it"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer folder (default: SmolLM2-135M-Instruct's)"})
    summary_json: str | None = field(default=None, metadata={"help": "write the Table 1 / Table 3 summary here"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip invalid rows instead of exiting with 2"})


def _build_parser() -> argparse.ArgumentParser:
    """One flag per :class:`ScoreSettings` field: required without a default, a switch for a bool."""
    p = argparse.ArgumentParser(prog="python -m reward_fns.score", description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(ScoreSettings):
        flag, text = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.default is dataclasses.MISSING:
            p.add_argument(flag, required=True, help=text)
        elif f.type in (bool, "bool"):
            p.add_argument(flag, action="store_true", help=text)
        else:
            p.add_argument(flag, default=f.default, help=text)
    return p


def _ctcvr(model_dir: str | None, ads: GeneratedAds, cfg: RewardConfig) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """(predicted (N,), reference (N,), note); None = n/a (no scorer). The reference rule is
    ``reward_fns.ctcvr.predict_with_reference``'s, the same as the verl reward manager's."""
    if not model_dir:
        return None, None, "n/a (no --ctcvr-model)"
    from reward_fns.ctcvr import load_ctcvr_scorer, predict_with_reference

    scorer = load_ctcvr_scorer(model_dir)
    if scorer is None:
        return None, None, "n/a (ctcvr_model provides no CTCVRScorer)"
    from relate_common.ad_format import parse_ad

    pred, ref = predict_with_reference(scorer, ads.records, [parse_ad(r) for r in ads.responses], ads.is_reference,
                                       cfg.ctcvr)
    return pred, ref, f"ctcvr_model scorer at {model_dir}"


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` into :class:`ScoreSettings` and :func:`run` them."""
    return run(ScoreSettings(**vars(_build_parser().parse_args(argv))))


def run(settings: ScoreSettings) -> int:
    """Score ``settings.input``, write the scored rows (and the summary); 0, or 2 on invalid input."""
    t0 = time.time()
    try:
        cfg = load_cli_config(settings.config, settings.preset)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        ads = read_generated(settings.input, skip_invalid=settings.skip_invalid)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records, responses, groups, raws, rejected = ads.records, ads.responses, ads.groups, ads.raws, ads.rejected
    for err in rejected:
        print(f"skipped: {err}", file=sys.stderr)

    from transformers import AutoTokenizer

    from reward_fns.compose import RewardContext, score_batch

    tok_dir = settings.tokenizer
    if tok_dir is None:
        from relate_common.assets import smollm2_tokenizer_dir

        tok_dir = str(smollm2_tokenizer_dir())
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    enc = [tokenizer(r, add_special_tokens=False, return_offsets_mapping=True) for r in responses]
    ids = [e["input_ids"] for e in enc]
    offsets = [e["offset_mapping"] for e in enc]

    try:
        pred, ref, ctcvr_note = _ctcvr(settings.ctcvr_model, ads, cfg)
    except MissingReference as e:
        print(f"error: {settings.input}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a model directory the user named but that cannot be used
        print(f"error: --ctcvr-model {settings.ctcvr_model}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    ctx = RewardContext.build(cfg, tokenizer=tokenizer)
    if pred is None and "ctcvr" in cfg.weights:
        # The preset's reward needs CTCVR; score everything else and say so, never invent it.
        print(f"note: preset '{cfg.preset}' weights ctcvr but CTCVR is {ctcvr_note}; "
              "sentence_reward excludes it", file=sys.stderr)
        cfg.weights.pop("ctcvr")
    ref_list = None if ref is None else [float(x) for x in ref]
    scores = score_batch(
        records, responses, ids, offsets, group_ids=groups, ctx=ctx,
        predicted_ctcvr=pred, reference_ctcvr=ref_list, compute="all",
    )

    out_path = Path(settings.output)
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
    t1 = table1(comp, div, None if pred is None else list(pred), None if ref is None else list(ref))
    t3 = table3(values, div, None if pred is None else list(pred))
    by_lang: dict[str, dict[str, Any]] = {}
    for lang in sorted({r.language for r in records}):
        idx = [i for i, r in enumerate(records) if r.language == lang]
        lp = None if pred is None else [pred[i] for i in idx]
        lb = None if ref is None else [ref[i] for i in idx]
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
        "input": str(settings.input),
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
    if settings.summary_json:
        Path(settings.summary_json).write_text(json.dumps(jsonable(summary), ensure_ascii=False, indent=2), encoding="utf-8")
    print(format_summary(Path(settings.input).name, t1, t3, len(records), by_lang))
    print(f"\nCTCVR: {ctcvr_note}")
    print(f"G_high: {summary['diversity']['high_freq_ngrams']} n-grams used by >= {stats.threshold} of {stats.n_groups} groups")
    for t in templates[:5]:
        print(f"  penalised in {t['responses']:>4} responses: {t['text']!r}")
    print(f"wrote {out_path} ({len(records)} rows, {len(rejected)} skipped) in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
