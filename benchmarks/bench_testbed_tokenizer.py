"""Benchmark: the testbed's tokenizer choice, its own byte-level BPE vs SmolLM2's, same model otherwise.

    python benchmarks/bench_testbed_tokenizer.py            # 200 corpus pairs, 5 timed steps each

For each tokenizer: the testbed's Llama (``testbed.config.ModelConfig``) over that vocabulary, its
parameter count, the mean prompt and ad length of the corpus pairs in tokens, and the median time of
one pre-training step (forward + backward + AdamW on ``PretrainConfig.batch_size`` pairs, torch's
default threads), after one warm-up step. The ratio is SmolLM2's step time over the BPE's.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def time_steps(model, encoded, pad_id: int, batch_size: int, steps: int) -> float:
    import torch

    from testbed.pretrain import collate

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for k in range(steps + 1):
        batch = collate(encoded[k * batch_size:(k + 1) * batch_size], pad_id)
        t = time.perf_counter()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def main() -> int:
    from transformers import AutoTokenizer

    from data_prep.config import SAMPLE_RECORDS
    from relate_common.assets import smollm2_tokenizer_dir
    from relate_common.records import load_records
    from testbed.config import TestbedConfig
    from testbed.corpus import build_corpus
    from testbed.model import CHATML_TEMPLATE, corpus_tokenizer, init_model
    from testbed.pretrain import encode_pairs

    config = TestbedConfig()
    steps = 5
    pairs = build_corpus(load_records(SAMPLE_RECORDS)[0], recombined=config.pretrain.recombined_records, seed=0,
                         prompt_style=config.prompt_style)
    bpe = corpus_tokenizer(pairs, config.tokenizer)
    smol = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    smol.chat_template = CHATML_TEMPLATE  # the same prompt text (SmolLM2's template renders these prompts alike)
    sample = pairs[:config.pretrain.batch_size * (steps + 1)]
    rows = {}
    for name, tok in (("testbed BPE", bpe), ("SmolLM2", smol)):
        encoded, _ = encode_pairs(sample, tok, 10_000)
        model = init_model(tok, config.model, seed=0)
        rows[name] = (len(tok), sum(p.numel() for p in model.parameters()),
                      statistics.fmean(len(e.prompt_ids) for e in encoded),
                      statistics.fmean(len(e.response_ids) for e in encoded),
                      time_steps(model, encoded, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                                 config.pretrain.batch_size, steps))
    base = rows["testbed BPE"][4]
    print(f"{'tokenizer':<12} {'vocab':>7} {'params':>11} {'prompt tok':>11} {'ad tok':>7} {'step s':>7} {'x BPE':>6}")
    for name, (vocab, params, prompt, ad, step) in rows.items():
        print(f"{name:<12} {vocab:>7} {params:>11,} {prompt:>11.1f} {ad:>7.1f} {step:>7.3f} {step / base:>6.2f}")
    print(f"\nmodel {config.model}; batch {config.pretrain.batch_size}; median of {steps} steps after a warm-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
