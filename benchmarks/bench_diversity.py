"""Benchmark: batch n-gram statistics (eq. 4-5), vectorised numpy/pandas vs plain Python.

    python benchmarks/bench_diversity.py [--repeat 5] [--seed 0] [--no-text]

Batch as in the paper (sec. 4.1): 288 prompts x G = 5 responses = 1440 responses, padded to
128 tokens, n = 2..10. Synthetic but shaped like a policy's rollouts:

* token ids drawn from a Zipf-like distribution over a 49,152-token vocabulary (SmolLM2's size);
* the 5 responses of a prompt share most of their content (one GRPO group agreeing with itself);
* 12 template phrases (4-10 tokens) are pasted into about 40% of the responses across prompts;
* lengths vary from 60 to 128 tokens (the rest is padding, masked out);
* as the text-side filter does for function words, a window made only of the 100 most frequent
  ids does not count (otherwise every pair of frequent tokens would be a "template").

Both implementations get the same inputs and must return the same G_high size, per-response
counts and token indicators; the script checks that before printing the times and the ratio.
With ``--no-text`` skipped, it also times the text side that the trainer runs on top
(content / label masks, the prompt-copy filter on decoded text, blacklist spans) on 1440
rendered ads from the bundled sample records, tokenised with the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reward_fns.config import DiversityConfig  # noqa: E402
from reward_fns.ngram_stats import batch_ngram_statistics, batch_ngram_statistics_reference  # noqa: E402

VOCAB = 49_152
N_GROUPS, G, L = 288, 5, 128


def synthetic_batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(token_ids (1440, 128) int64, valid (1440, 128) bool, group_ids (1440,) int64)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCAB + 1)
    p = 1.0 / ranks**1.0
    p /= p.sum()
    templates = [rng.choice(VOCAB, size=rng.integers(4, 11), p=p) for _ in range(12)]
    ids = np.zeros((N_GROUPS * G, L), dtype=np.int64)
    valid = np.zeros((N_GROUPS * G, L), dtype=bool)
    groups = np.repeat(np.arange(N_GROUPS), G)
    for g in range(N_GROUPS):
        base = rng.choice(VOCAB, size=L, p=p)  # the prompt's own content
        for k in range(G):
            b = g * G + k
            seq = base.copy()
            edit = rng.random(L) < 0.3  # samples of one prompt differ in ~30% of positions
            seq[edit] = rng.choice(VOCAB, size=int(edit.sum()), p=p)
            if rng.random() < 0.4:  # paste a shared template somewhere
                tpl = templates[rng.integers(len(templates))]
                at = rng.integers(0, L - len(tpl))
                seq[at : at + len(tpl)] = tpl
            n = int(rng.integers(60, L + 1))
            ids[b, :n] = seq[:n]
            valid[b, :n] = True
    return ids, valid, groups


def function_word_filter(ids: np.ndarray, cfg: DiversityConfig, top: int = 100) -> dict[int, np.ndarray]:
    """{n: (B, W_n) bool}: windows containing at least one id outside the ``top`` most frequent.

    Ids are drawn with rank = id, so the most frequent ids are the smallest.
    """
    content = np.concatenate([np.zeros((ids.shape[0], 1), dtype=np.int64), np.cumsum(ids >= top, axis=1)], axis=1)
    out = {}
    for n in range(cfg.n_min, cfg.n_max + 1):
        W = ids.shape[1] - n + 1
        out[n] = (content[:, n : n + W] - content[:, :W]) > 0
    return out


def timeit(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def text_side(repeat: int) -> None:
    """Time batch_credit's text work on 1440 real rendered ads (5 variants of 288 records)."""
    import json

    from relate_common.ad_format import render_ad
    from relate_common.assets import smollm2_tokenizer_dir
    from relate_common.records import parse_record
    from transformers import AutoTokenizer

    from reward_fns.compose import batch_credit

    path = ROOT / "data_prep" / "sample" / "ad_records.jsonl"
    if not path.exists():
        print("text side: skipped (no bundled sample records)")
        return
    recs = [parse_record(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    recs = (recs * 2)[:N_GROUPS]
    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir())
    tails = {"zh": ["", "立即咨询了解详情。", "点击预约，限时优惠。", "名额有限，立即预约！", "欢迎来电咨询。"],
             "en": ["", " Book now.", " Learn more today.", " Call now for a free quote.", " Limited spots, book today."]}
    responses, prompts, groups = [], [], []
    for g, r in enumerate(recs):
        for k in range(G):
            responses.append(render_ad(r.title, r.description + tails[r.language][k], r.language))
            prompts.append(r)
            groups.append(g)
    enc = [tok(x, add_special_tokens=False, return_offsets_mapping=True) for x in responses]
    ids = [e["input_ids"][:L] for e in enc]
    offs = [e["offset_mapping"][:L] for e in enc]
    from reward_fns.text import normalize_chars

    def run():
        normalize_chars.cache_clear()  # time the cold path: each training step sees new texts
        return batch_credit(responses, ids, offs, groups, prompts, "relate")

    t, credit = timeit(run, repeat)
    st = credit.stats
    print(f"text side (batch_credit on 1440 real ads, SmolLM2 tokens, copy filter + blacklist): {1000 * t:.1f} ms; "
          f"G_high {len(st.high_freq_ngrams)}, mean diversity score {st.diversity_score.mean():.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-text", action="store_true", help="skip the text-side timing (needs the tokenizer)")
    args = ap.parse_args(argv)

    cfg = DiversityConfig()
    ids, valid, groups = synthetic_batch(args.seed)
    elig = function_word_filter(ids, cfg)
    batch_ngram_statistics(ids, groups, cfg, valid=valid, eligible=elig)  # warm-up (imports, allocator)
    t_vec, vec = timeit(lambda: batch_ngram_statistics(ids, groups, cfg, valid=valid, eligible=elig), args.repeat)
    rows = [r[v].tolist() for r, v in zip(ids, valid)]  # valid tokens are a prefix of each row
    t_ref, ref = timeit(
        lambda: batch_ngram_statistics_reference(rows, groups.tolist(), cfg, eligible=elig), max(1, min(args.repeat, 2))
    )

    # Same answer, or the timing means nothing.
    assert len(ref["high_freq_ngrams"]) == len(vec.high_freq_ngrams), "G_high differs"
    assert list(vec.count) == ref["count"], "per-response counts differ"
    for b, r in enumerate(rows):
        assert vec.token_mask[b, : len(r)].tolist() == ref["token_mask"][b], f"token indicators differ (response {b})"

    windows = sum(int(o.sum()) for o in vec.counted.values())
    print(f"batch: {ids.shape[0]} responses x {ids.shape[1]} tokens, {N_GROUPS} groups x {G}, n = {cfg.n_min}..{cfg.n_max}, "
          f"{windows:,} n-gram windows")
    print(f"G_high: {len(vec.high_freq_ngrams)} n-grams in >= {vec.threshold} groups; "
          f"{int((vec.count > 0).sum())} responses penalised; mean diversity score {vec.diversity_score.mean():.3f}")
    print(f"vectorised (numpy + pandas hash tables): {1000 * t_vec:8.1f} ms (median of {args.repeat})")
    print(f"plain Python (tuples + Counter):         {1000 * t_ref:8.1f} ms")
    print(f"speed-up: {t_ref / t_vec:.1f}x")
    if not args.no_text:
        text_side(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
