"""Build the testbed: corpus -> tokenizer -> random Llama -> corpus pre-training -> a Hugging Face folder.

The folder loads like any causal LM (``AutoModelForCausalLM`` / ``AutoTokenizer``), so verl's SFT
trainer, verl's RL loop on the CPU backend and ``relate_eval.generate`` take it as they take
SmolLM2. ``testbed.json`` beside the weights records the settings, the corpus, the loss curve and the
time of each phase. The folder is written under a temporary name and renamed into place, so an
interrupted build never leaves a half-written model where a finished one is expected.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.config import TestbedConfig
from testbed.copy_supervision import LOSS_NAMES
from testbed.corpus import build_corpus
from testbed.model import corpus_tokenizer, init_model
from testbed.pretrain import encode_pairs, pretrain
from relate_common.jsonio import write_json
from relate_common.records import AdRecord

REPORT_FILE = "testbed.json"
NAME = "relate-verl testbed (not a model to deploy)"


def build_testbed(records: Sequence[AdRecord], output: Path, config: TestbedConfig = TestbedConfig(),
                  progress: bool = True) -> dict[str, Any]:
    """Build the testbed from ``records`` into ``output`` (replaced if present); return its report."""
    from tqdm import tqdm

    timings: dict[str, float] = {}
    t = time.perf_counter()
    pairs = build_corpus(records, recombined=config.pretrain.recombined_records, seed=config.seed,
                         prompt_style=config.prompt_style, invented_share=config.pretrain.invented_share,
                         left_out_variants=config.pretrain.left_out_variants)
    timings["corpus_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tokenizer = corpus_tokenizer(pairs, config.tokenizer)
    encoded, dropped = encode_pairs(pairs, tokenizer, config.pretrain.max_length)
    timings["tokenizer_s"] = time.perf_counter() - t

    model = init_model(tokenizer, config.model, config.seed)
    bar = tqdm(total=config.pretrain.steps, desc="testbed pre-training", unit="step", disable=not progress)

    def log(row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}")

    t = time.perf_counter()
    curve = pretrain(model, encoded, tokenizer.pad_token_id, config.pretrain, config.seed, log)
    bar.close()
    timings["pretrain_s"] = time.perf_counter() - t

    report = {
        "name": NAME,
        "config": dataclasses.asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "corpus": {
            "pairs": len(pairs), "pairs_used": len(encoded), "dropped_over_max_length": dropped,
            "records": len({p.record_id for p in pairs}),
            "by_language": dict(sorted(Counter(p.language for p in pairs).items())),
            "mean_prompt_tokens": statistics.fmean(len(e.prompt_ids) for e in encoded),
            "mean_ad_tokens": statistics.fmean(len(e.response_ids) for e in encoded),
            "copied_ad_token_share": sum(len(e.copies) for e in encoded) / sum(len(e.response_ids) for e in encoded),
        },
        "loss_first": curve[0]["loss"], "loss_last_50": statistics.fmean(r["loss"] for r in curve[-50:]),
        "copy_losses_last_50": {k: statistics.fmean(r[k] for r in curve[-50:]) for k in LOSS_NAMES},
        "curve": [{k: r[k] for k in ("step", "loss", *LOSS_NAMES)} for r in curve],
        "timings": timings,
    }
    tmp = output.with_name(output.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(report, tmp / REPORT_FILE)
    shutil.rmtree(output, ignore_errors=True)
    os.replace(tmp, output)
    return report
