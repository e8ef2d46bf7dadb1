"""The whole-batch (vectorised) reward code equals the per-response code it replaced.

benchmarks/bench_advantage.py made the trainer-side batch step fast: batch_credit's text side
(normalisation, character flags, label / newline masks, function words, the prompt-copy filter),
n-gram hashing and G_high counting, the blacklist scan, decode_with_offsets and pad_batch. The
``ref_*`` functions below are the implementations as they were before (reward_fns at commit
2b38417), kept verbatim apart from names; every test feeds both the same inputs (hypothesis,
hostile texts, the real SmolLM2 tokenizer, the bundled records) and asks for identical outputs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relate_common.ad_format import parse_ad, render_ad
from relate_common.records import AdRecord, parse_record

import reward_fns.ngram_stats as ngram_stats
import reward_fns.prompt_copies as prompt_copies
import reward_fns.text_filters as text_filters
from reward_fns.attribution import (
    _byte_decoder,
    _is_byte_level,
    _utf8_chars,
    batch_spans_to_token_mask,
    decode_batch_with_offsets,
    decode_with_offsets,
    pad_batch,
    spans_to_token_mask,
    token_mask_to_spans,
    token_penalty,
)
from reward_fns.compose import BatchCredit, batch_credit
from reward_fns.config import DiversityConfig, RiskConfig, preset, resolve_config
from reward_fns.ngram_stats import (
    WindowKeys,
    _powers,
    batch_ngram_statistics,
    diversity_scores,
    group_codes,
    group_threshold,
    high_freq_ngrams,
    ngram_keys,
    statistics_from_keys,
    token_indicator,
)
from reward_fns.prompt_copies import _copied_chars_loop, _match_lengths
from reward_fns.prompt_copies import prompt_fields as _prompt_fields
from reward_fns.prompt_copies import prompt_texts as _prompt_texts
import reward_fns.risk as risk_mod
from reward_fns.literals import literal_presence, required_clauses, required_literals, texts_containing
from reward_fns.risk import (
    Lexicon,
    _Category,
    load_lexicon,
)
from reward_fns.text import (
    CP_LIMIT,
    CharArrays,
    KeyTable,
    _norm_char,
    char_table,
    code_points,
    label_spans,
    label_spans_batch,
    normalize_batch,
    normalize_chars,
)
from reward_fns.text_filters import (
    _ascii_words,
    _content_chars,
    _stopwords,
    content_token_mask,
    text_eligibility,
    window_validity,
)

from tests.fixtures import REPO as ROOT

# =============================================================================================
# Reference implementations (reward_fns before the performance work), verbatim apart from names
# =============================================================================================

_REF_ASCII_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def ref_normalize_chars(text: str) -> str:
    if text.isascii():
        return _REF_ASCII_CTRL_RE.sub(" ", text.lower())
    return "".join(_norm_char(c) for c in text)


_P = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def ref_mix64(x):
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def ref_ngram_keys(token_ids, valid, n_min, n_max):
    ids = np.asarray(token_ids)
    B, L = ids.shape
    x = ids.astype(np.uint64) + np.uint64(1)
    v = np.asarray(valid, dtype=bool)
    keys, oks = {}, {}
    h, ok = x, v
    with np.errstate(over="ignore"):
        for n in range(1, n_max + 1):
            if n > 1:
                if n > L:
                    h = np.zeros((B, 0), dtype=np.uint64)
                    ok = np.zeros((B, 0), dtype=bool)
                else:
                    h = h[:, :-1] * _P + x[:, n - 1 :]
                    ok = ok[:, :-1] & v[:, n - 1 :]
            if n >= n_min:
                keys[n] = ref_mix64(h ^ np.uint64(n * 0x100000001B3))
                oks[n] = ok
    return keys, oks


def ref_group_frequency(keys, groups, n_groups):
    codes, uniques = pd.factorize(keys)
    codes = codes.astype(np.int64)
    g = max(n_groups, 1)
    pairs = pd.unique(codes * g + groups)
    freq = np.bincount(pairs // g, minlength=len(uniques))
    return codes, np.asarray(uniques), freq


def ref_high_freq_ngrams(keys, oks, counted, group_codes_, n_groups, threshold):
    ns = sorted(keys)
    hits, high_keys, high_freq = {}, [], []
    frequent_prev = None
    same = all(counted[n] is oks[n] for n in ns)
    for n in ns:
        k = keys[n]
        B, W = k.shape
        cand = oks[n]
        if frequent_prev is not None and n - 1 in keys:
            cand = cand & frequent_prev[:, :W] & frequent_prev[:, 1 : W + 1]
        groups = np.broadcast_to(group_codes_[:, None], (B, W))
        frequent = np.zeros((B, W), dtype=bool)
        hit = np.zeros((B, W), dtype=bool)
        if cand.any():
            codes, uniq, freq = ref_group_frequency(k[cand], groups[cand], n_groups)
            frequent[cand] = (freq >= threshold)[codes]
            if same:
                hit = frequent
                high_keys.append(uniq[freq >= threshold])
                high_freq.append(freq[freq >= threshold])
            else:
                csel = cand & counted[n]
                if csel.any():
                    c2, u2, f2 = ref_group_frequency(k[csel], groups[csel], n_groups)
                    hit[csel] = (f2 >= threshold)[c2]
                    high_keys.append(u2[f2 >= threshold])
                    high_freq.append(f2[f2 >= threshold])
        hits[n] = hit
        frequent_prev = frequent
    hk = np.concatenate(high_keys).astype(np.uint64) if high_keys else np.zeros(0, dtype=np.uint64)
    hf = np.concatenate(high_freq).astype(np.int64) if high_freq else np.zeros(0, dtype=np.int64)
    return hk, hf, hits


def ref_token_indicator(hits, length):
    any_hits = next(iter(hits.values())) if hits else None
    B = any_hits.shape[0] if any_hits is not None else 0
    diff = np.zeros((B, length + 1), dtype=np.int32)
    for n, h in hits.items():
        W = h.shape[1]
        if W == 0:
            continue
        hi = h.astype(np.int32)
        diff[:, :W] += hi
        diff[:, n : n + W] -= hi
    return np.cumsum(diff, axis=1)[:, :length] > 0


def ref_batch_ngram_statistics(token_ids, group_ids, cfg, valid=None, eligible=None):
    ids = np.asarray(token_ids)
    B, L = ids.shape
    v = np.ones((B, L), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    codes, n_groups = group_codes(group_ids)
    keys, oks = ref_ngram_keys(ids, v, cfg.n_min, cfg.n_max)
    counted = {n: (oks[n] & eligible[n]) if eligible is not None else oks[n] for n in keys}
    thr = group_threshold(n_groups, cfg)
    high, freq, hits = ref_high_freq_ngrams(keys, oks, counted, codes, n_groups, thr)
    count = np.zeros(B, dtype=np.int64)
    for h in hits.values():
        count += h.sum(axis=1)
    mask = ref_token_indicator(hits, L) & v
    score, content = diversity_scores(mask, v)
    return dict(keys=keys, counted=counted, hits=hits, high_freq_ngrams=high, group_freq=freq, threshold=thr,
                n_groups=n_groups, count=count, token_mask=mask, content_tokens=content, diversity_score=score)


def ref_char_flags(texts, width):
    B = len(texts)
    nonspace = np.zeros((B, width), dtype=bool)
    alnum = np.zeros((B, width), dtype=bool)
    for b, t in enumerate(texts):
        if not t:
            continue
        ns = re.sub(r"[^\x01]", "\x00", re.sub(r"\S", "\x01", t))
        an = re.sub(r"[^\x01]", "\x00", re.sub(r"[^\W_]", "\x01", t))
        nonspace[b, : len(t)] = np.frombuffer(ns.encode("latin-1"), dtype=np.uint8).astype(bool)
        alnum[b, : len(t)] = np.frombuffer(an.encode("latin-1"), dtype=np.uint8).astype(bool)
    return nonspace, alnum


_REF_ASCII_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def ref_content_chars(texts, alnum, stopwords):
    content = alnum.copy()
    if not stopwords:
        return content
    en, zh = _stopwords(stopwords)
    for b, t in enumerate(texts):
        for m in _REF_ASCII_WORD_RE.finditer(t):
            if m.group(0) in en:
                content[b, m.start() : m.end()] = False
        if zh is not None:
            for m in zh.finditer(t):
                content[b, m.start() : m.end()] = False
    return content


def ref_gather(a, idx):
    return np.take_along_axis(a, idx.reshape(idx.shape[0], -1), axis=1).reshape(idx.shape)


_REF_NEWLINE_RE = re.compile(r"[\r\n]+")


@dataclass
class RefCharArrays:
    texts: list
    width: int
    nonspace: np.ndarray
    alnum: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray

    @classmethod
    def build(cls, responses, offsets):
        width = max([len(r) for r in responses] + [0]) + 1
        texts = [ref_normalize_chars(r) for r in responses]
        nonspace, alnum = ref_char_flags(texts, width)
        s, e = ref_trimmed_token_spans(nonspace, np.asarray(offsets, dtype=np.int64), width)
        return cls(texts, width, nonspace, alnum, s, e)


def ref_content_token_mask(responses, parsed, offsets, mask, chars):
    B, L = mask.shape
    width = chars.width
    noncontent = np.zeros((B, width), dtype=np.int32)
    for b, (resp, p) in enumerate(zip(responses, parsed)):
        for a, e in label_spans(resp, p):
            noncontent[b, a:e] = 1
        for m in _REF_NEWLINE_RE.finditer(resp):
            noncontent[b, m.start() : m.end()] = 1
    cum = np.concatenate([np.zeros((B, 1), dtype=np.int32), np.cumsum(noncontent, axis=1)], axis=1)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    raw_s = np.clip(offsets[..., 0], 0, width - 1)
    raw_e = np.clip(offsets[..., 1], 0, width - 1)
    a = np.where(e_tok > s_tok, s_tok, raw_s)
    e = np.where(e_tok > s_tok, e_tok, raw_e)
    bad = ref_gather(cum, e) - ref_gather(cum, a)
    return np.asarray(mask, dtype=bool) & (raw_e > raw_s) & (bad == 0)


def ref_trimmed_token_spans(nonspace, offsets, width):
    B = nonspace.shape[0]
    pos = np.arange(width, dtype=np.int64)
    big = np.int64(width)
    nxt = np.where(nonspace, pos[None, :], big)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    prv = np.where(nonspace, pos[None, :] + 1, 0)
    prv = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.maximum.accumulate(prv, axis=1)], axis=1)
    starts = np.clip(offsets[..., 0], 0, width - 1)
    ends = np.clip(offsets[..., 1], 0, width)
    return ref_gather(nxt, starts), ref_gather(prv, ends)


def ref_text_eligibility(responses, offsets, oks, prompt_texts, cfg, chars):
    B = len(responses)
    texts, alnum = chars.texts, chars.alnum
    alnum_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(alnum, axis=1)], axis=1)
    content = ref_content_chars(texts, alnum, cfg.stopwords)
    content_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(content, axis=1)], axis=1)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    ns = sorted(oks)
    out = {}
    for n in ns:
        W = oks[n].shape[1]
        if W == 0:
            out[n] = np.zeros((B, 0), dtype=bool)
            continue
        s = s_tok[:, :W]
        e = np.maximum(e_tok[:, n - 1 : n - 1 + W], s)
        letters = ref_gather(alnum_cum, e) - ref_gather(alnum_cum, s)
        words = ref_gather(content_cum, e) - ref_gather(content_cum, s)
        out[n] = oks[n] & (letters >= cfg.min_ngram_chars) & (words > 0)
    if cfg.exclude_prompt_copies and prompt_texts is not None and ns:
        width = chars.width
        copied = np.zeros((B, width), dtype=np.int32)
        for b in range(B):
            prompt = prompt_texts[b]
            if not prompt:
                continue
            text = texts[b]
            in_prompt = set(prompt)
            starts = s_tok[b].tolist()
            ends = e_tok[b].tolist()
            ok_rows = {n: oks[n][b].tolist() for n in ns}
            counts = {n: out[n][b].tolist() for n in ns}
            for t in range(len(ok_rows[ns[0]])):
                s = starts[t]
                if s < len(text) and text[s] not in in_prompt:
                    continue
                region_end = -1
                for n in ns:
                    row = ok_rows[n]
                    if t >= len(row) or not row[t]:
                        break
                    e = ends[t + n - 1]
                    if e <= s:
                        continue
                    if text[s:e] not in prompt:
                        break
                    if counts[n][t]:
                        region_end = e
                if region_end > s:
                    copied[b, s:region_end] = 1
        copied_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(copied, axis=1)], axis=1)
        for n in ns:
            W = oks[n].shape[1]
            if W == 0:
                continue
            s = s_tok[:, :W]
            e = np.maximum(e_tok[:, n - 1 : n - 1 + W], s)
            out[n] &= (ref_gather(copied_cum, e) - ref_gather(copied_cum, s)) == 0
    return out


def ref_pad_batch(token_ids, offsets, response_mask=None):
    if isinstance(token_ids, np.ndarray) and token_ids.ndim == 2:
        ids = token_ids.astype(np.int64)
        off = np.asarray(offsets, dtype=np.int64).reshape(ids.shape[0], ids.shape[1], 2)
        mask = np.ones(ids.shape, dtype=bool) if response_mask is None else np.asarray(response_mask, dtype=bool)
        return ids, off, mask
    rows = [list(map(int, r)) for r in token_ids]
    B = len(rows)
    L = max([len(r) for r in rows] + [1])
    ids = np.zeros((B, L), dtype=np.int64)
    off = np.zeros((B, L, 2), dtype=np.int64)
    mask = np.zeros((B, L), dtype=bool)
    for b, (r, o) in enumerate(zip(rows, offsets)):
        if len(o) != len(r):
            raise ValueError(f"response {b}: {len(r)} token ids but {len(o)} offsets")
        ids[b, : len(r)] = r
        if r:
            off[b, : len(r)] = np.asarray(o, dtype=np.int64).reshape(len(r), 2)
        mask[b, : len(r)] = True
    if response_mask is not None:
        mask &= np.asarray(response_mask, dtype=bool)[:, :L]
    return ids, off, mask


def ref_decode_with_offsets(tokenizer, ids):
    ids = [int(i) for i in ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {i for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if getattr(tok, "special", False)}
    assert _is_byte_level(tokenizer)
    decoder = _byte_decoder()
    added = {v: k for k, v in (tokenizer.get_added_vocab() or {}).items()}
    pieces = []
    for tok_id, tok in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if tok_id in special:
            pieces.append(b"")
        elif tok_id in added:
            pieces.append(added[tok_id].encode("utf-8"))
        elif tok is None:
            pieces.append(b"")
        else:
            pieces.append(bytes(decoder[c] for c in tok if c in decoder))
    text, index = _utf8_chars(b"".join(pieces))
    offsets = np.zeros((len(ids), 2), dtype=np.int64)
    pos = 0
    for t, piece in enumerate(pieces):
        if piece:
            offsets[t] = (index[pos], index[pos + len(piece) - 1] + 1)
            if offsets[t, 1] <= offsets[t, 0]:
                offsets[t] = (index[pos], index[pos] + 1)
        else:
            c = index[pos] if pos < len(index) else len(text)
            offsets[t] = (c, c)
        pos += len(piece)
    return text, offsets


def ref_find(lexicon, response):
    norm = ref_normalize_chars(response)
    hits = []
    for cat in lexicon.categories:
        excluded = [m.span() for rx in cat.exceptions for m in rx.finditer(norm)]
        for rx in cat.regexes:
            for m in rx.finditer(norm):
                a, b = m.span()
                if b <= a or any(x <= a and b <= y for x, y in excluded):
                    continue
                hits.append((cat.name, m.group(0), (a, b), response[a:b]))
    uniq = {(h[0], h[2]): h for h in hits}
    return sorted(uniq.values(), key=lambda h: (h[2], h[0]))


def ref_batch_credit(responses, token_ids, offsets, group_ids, prompts, config=None, response_mask=None):
    cfg = resolve_config(config)
    ids, off, mask = ref_pad_batch(token_ids, offsets, response_mask)
    B, L = ids.shape
    parsed = [parse_ad(r) for r in responses]
    chars = RefCharArrays.build(responses, off)
    valid = ref_content_token_mask(responses, parsed, off, mask, chars)
    D = cfg.diversity
    _, oks = ref_ngram_keys(ids, valid, D.n_min, D.n_max)
    ptexts = [_prompt_fields(p) for p in prompts] if prompts is not None else None
    eligible = ref_text_eligibility(responses, off, oks, ptexts, D, chars)
    stats = ref_batch_ngram_statistics(ids, list(group_ids), D, valid=valid, eligible=eligible)
    penalty = np.maximum(D.floor, -D.delta_d * np.asarray(stats["count"], dtype=np.float64)) + 0.0
    div_sentence = "diversity" in cfg.weights and not cfg.is_token_level("diversity")
    sentence_div = cfg.weights.get("diversity", 0.0) * penalty if div_sentence else np.zeros(B)
    lex = load_lexicon(cfg.risk)
    bl_spans = [[h[2] for h in ref_find(lex, r)] for r in responses]
    bl_mask = batch_spans_to_token_mask(bl_spans, off, mask)
    use_bl = "risk_blacklist" in cfg.weights and cfg.is_token_level("risk_blacklist")
    use_div = "diversity" in cfg.weights and cfg.is_token_level("diversity")
    r_token = token_penalty(bl_mask if use_bl else None, stats["token_mask"] if use_div else None,
                            cfg.credit.lambda1, cfg.credit.lambda2, (B, L))
    div_spans = [token_mask_to_spans(stats["token_mask"][b], off[b], responses[b]) for b in range(B)]
    return dict(stats=stats, diversity_penalty=penalty, sentence_diversity=np.asarray(sentence_div, dtype=np.float64),
                blacklist_mask=bl_mask, token_penalty=r_token, mask=mask, blacklist_spans=bl_spans,
                diversity_spans=div_spans)


# =============================================================================================
# Inputs
# =============================================================================================

SPECIAL = [
    "", " ", "\n\n\t ", "😀" * 30, "\x00\x01\x07\x1b\x7f", "\u200b\u200d\ufeff\u202e", "Title:\nDescription:",
    "标题：\n描述：", "Title: ＢＥＳＴ ＃１ ｆｒｅｅ\nDescription: ｒｉｓｋ－ｆｒｅｅ １００％",
    "标题：最好的 best 課程 🚀\n描述：保证通过！！！ visit www.x.com call 13812345678",
    "Title: a\r\nDescription: b\r\n", "Description: only\nTitle: swapped\nTitle: twice", "\ufffd\ufffd",
    "Title: it's the best, isn't it? ab'cd9e a'b'c'd x'1\nDescription: of the 的 是 了 free shipping",
    "标题：全国包邮 限时优惠\n描述：全国包邮，立即咨询了解更多优惠详情。100%保证 7天瘦10斤",
    "Title: Guaranteed 12% returns, risk free\nDescription: the only No.1 #1 world's best, 100 % effective",
    "\u2028\u2029\x85\x1c line separators \u3000 ideographic space",
]
PIECES = ["free shipping", "全国包邮", "best", "Book now.", "立即咨询", "of the", "的", "限时优惠", " ", "\n",
          "100%", "guaranteed", "No.1", "最好", "it's", "Title: ", "描述：", "😀", "ＡＢ", "x'1"]

text_st = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(max_size=80),
    st.builds(lambda t, d, lang: render_ad(t, d, lang), st.text(max_size=30), st.text(max_size=60), st.sampled_from(["zh", "en"])),
    st.lists(st.sampled_from(PIECES + SPECIAL), max_size=12).map("".join),
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL), st.text(alphabet=st.characters(codec="utf-8"), max_size=40)),
)


def records_for(n: int, draw_prompt=None) -> list[AdRecord]:
    out = []
    for i in range(n):
        sp = ["free shipping", "全国包邮", "Book now"] if i % 2 else ["限时优惠", "the best", ""]
        out.append(AdRecord(id=f"r{i % 3}", query="免费 query free", bidword="包邮 word", selling_points=sp,
                            language="zh" if i % 2 else "en"))
    return out


def tokenized(tokenizer, texts):
    enc = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    return [e["input_ids"] for e in enc], [e["offset_mapping"] for e in enc]


def sample_records() -> list[AdRecord]:
    path = ROOT / "data_prep" / "sample" / "ad_records.jsonl"
    return [parse_record(json.loads(x)) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def assert_stats_equal(new, ref: dict):
    for name in ("high_freq_ngrams", "group_freq", "count", "token_mask", "content_tokens", "diversity_score"):
        assert np.array_equal(np.asarray(getattr(new, name)), np.asarray(ref[name])), name
    assert new.threshold == ref["threshold"] and new.n_groups == ref["n_groups"]
    for field in ("keys", "counted", "hits"):
        got, want = getattr(new, field), ref[field]
        assert sorted(got) == sorted(want), field
        for n in want:
            assert np.array_equal(got[n], want[n]), (field, n)


def assert_credit_equal(new: BatchCredit, ref: dict):
    assert_stats_equal(new.stats, ref["stats"])
    for name in ("diversity_penalty", "sentence_diversity", "blacklist_mask", "token_penalty", "mask"):
        a, b = getattr(new, name), ref[name]
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert new.blacklist_spans == ref["blacklist_spans"]
    assert new.diversity_spans == ref["diversity_spans"]


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# =============================================================================================
# Text: normalisation and per-code-point tables
# =============================================================================================


@settings(max_examples=150, **SETTINGS)
@given(st.lists(text_st, max_size=6))
def test_normalize_batch_equals_normalize_chars(texts):
    nb = normalize_batch(texts)
    assert nb.texts == [ref_normalize_chars(t) for t in texts] == [normalize_chars(t) for t in texts]
    assert nb.bounds.tolist() == [0, *np.cumsum([len(t) for t in texts]).tolist()]
    assert nb.codes.tolist() == [ord(c) for c in "".join(texts)]
    assert nb.norm_codes.tolist() == [ord(c) for c in "".join(nb.texts)]


def test_lone_surrogates_survive_normalisation():
    texts = ["a\ud800b", "标\udfff题"]
    assert normalize_batch(texts).texts == [ref_normalize_chars(t) for t in texts] == [normalize_chars(t) for t in texts]


def test_char_table_matches_the_regex_classes_and_norm_char_for_every_code_point():
    table = char_table()
    cps = np.arange(CP_LIMIT, dtype=np.uint32)
    table.ensure(cps)
    every = "".join(map(chr, range(CP_LIMIT)))
    # The per-text code's substitutions: \S -> "1" leaves exactly the non-space characters as "1".
    nonspace = np.array([c == "1" for c in re.sub(r"\S", "1", every)])
    alnum = np.array([c == "1" for c in re.sub(r"[^\W_]", "1", every)])
    assert np.array_equal(table.nonspace, nonspace)
    assert np.array_equal(table.alnum, alnum)
    norm = np.fromiter((ord(_norm_char(c)) for c in every), dtype=np.uint32, count=CP_LIMIT)
    assert np.array_equal(table.norm, norm)


# =============================================================================================
# Character arrays, content mask, function words, eligibility (prompt copies)
# =============================================================================================


def _random_offsets(rng, texts, L):
    """Hostile offsets: anywhere in [-3, len + 3], ends before starts, empty spans."""
    off = np.zeros((len(texts), L, 2), dtype=np.int64)
    for b, t in enumerate(texts):
        off[b] = rng.integers(-3, len(t) + 4, size=(L, 2))
    return off


def _text_side(texts, off, mask, prompts, cfg, ids=None):
    parsed = [parse_ad(t) for t in texts]
    chars, rchars = CharArrays.build(texts, off), RefCharArrays.build(texts, off)
    for name in ("width", "nonspace", "alnum", "tok_start", "tok_end"):
        assert np.array_equal(np.asarray(getattr(chars, name)), np.asarray(getattr(rchars, name))), name
    assert chars.texts == rchars.texts
    assert all(np.array_equal(a, b) for a, b in zip(chars.flat_tokens(), (chars.flat_index(chars.tok_start),
                                                                         chars.flat_index(chars.tok_end))))
    valid = content_token_mask(texts, parsed, off, mask, chars)
    assert np.array_equal(valid, ref_content_token_mask(texts, parsed, off, mask, rchars))
    assert np.array_equal(content_token_mask(texts, None, off, mask, chars), valid)  # labels found batch-wise
    assert np.array_equal(_content_chars(chars, cfg.stopwords), ref_content_chars(rchars.texts, rchars.alnum, cfg.stopwords))
    if ids is None:
        ids = np.zeros(mask.shape, dtype=np.int64)
    _, oks = ngram_keys(ids, valid, cfg.n_min, cfg.n_max)
    got = text_eligibility(texts, off, oks, prompts, cfg, chars)
    want = ref_text_eligibility(texts, off, oks, prompts, cfg, rchars)
    assert sorted(got) == sorted(want)
    for n in want:
        assert np.array_equal(got[n], want[n]), n
    return chars, oks


cfg_st = st.builds(
    lambda n_max, stop, excl, k: DiversityConfig(n_min=2, n_max=n_max, stopwords=stop, exclude_prompt_copies=excl,
                                                 min_ngram_chars=k),
    st.integers(2, 6), st.sampled_from(["stopwords.yaml", None]), st.booleans(), st.sampled_from([4, 1, 0, -1, 2.5]),
)


@settings(max_examples=120, **SETTINGS)
@given(texts=st.lists(text_st, min_size=1, max_size=5), cfg=cfg_st, data=st.data())
def test_text_side_equals_reference_with_real_tokens(tokenizer, texts, cfg, data):
    ids, offs = tokenized(tokenizer, texts)
    ids_, off, mask = pad_batch(ids, offs)
    prompts = data.draw(st.one_of(st.none(), st.lists(st.one_of(st.just(""), text_st, st.sampled_from(texts)),
                                                      min_size=len(texts), max_size=len(texts))))
    _text_side(texts, off, mask, prompts, cfg, ids_)


@settings(max_examples=120, **SETTINGS)
@given(texts=st.lists(text_st, min_size=1, max_size=5), cfg=cfg_st, L=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_text_side_equals_reference_with_hostile_offsets(texts, cfg, L, seed):
    rng = np.random.default_rng(seed)
    off = _random_offsets(rng, texts, L)
    mask = rng.random((len(texts), L)) < 0.8
    prompts = [t[: rng.integers(0, len(t) + 1)] + "\x00" + "free shipping" for t in texts]
    _text_side(texts, off, mask, prompts, cfg)


def test_text_side_on_the_bundled_records(tokenizer):
    recs = sample_records()
    texts, prompts = [], []
    for i, r in enumerate(recs):
        tail = ["", " Free shipping on all orders.", "全国包邮，立即咨询。"][i % 3]
        texts.append(render_ad(r.title, r.description + tail, r.language))
        prompts.append(_prompt_fields(r))
    ids, offs = tokenized(tokenizer, texts)
    ids_, off, mask = pad_batch(ids, offs)
    _text_side(texts, off, mask, prompts, preset("relate").diversity, ids_)


def _copy_case(tokenizer):
    texts = [render_ad("Free shipping today", "Free shipping on all orders, book now. 全国包邮，限时优惠", "en"),
             render_ad("全国包邮的好课", "全国包邮，限时优惠，立即咨询了解详情。free shipping", "zh"),
             render_ad("Nothing copied", "Plain words only here", "en")]
    prompts = ["free shipping\x00全国包邮\x00限时优惠", "全国包邮\x00free shipping", ""]
    ids, offs = tokenized(tokenizer, texts)
    ids_, off, mask = pad_batch(ids, offs)
    return texts, off, mask, prompts, ids_


def test_copy_filter_with_every_lookup_a_false_hit(tokenizer, monkeypatch):
    """Every table look-up answered wrongly (row 0): the key check must catch it and redo the scan."""
    texts, off, mask, prompts, ids = _copy_case(tokenizer)
    cfg = preset("relate").diversity
    want = None
    chars = CharArrays.build(texts, off)
    valid = content_token_mask(texts, [parse_ad(t) for t in texts], off, mask, chars)
    _, oks = ngram_keys(ids, valid, cfg.n_min, cfg.n_max)
    want = ref_text_eligibility(texts, off, oks, prompts, cfg, RefCharArrays.build(texts, off))
    monkeypatch.setattr(KeyTable, "lookup", lambda self, q: np.zeros(len(q), dtype=np.int64))
    got = text_eligibility(texts, off, oks, prompts, cfg, chars)
    for n in want:
        assert np.array_equal(got[n], want[n]), n
    assert any((~want[n] & oks[n]).any() for n in want)  # the filter did drop copies


def test_copy_filter_loop_fallback_for_long_prompts(tokenizer, monkeypatch):
    texts, off, mask, prompts, ids = _copy_case(tokenizer)
    cfg = preset("relate").diversity
    chars = CharArrays.build(texts, off)
    valid = content_token_mask(texts, [parse_ad(t) for t in texts], off, mask, chars)
    _, oks = ngram_keys(ids, valid, cfg.n_min, cfg.n_max)
    want = ref_text_eligibility(texts, off, oks, prompts, cfg, RefCharArrays.build(texts, off))
    monkeypatch.setattr(prompt_copies, "_COPY_BUDGET", 10)
    got = text_eligibility(texts, off, oks, prompts, cfg, chars)
    for n in want:
        assert np.array_equal(got[n], want[n]), n
    counts = {n: want[n] for n in want}
    assert _copied_chars_loop(chars, oks, counts, prompts, sorted(oks)).shape == (len(chars.norm_codes),)


# =============================================================================================
# n-gram keys, G_high, token indicator
# =============================================================================================


@settings(max_examples=80, **SETTINGS)
@given(data=st.data(), B=st.integers(1, 140), L=st.integers(0, 14), vocab=st.integers(1, 6), n_groups=st.integers(1, 8))
def test_statistics_equal_reference(data, B, L, vocab, n_groups):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    ids = rng.integers(0, vocab + 1, size=(B, L))
    groups = rng.integers(0, n_groups, size=B).tolist()
    valid = rng.random((B, L)) < 0.85
    cfg = DiversityConfig(n_min=data.draw(st.integers(1, 3)), n_max=data.draw(st.integers(3, 7)),
                          min_groups=data.draw(st.integers(1, 3)), min_group_fraction=data.draw(st.sampled_from([0.0, 0.3])))
    elig = None
    if data.draw(st.booleans()):
        elig = {n: rng.random((B, max(L - n + 1, 0))) < 0.7 for n in range(cfg.n_min, cfg.n_max + 1)}
    keys, oks = ngram_keys(ids, valid, cfg.n_min, cfg.n_max)
    rkeys, roks = ref_ngram_keys(ids, valid, cfg.n_min, cfg.n_max)
    for n in rkeys:
        assert np.array_equal(keys[n], rkeys[n]) and np.array_equal(oks[n], roks[n])
    assert_stats_equal(batch_ngram_statistics(ids, groups, cfg, valid=valid, eligible=elig),
                       ref_batch_ngram_statistics(ids, groups, cfg, valid=valid, eligible=elig))


@settings(max_examples=60, **SETTINGS)
@given(B=st.integers(0, 5), L=st.integers(0, 9), n_max=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_token_indicator_equals_reference(B, L, n_max, seed):
    rng = np.random.default_rng(seed)
    hits = {n: rng.random((B, max(L - n + 1, 0))) < 0.3 for n in range(1, n_max + 1)}
    assert np.array_equal(token_indicator(hits, L), ref_token_indicator(hits, L))
    assert np.array_equal(token_indicator({}, L), ref_token_indicator({}, L))


def test_high_freq_ngrams_lists_keys_in_the_same_order():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 4, size=(60, 20))
    valid = np.ones(ids.shape, dtype=bool)
    cfg = DiversityConfig(n_min=2, n_max=5, min_groups=2, min_group_fraction=0.0)
    keys, oks = ngram_keys(ids, valid, 2, 5)
    codes, ng = group_codes(list(range(60)))
    counted = {n: oks[n] & (rng.random(oks[n].shape) < 0.6) for n in oks}
    got = high_freq_ngrams(keys, oks, counted, codes, ng, 2)
    want = ref_high_freq_ngrams(keys, oks, counted, codes, ng, 2)
    assert len(want[0]) > 10
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    for n in want[2]:
        assert np.array_equal(got[2][n], want[2][n])
    del cfg


# =============================================================================================
# Blacklist scan
# =============================================================================================

TERMS = ["best", "the best", "guaranteed", "100%", "no.1", "#1", "最好", "第一", "保证通过", "7天瘦10斤", "risk free",
         "100% online", "best practices", "年化收益稳定", "包过", "bestow", "world's best", "top-rated"]
risk_text_st = st.one_of(text_st, st.lists(st.sampled_from(TERMS + PIECES + [" ", "-", "，", "x"]), max_size=14).map("".join))


@settings(max_examples=150, **SETTINGS)
@given(st.lists(risk_text_st, max_size=24))
def test_blacklist_scan_equals_reference(texts):
    lex = load_lexicon(RiskConfig())
    want = [ref_find(lex, t) for t in texts]
    many = lex.find_many(texts)
    one = [lex.find(t) for t in texts]
    as_tuples = [[(h.category, h.term, h.span, h.text) for h in hits] for hits in many]
    assert as_tuples == want
    assert many == one


def test_blacklist_scan_of_a_lexicon_with_groups_flags_and_empty_matches():
    cats = [
        _Category("backref", "en", "", [re.compile(r"(a+)b\1")], []),
        _Category("nocase", "en", "", [re.compile(r"(?i)guaranteed")], [re.compile("guaranteed 1")]),
        _Category("empty", "en", "", [re.compile(r"x*")], []),
        _Category("lookaround", "en", "", [re.compile(r"(?<![a-z])free(?= )|^only")], []),
    ]
    lex = Lexicon(cats)
    texts = ["aabaa ab aaba", "Guaranteed guaranteed 1 x", "free shipping only", "only free", "", "xx"] * 4
    want = [ref_find(lex, t) for t in texts]
    assert [[(h.category, h.term, h.span, h.text) for h in hits] for hits in lex.find_many(texts)] == want
    lex.categories = cats[:2]  # the plan follows a change of the public attribute
    assert [[(h.category, h.term, h.span, h.text) for h in hits] for hits in lex.find_many(texts)] == \
        [ref_find(lex, t) for t in texts]


@settings(max_examples=100, **SETTINGS)
@given(texts=st.lists(risk_text_st, max_size=30), lits=st.lists(st.one_of(st.sampled_from(TERMS + ["", "e", "的", "x'"]),
                                                                          st.text(max_size=4)), max_size=12))
def test_texts_containing_equals_substring_search(texts, lits):
    got = texts_containing(texts, lits)
    for lit in lits:
        assert got.get(lit, set()) == {b for b, t in enumerate(texts) if lit in t}, lit


@settings(max_examples=150, **SETTINGS)
@given(risk_text_st)
def test_required_literals_and_clauses_hold_in_every_match(text):
    lex = load_lexicon(RiskConfig())
    norm = normalize_chars(text)
    alternatives = [re.compile(a, split.flags) for split in risk_mod._SPLITS.values() for a in split.alternatives]
    for rx in [rx for cat in lex.categories for rx in (*cat.regexes, *cat.exceptions)] + alternatives:
        lits = required_literals(rx)
        clauses = required_clauses(rx) or []
        for m in rx.finditer(norm):
            if lits is not None:
                assert any(lit in m.group(0) for lit in lits), (rx.pattern[:60], m.group(0))
            for clause in clauses:
                assert any(lit in m.group(0) for lit in clause), (rx.pattern[:60], m.group(0), clause)


def test_required_literals_of_simple_patterns():
    assert required_clauses(re.compile("no[\\s\\-]+1")) == [["no"], ["1"]]
    assert required_clauses(re.compile("\\d+天(?:瘦|减)\\d+(?:斤|公斤|kg)")) == [["天"], ["瘦", "减"], ["斤", "公斤", "kg"]]
    assert required_clauses(re.compile("a*|b")) is None
    assert required_literals(re.compile("guaranteed\\s+\\d+%")) == ["guaranteed"]
    assert required_literals(re.compile("(?:lose|drop)\\s+\\d+")) == ["lose", "drop"]
    assert required_literals(re.compile("[ab]c?")) == ["a", "b"]
    assert required_literals(re.compile("a*")) is None
    assert required_literals(re.compile("(?i)best")) is None
    assert required_literals(re.compile("(?=best)\\w+")) is None


# =============================================================================================
# Decoding generated ids, padding
# =============================================================================================


@settings(max_examples=60, **SETTINGS)
@given(rows=st.lists(st.lists(st.one_of(st.integers(0, 49151), st.sampled_from([0, 1, 2, 17, 30, 100])), max_size=40),
                     max_size=6),
       texts=st.lists(text_st, max_size=3), cut=st.integers(0, 6))
def test_decode_equals_reference(tokenizer, rows, texts, cut):
    rows = list(rows)
    for t in texts:  # real text, also cut inside a multi-byte character
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        rows += [ids, ids[: max(len(ids) - cut, 0)], ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]]
    want = [ref_decode_with_offsets(tokenizer, r) for r in rows]
    batch = decode_batch_with_offsets(tokenizer, rows)
    for r, (wt, wo), (bt, bo) in zip(rows, want, batch):
        st_, so = decode_with_offsets(tokenizer, np.asarray(r, dtype=np.int64))
        assert st_ == bt == wt
        assert so.dtype == bo.dtype == wo.dtype == np.int64
        assert np.array_equal(so, wo) and np.array_equal(bo, wo)
    assert len(batch) == len(rows)


def test_decode_follows_a_change_of_special_tokens(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert decode_with_offsets(tok, ids)[0] == "Hello world"
    tok.add_special_tokens({"additional_special_tokens": ["world"]})
    new = tok.convert_tokens_to_ids("world")
    for row in ([*ids, new], [new, *ids]):
        assert decode_with_offsets(tok, row)[0] == ref_decode_with_offsets(tok, row)[0]
        assert np.array_equal(decode_with_offsets(tok, row)[1], ref_decode_with_offsets(tok, row)[1])


@settings(max_examples=80, **SETTINGS)
@given(rows=st.lists(st.lists(st.integers(0, 50), max_size=7), max_size=6), seed=st.integers(0, 2**16),
       with_mask=st.booleans())
def test_pad_batch_equals_reference(rows, seed, with_mask):
    rng = np.random.default_rng(seed)
    offs = [rng.integers(0, 9, size=(len(r), 2)).tolist() for r in rows]
    L = max([len(r) for r in rows] + [1])
    mask = rng.random((len(rows), L + 2)) < 0.7 if with_mask else None
    got, want = pad_batch(rows, offs, mask), ref_pad_batch(rows, offs, mask)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)
    ragged = [np.asarray(r, dtype=np.int64) for r in rows]
    for g, w in zip(pad_batch(ragged, [np.asarray(o).reshape(-1, 2) for o in offs]), ref_pad_batch(rows, offs)):
        assert np.array_equal(g, w)
    if rows and rows[0]:
        with pytest.raises(ValueError, match="token ids but"):
            pad_batch(rows, [o[:-1] for o in offs[:1]] + offs[1:])


# =============================================================================================
# batch_credit end to end
# =============================================================================================


@settings(max_examples=40, **SETTINGS)
@given(texts=st.lists(text_st, min_size=1, max_size=6), preset_name=st.sampled_from(["relate", "model3", "model4"]))
def test_batch_credit_equals_reference_on_hostile_batches(tokenizer, texts, preset_name):
    cfg = preset(preset_name)
    cfg.diversity.min_group_fraction = 0.0
    cfg.diversity.min_groups = 2
    ids, offs = tokenized(tokenizer, texts)
    recs = records_for(len(texts))
    groups = [i % 3 for i in range(len(texts))]
    got = batch_credit(texts, ids, offs, groups, recs, cfg)
    assert_credit_equal(got, ref_batch_credit(texts, ids, offs, groups, recs, cfg))


def test_batch_credit_equals_reference_on_generated_ids(tokenizer):
    """The trainer's inputs: 600 ads from the bundled records (templates, blacklisted terms, copies
    of the selling points), generated ids with <|im_end|> and padding, decoded with offsets,
    records as ground-truth dicts."""
    recs = sample_records()
    tails = {"en": ["", " Book now.", " Free shipping on all orders.", " The best choice, guaranteed.", " Call now."],
             "zh": ["", "立即咨询了解详情。", "全国包邮，限时优惠。", "最好的选择，100%满意。", "欢迎来电咨询。"]}
    texts, prompts, groups = [], [], []
    for g, r in enumerate(recs[:120]):
        for k in range(5):
            desc = r.description + tails[r.language][(g + k) % 5] + (r.selling_points[0] if k == 4 and r.selling_points else "")
            texts.append(render_ad(r.title, desc, r.language))
            prompts.append(r.to_dict())
            groups.append(f"uid-{g}")
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    L = 96  # truncates many: cuts inside multi-byte characters too
    ids = np.zeros((len(texts), L), dtype=np.int64)
    mask = np.zeros((len(texts), L), dtype=bool)
    for b, t in enumerate(texts):
        row = (tokenizer(t, add_special_tokens=False)["input_ids"] + [eos])[:L]
        ids[b, : len(row)] = row
        mask[b, : len(row)] = True
    rows = [ids[b, : int(mask[b].sum())].tolist() for b in range(len(texts))]
    decoded = decode_batch_with_offsets(tokenizer, rows)
    dtexts = [t for t, _ in decoded]
    offs = [o for _, o in decoded]
    got = batch_credit(dtexts, rows, offs, groups, prompts, "relate", response_mask=mask)
    want = ref_batch_credit(dtexts, rows, offs, groups, prompts, "relate", response_mask=mask)
    assert len(want["stats"]["high_freq_ngrams"]) > 0 and any(want["blacklist_spans"])
    assert_credit_equal(got, want)
    padded = np.zeros((len(texts), L, 2), dtype=np.int64)
    for b, o in enumerate(offs):
        padded[b, : len(o)] = o
    assert_credit_equal(batch_credit(dtexts, ids, padded, groups, prompts, "relate", response_mask=mask),
                        ref_batch_credit(dtexts, ids, padded, groups, prompts, "relate", response_mask=mask))


def test_prompt_texts_join_each_distinct_prompt_once():
    recs = [AdRecord(id="a", query="q", bidword="b", selling_points=["x", "y"], language="en"),
            {"query": "q2", "bidword": "b2", "selling_points": "s1|s2| "}, {"query": "q3"}]
    assert _prompt_texts(recs * 3) == [_prompt_fields(r) for r in recs * 3]


def test_diversity_spans_are_computed_on_first_read_and_can_be_given(tokenizer):
    texts = [render_ad(f"Item {i}", "Call now to learn more about it.", "en") for i in range(3)]
    ids, offs = tokenized(tokenizer, texts)
    cfg = preset("relate")
    cfg.diversity.min_group_fraction = 0.0
    credit = batch_credit(texts, ids, offs, [0, 1, 2], None, cfg)
    assert credit.__dict__.get("_diversity_spans") is None  # nothing computed yet
    spans = credit.diversity_spans
    assert spans == [token_mask_to_spans(credit.stats.token_mask[b], pad_batch(ids, offs)[1][b], texts[b]) for b in range(3)]
    assert any(spans) and credit.diversity_spans is spans
    given_ = BatchCredit(credit.stats, credit.diversity_penalty, credit.sentence_diversity, credit.blacklist_mask,
                         credit.token_penalty, credit.mask, credit.blacklist_spans, diversity_spans=[[(0, 1)]] * 3)
    assert given_.diversity_spans == [[(0, 1)]] * 3
    given_.diversity_spans = []
    assert given_.diversity_spans == []


def test_examples_still_read_the_keys():
    ids = np.array([[1, 2, 3], [1, 2, 3], [4, 2, 3]])
    s = batch_ngram_statistics(ids, [0, 1, 2], DiversityConfig(n_min=2, n_max=3, min_groups=2, min_group_fraction=0.0))
    assert s.examples() and all(n in (2, 3) for _, _, n, _ in s.examples())



# =============================================================================================
# Fast paths of batch_credit (bench_advantage (c)): each against the plain code it stands for
# =============================================================================================

LINE_PIECES = ["Title:", "TITLE :", " title：", "Description:", "描述：", "标题 ：", "\n", "\r\n", "\r", "\u2028", "\x85",
               "\x0b", "\x1c", " ", "\t", "x", "Title: a\nTitle: b", "\n\n", "Description: d\nTitle: t"]
label_text_st = st.one_of(text_st, st.lists(st.sampled_from(LINE_PIECES + PIECES), max_size=15).map("".join))


@settings(max_examples=300, **SETTINGS)
@given(st.lists(label_text_st, max_size=8))
def test_label_spans_batch_equals_parse_ad(texts):
    rows, a, e = label_spans_batch(texts)
    want = [(b, x, y) for b, t in enumerate(texts) for x, y in label_spans(t, parse_ad(t))]
    assert list(zip(rows.tolist(), a.tolist(), e.tolist())) == want


WORD_PIECES = ["it's", "don't", "a'b'c", "'", "ab'cd9e", "x'1", "9'c", "the", "of", "a", "Z", "-", " ", "的", "é", "''", "b9"]


@settings(max_examples=300, **SETTINGS)
@given(st.lists(st.one_of(text_st.map(normalize_chars), st.lists(st.sampled_from(WORD_PIECES), max_size=12).map("".join)),
                max_size=6))
def test_ascii_words_equal_the_word_regex(texts):
    """Apostrophe chains, digits after a suffix, words at text boundaries: the regex's words."""
    codes = code_points("".join(texts))
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=bounds[1:])
    a, e = _ascii_words(codes, bounds)
    want = [(int(bounds[b]) + m.start(), int(bounds[b]) + m.end()) for b, t in enumerate(texts)
            for m in text_filters._ASCII_WORD_RE.finditer(t)]
    assert list(zip(a.tolist(), e.tolist())) == want


def test_powers_equal_running_products():
    ppow, qpow = _powers(3000)
    want_p = np.ones(3000, dtype=np.uint64)
    want_q = np.ones(3000, dtype=np.uint64)
    with np.errstate(over="ignore"):
        want_p[1:] = ngram_stats._P
        want_q[1:] = ngram_stats._P_INV
        np.cumprod(want_p, out=want_p)
        np.cumprod(want_q, out=want_q)
        assert np.array_equal(ppow, want_p) and np.array_equal(qpow, want_q)
        assert np.all(ppow * qpow == np.uint64(1))
    assert [len(x) for x in _powers(1)] == [1, 1]


@settings(max_examples=60, **SETTINGS)
@given(data=st.data(), B=st.integers(1, 60), L=st.integers(0, 14), vocab=st.integers(1, 6))
def test_window_keys_and_validity_equal_ngram_keys(data, B, L, vocab):
    """WindowKeys hashes single windows from prefix sums: the same numbers as the rolling hash;
    statistics computed from it are the ones computed from ngram_keys."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    ids = rng.integers(0, vocab + 1, size=(B, L))
    valid = rng.random((B, L)) < 0.85
    n_min, n_max = data.draw(st.integers(1, 3)), data.draw(st.integers(3, 7))
    keys, oks = ngram_keys(ids, valid, n_min, n_max)
    wk, wo = WindowKeys(ids, n_min, n_max), window_validity(valid, n_min, n_max)
    assert sorted(wk) == sorted(keys) == sorted(wo) and len(wk) == len(keys)
    assert n_min in wk and n_max + 1 not in wk and "x" not in wk
    for n in keys:
        assert np.array_equal(wo[n], oks[n])
        flat = np.flatnonzero(rng.random(keys[n].size) < 0.5)
        assert np.array_equal(wk.at(n, flat), keys[n].ravel()[flat]), n
        assert np.array_equal(wk[n], keys[n])
    groups = rng.integers(0, 4, size=B).tolist()
    codes, ng = group_codes(groups)
    cfg = DiversityConfig(n_min=n_min, n_max=n_max, min_groups=2, min_group_fraction=0.0)
    elig = {n: rng.random(oks[n].shape) < 0.7 for n in oks}
    got = statistics_from_keys(WindowKeys(ids, n_min, n_max), wo, codes, ng, cfg, valid, elig)
    want = statistics_from_keys(keys, oks, codes, ng, cfg, valid, elig)
    for name in ("high_freq_ngrams", "group_freq", "count", "token_mask", "content_tokens", "diversity_score"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    for n in keys:
        assert np.array_equal(got.keys[n], want.keys[n]) and np.array_equal(got.hits[n], want.hits[n])


prompt_st = st.lists(st.one_of(st.sampled_from(["free shipping", "全国包邮", "ab", "aab", "b", ""]),
                               st.text(alphabet="abx 包邮", max_size=8)), max_size=4).map("\x00".join)


@settings(max_examples=200, **SETTINGS)
@given(texts=st.lists(st.text(alphabet="abx 包邮免费", max_size=14), min_size=1, max_size=4),
       prompts=st.lists(prompt_st, min_size=1, max_size=3), data=st.data())
def test_match_lengths_equal_brute_force(texts, prompts, data):
    """The longest prefix of the text from each start that occurs in the prompt (a NUL never
    matches, an occurrence never runs past its text)."""
    codes = code_points("".join(texts))
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=bounds[1:])
    starts, ends, which = [], [], []
    for b, t in enumerate(texts):
        for s in range(len(t)):
            starts.append(int(bounds[b]) + s)
            ends.append(int(bounds[b + 1]))
            which.append(data.draw(st.integers(0, len(prompts) - 1)))
    got, bad = _match_lengths(codes, np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64),
                              np.asarray(which, dtype=np.int64), prompts)
    joined = "".join(texts)
    want = []
    for s, e, p in zip(starts, ends, which):
        m = 0
        while s + m < e and joined[s : s + m + 1] in prompts[p]:
            m += 1
        want.append(m)
    assert got.tolist() == want and not bad.any()


@settings(max_examples=100, **SETTINGS)
@given(texts=st.lists(risk_text_st, min_size=17, max_size=30),
       lits=st.lists(st.one_of(st.sampled_from(TERMS + ["", "e", "的", "x'", "a\x00b"]), st.text(max_size=4)), max_size=12))
def test_literal_presence_on_flat_codes_equals_substring_search(texts, lits):
    """The batched path (more than 16 texts), on the texts or on their concatenated codes."""
    want = np.array([[lit in t for t in texts] for lit in lits], dtype=bool).reshape(len(lits), len(texts))
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=bounds[1:])
    assert np.array_equal(literal_presence(texts, lits), want)
    assert np.array_equal(literal_presence(texts, lits, (code_points("".join(texts)), bounds)), want)


@settings(max_examples=100, **SETTINGS)
@given(B=st.integers(1, 6), L=st.integers(0, 9), seed=st.integers(0, 2**16))
def test_batch_spans_to_token_mask_equals_per_row(B, L, seed):
    rng = np.random.default_rng(seed)
    off = rng.integers(-2, 12, size=(B, L, 2))
    mask = rng.random((B, L)) < 0.8
    spans = [[tuple(map(int, rng.integers(-1, 12, size=2))) for _ in range(rng.integers(0, 4))] for _ in range(B)]
    want = np.zeros((B, L), dtype=bool)
    for b, sp in enumerate(spans):
        if sp:
            want[b] = spans_to_token_mask(sp, off[b], mask[b])
    assert np.array_equal(batch_spans_to_token_mask(spans, off, mask), want)


def test_pad_batch_fast_paths_keep_errors_and_int_conversion():
    rows = [[1, 2, 3], [4]]
    offs = [np.array([[0, 1], [1, 2], [2, 3]]), np.array([[0, 1]])]
    assert all(np.array_equal(g, w) for g, w in zip(pad_batch(rows, offs), ref_pad_batch(rows, offs)))
    with pytest.raises(ValueError, match="response 1: 1 token ids but 2 offsets"):
        pad_batch(rows, [offs[0], np.array([[0, 1], [1, 2]])])
    # ids converted as int() converts them, whatever path (floats, bools, numpy scalars)
    odd = [[1.7, True, np.int32(5)], [np.uint8(3)]]
    assert np.array_equal(pad_batch(odd, offs)[0], ref_pad_batch(odd, offs)[0])
    with pytest.raises(OverflowError):
        pad_batch([[2**64]], [[(0, 1)]])
