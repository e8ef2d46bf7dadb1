"""reward_fns.credit's steps: step 2 (eligibility_masks) is the three masks it bundles, fed the
batch's prompts as reward_fns.prompt_copies normalises them; batch_credit reads its result."""

from __future__ import annotations

import json

import numpy as np
from relate_common.ad_format import parse_ad, render_ad
from relate_common.records import parse_record

from reward_fns.attribution import pad_batch
from reward_fns.config import preset
from reward_fns.credit import batch_credit
from reward_fns.ngram_stats import WindowKeys, group_codes, statistics_from_keys
from reward_fns.prompt_copies import prompt_fields, prompt_texts
from reward_fns.text import CharArrays
from reward_fns.text_filters import Eligibility, content_token_mask, eligibility_masks, text_eligibility, window_validity

from tests.fixtures import REPO as ROOT


def _batch(tokenizer):
    """12 rendered ads of the bundled records (some repeating their prompt's words), padded."""
    path = ROOT / "data_prep" / "sample" / "ad_records.jsonl"
    recs = [parse_record(json.loads(x)) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()][:6] * 2
    tails = ["", " Free shipping on all orders.", "全国包邮，立即咨询。"]
    texts = [render_ad(r.title, r.description + tails[i % 3], r.language) for i, r in enumerate(recs)]
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    ids, off, mask = pad_batch([e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc])
    return recs, texts, ids, off, mask


def _same(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[n], b[n]) for n in a)


def test_eligibility_masks_are_the_three_masks(tokenizer):
    recs, texts, ids, off, mask = _batch(tokenizer)
    D = preset("relate").diversity
    chars = CharArrays.build(texts, off)
    parsed = [parse_ad(t) for t in texts]
    for prompts in (recs, None):
        el = eligibility_masks(chars, texts, off, mask, parsed, prompts, D)
        assert isinstance(el, Eligibility)
        valid = content_token_mask(texts, parsed, off, mask, chars)
        oks = window_validity(valid, D.n_min, D.n_max)
        ptexts = [prompt_fields(r) for r in recs] if prompts is not None else None
        assert np.array_equal(el.valid, valid)
        assert _same(el.oks, oks)
        assert _same(el.eligible, text_eligibility(texts, off, oks, ptexts, D, chars))
    assert prompt_texts(recs) == [prompt_fields(r) for r in recs]


def test_batch_credit_statistics_are_those_of_the_steps(tokenizer):
    recs, texts, ids, off, mask = _batch(tokenizer)
    cfg = preset("relate")
    D = cfg.diversity
    groups = [r.id for r in recs]
    el = eligibility_masks(CharArrays.build(texts, off), texts, off, mask, None, recs, D)
    codes, n_groups = group_codes(groups)
    want = statistics_from_keys(WindowKeys(ids, D.n_min, D.n_max), el.oks, codes, n_groups, D, el.valid, el.eligible)
    got = batch_credit(texts, ids, off, groups, recs, cfg, response_mask=mask).stats
    assert np.array_equal(got.high_freq_ngrams, want.high_freq_ngrams)
    assert np.array_equal(got.count, want.count)
    assert np.array_equal(got.token_mask, want.token_mask)
    assert _same(got.counted, want.counted)
