"""Batch n-gram diversity: G_high, the eq. 4 penalty, the eq. 5 token indicators, eq. 12's score.

Shapes: B responses, L tokens (right-padded), W_n = L - n + 1 windows of length n.

1. :func:`ngram_keys`: a 64-bit key for every token window of length n = n_min..n_max,
   computed for all windows at once by a rolling polynomial hash over the (B, L) id matrix
   (uint64 arithmetic wraps mod 2^64), then mixed with n (splitmix64 finaliser) so that lengths
   never share keys. Two different n-grams share a key with probability ~2^-64 per pair
   (~1e-7 for a whole 1440 x 128 batch); the known weakness of hashing mod 2^64 (Thue-Morse
   strings) needs windows of thousands of tokens, and n_max is at most 32.
2. Which windows COUNT (``counted``): every token valid (inside the response, not a field label,
   not a line break: :func:`content_token_mask`) and, from the decoded text
   (:func:`text_eligibility`), at least ``min_ngram_chars`` letters / digits, at least one of
   them outside a function word (lexicons/stopwords.yaml), and not touching an n-gram copied
   from the prompt's own query, bidword or selling points. Copies are detected on the decoded,
   normalised TEXT, never by tokenising the fields: byte-level BPE gives " free shipping" in
   context other ids than "free shipping" alone.
3. :func:`high_freq_ngrams`: the group frequency of a key is the number of distinct GROUPS
   (prompts) with a counted occurrence of it; G_high = keys with group frequency >=
   ``max(min_groups, ceil(min_group_fraction * n_groups))``. One GRPO group repeating itself
   therefore never makes a template. Counting is hash-table based (pandas factorize / unique,
   no sort), level by level with Apriori pruning (an n-gram is only counted when both of its
   (n-1)-grams are frequent).
4. Per response: ``count`` = counted occurrences of G_high keys (eq. 4's sum), penalty
   ``max(floor, -delta_d * count)``; per token: the eq. 5 indicator, true when the token lies in
   such an occurrence; the normalised diversity score (eq. 12's r_div, in [0, 1]) is the share of
   the response's content tokens NOT covered by any G_high occurrence.

:func:`batch_ngram_statistics_reference` is the same computation in plain Python (tuples and a
Counter); the tests check the two agree and benchmarks/bench_diversity.py times them.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from relate_common.ad_format import ParsedAd

from reward_fns.config import DiversityConfig
from reward_fns.text import label_spans, normalize_chars

LEXICON_DIR = Path(__file__).parent / "lexicons"

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (2^64 / golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def ngram_keys(
    token_ids: np.ndarray, valid: np.ndarray, n_min: int, n_max: int
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Keys and validity of every window, per n.

    token_ids: (B, L) int; valid: (B, L) bool (token may be part of an n-gram).
    Returns ({n: keys (B, W_n) uint64}, {n: ok (B, W_n) bool}); n > L gives (B, 0) arrays.
    """
    ids = np.asarray(token_ids)
    B, L = ids.shape
    x = ids.astype(np.uint64) + np.uint64(1)  # +1: token 0 still changes the hash
    v = np.asarray(valid, dtype=bool)
    keys: dict[int, np.ndarray] = {}
    oks: dict[int, np.ndarray] = {}
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
                keys[n] = _mix64(h ^ np.uint64(n * 0x100000001B3))
                oks[n] = ok
    return keys, oks


def group_threshold(n_groups: int, cfg: DiversityConfig) -> int:
    """Minimum number of distinct groups for an n-gram to be high-frequency."""
    return max(int(cfg.min_groups), int(math.ceil(cfg.min_group_fraction * n_groups)))


def group_codes(group_ids: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Group ids of any hashable type -> (codes (B,) int64 in [0, G), G)."""
    codes, uniques = pd.factorize(pd.Series(list(group_ids), dtype=object))
    return codes.astype(np.int64), len(uniques)


@dataclass
class NgramStats:
    """Batch n-gram statistics and their per-response / per-token consequences."""

    n_values: tuple[int, ...]
    keys: dict[int, np.ndarray]  # n -> (B, W_n) uint64
    counted: dict[int, np.ndarray]  # n -> (B, W_n) bool, windows entering the statistics
    hits: dict[int, np.ndarray]  # n -> (B, W_n) bool, counted occurrences of G_high n-grams
    high_freq_ngrams: np.ndarray  # (K,) uint64 keys of G_high
    group_freq: np.ndarray  # (K,) int64 groups using each G_high key
    threshold: int  # groups needed to enter G_high
    n_groups: int
    count: np.ndarray  # (B,) int64, eq. 4's number of G_high occurrences
    token_mask: np.ndarray  # (B, L) bool, eq. 5's indicator
    content_tokens: np.ndarray  # (B,) int64, valid tokens per response
    diversity_score: np.ndarray  # (B,) float64 in [0, 1] (eq. 12's normalised r_div)
    extra: dict = field(default_factory=dict)

    def penalty(self, cfg: DiversityConfig) -> np.ndarray:
        """Eq. 4 per response: ``max(floor, -delta_d * count)``, (B,) float64 in [floor, 0]."""
        return diversity_penalty(self.count, cfg)

    def examples(self, limit: int = 20) -> list[tuple[int, int, int, int]]:
        """Up to ``limit`` G_high n-grams as (response b, start token t, n, groups), most groups first."""
        freq = dict(zip(self.high_freq_ngrams.tolist(), self.group_freq.tolist()))
        first: dict[int, tuple[int, int, int]] = {}
        for n in sorted(self.hits, reverse=True):  # longest first: the template, not its pieces
            bs, ts = np.nonzero(self.hits[n])
            for b, t in zip(bs.tolist(), ts.tolist()):
                k = int(self.keys[n][b, t])
                if k not in first:
                    first[k] = (b, t, n)
        ranked = sorted(first.items(), key=lambda kv: (-freq.get(kv[0], 0), -kv[1][2]))
        return [(b, t, n, int(freq.get(k, 0))) for k, (b, t, n) in ranked[:limit]]


def _group_frequency(
    keys: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct-group count per key: (code per input (N,), unique keys (U,), frequency (U,)).

    Hash tables only (pandas factorize / unique): O(N), no sort.
    """
    codes, uniques = pd.factorize(keys)
    codes = codes.astype(np.int64)
    g = max(n_groups, 1)
    pairs = pd.unique(codes * g + groups)  # distinct (n-gram, group) pairs
    freq = np.bincount(pairs // g, minlength=len(uniques))
    return codes, np.asarray(uniques), freq


def high_freq_ngrams(
    keys: dict[int, np.ndarray],
    oks: dict[int, np.ndarray],
    counted: dict[int, np.ndarray],
    group_codes_: np.ndarray,
    n_groups: int,
    threshold: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """G_high and its counted occurrences.

    keys / oks / counted: {n: (B, W_n)} (counted is a subset of oks); group_codes_: (B,) int64
    in [0, n_groups). Returns (G_high keys (K,), their group frequencies (K,),
    {n: hits (B, W_n) bool}).

    Level-wise pruning keeps this near-linear in the number of SHORT windows: an n-gram can only
    reach ``threshold`` groups when both of its (n-1)-grams do (every valid occurrence of it
    contains a valid occurrence of each), so at each n only windows whose prefix and suffix
    windows were frequent (over valid windows) are counted at all. Frequencies over valid
    windows bound those over counted windows, so the pruning never drops a G_high n-gram.
    """
    ns = sorted(keys)
    hits: dict[int, np.ndarray] = {}
    high_keys: list[np.ndarray] = []
    high_freq: list[np.ndarray] = []
    frequent_prev: np.ndarray | None = None  # (B, W_{n-1}) bool: valid window with frequent key
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
            codes, uniq, freq = _group_frequency(k[cand], groups[cand], n_groups)
            frequent[cand] = (freq >= threshold)[codes]
            if same:
                hit = frequent
                high_keys.append(uniq[freq >= threshold])
                high_freq.append(freq[freq >= threshold])
            else:
                csel = cand & counted[n]
                if csel.any():
                    c2, u2, f2 = _group_frequency(k[csel], groups[csel], n_groups)
                    hit[csel] = (f2 >= threshold)[c2]
                    high_keys.append(u2[f2 >= threshold])
                    high_freq.append(f2[f2 >= threshold])
        hits[n] = hit
        frequent_prev = frequent
    hk = np.concatenate(high_keys).astype(np.uint64) if high_keys else np.zeros(0, dtype=np.uint64)
    hf = np.concatenate(high_freq).astype(np.int64) if high_freq else np.zeros(0, dtype=np.int64)
    return hk, hf, hits


def token_indicator(hits: dict[int, np.ndarray], length: int) -> np.ndarray:
    """Eq. 5's indicator (B, L) bool: token t lies in some hit window [s, s + n).

    A difference array per n (+1 at s, -1 at s + n) summed over n, then one cumulative sum.
    """
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


def diversity_penalty(count: np.ndarray, cfg: DiversityConfig) -> np.ndarray:
    """Eq. 4: ``-delta_d * count`` floored at ``cfg.floor``; (B,) float64 in [floor, 0]."""
    return np.maximum(cfg.floor, -cfg.delta_d * np.asarray(count, dtype=np.float64)) + 0.0  # no -0.0


def diversity_scores(token_mask: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(score (B,) in [0, 1], content tokens (B,)): 1 - covered / content (1 when no content)."""
    content = np.asarray(valid, dtype=bool).sum(axis=1)
    covered = (np.asarray(token_mask, dtype=bool) & valid).sum(axis=1)
    score = np.where(content > 0, 1.0 - covered / np.maximum(content, 1), 1.0)
    return score.astype(np.float64), content.astype(np.int64)


def batch_ngram_statistics(
    token_ids: np.ndarray,
    group_ids: Sequence[Hashable] | np.ndarray,
    cfg: DiversityConfig,
    valid: np.ndarray | None = None,
    eligible: dict[int, np.ndarray] | None = None,
) -> NgramStats:
    """Vectorised batch statistics (module docstring, steps 1-4).

    token_ids: (B, L) int; group_ids: (B,) any hashable (one group = the G responses of one
    prompt); valid: (B, L) bool, default all True; eligible: optional {n: (B, W_n) bool} from
    :func:`text_eligibility` (min characters, prompt copies), default all True.
    """
    ids = np.asarray(token_ids)
    if ids.ndim != 2:
        raise ValueError(f"token_ids must be (B, L), got shape {ids.shape}")
    B, L = ids.shape
    v = np.ones((B, L), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    codes, n_groups = group_codes(group_ids)
    if len(codes) != B:
        raise ValueError(f"{len(codes)} group ids for {B} responses")
    keys, oks = ngram_keys(ids, v, cfg.n_min, cfg.n_max)
    counted = {n: (oks[n] & eligible[n]) if eligible is not None else oks[n] for n in keys}
    thr = group_threshold(n_groups, cfg)
    high, freq, hits = high_freq_ngrams(keys, oks, counted, codes, n_groups, thr)
    count = np.zeros(B, dtype=np.int64)
    for h in hits.values():
        count += h.sum(axis=1)
    mask = token_indicator(hits, L) & v
    score, content = diversity_scores(mask, v)
    return NgramStats(
        n_values=tuple(sorted(keys)),
        keys=keys,
        counted=counted,
        hits=hits,
        high_freq_ngrams=high,
        group_freq=freq,
        threshold=thr,
        n_groups=n_groups,
        count=count,
        token_mask=mask,
        content_tokens=content,
        diversity_score=score,
    )


def batch_ngram_statistics_reference(
    token_ids: Sequence[Sequence[int]],
    group_ids: Sequence[Hashable],
    cfg: DiversityConfig,
    valid: Sequence[Sequence[bool]] | None = None,
    eligible: dict[int, np.ndarray] | None = None,
) -> dict:
    """Plain-Python reference of :func:`batch_ngram_statistics` (tuples, sets, a Counter).

    Returns {"high_freq_ngrams": set of tuples, "count": [int], "token_mask": [[bool]],
    "diversity_score": [float], "threshold": int}.
    """
    seqs = [list(map(int, s)) for s in token_ids]
    vals = [list(map(bool, v)) for v in valid] if valid is not None else [[True] * len(s) for s in seqs]
    groups_of: dict[tuple[int, ...], set] = defaultdict(set)
    occurrences: list[tuple[int, int, int, tuple[int, ...]]] = []
    for b, (seq, val) in enumerate(zip(seqs, vals)):
        for n in range(cfg.n_min, cfg.n_max + 1):
            for t in range(len(seq) - n + 1):
                if not all(val[t : t + n]):
                    continue
                if eligible is not None and not eligible[n][b, t]:
                    continue
                gram = tuple(seq[t : t + n])
                groups_of[gram].add(group_ids[b])
                occurrences.append((b, t, n, gram))
    group_freq = Counter({gram: len(gs) for gram, gs in groups_of.items()})
    thr = group_threshold(len(set(group_ids)), cfg)
    high = {gram for gram, c in group_freq.items() if c >= thr}
    count = [0] * len(seqs)
    mask = [[False] * len(s) for s in seqs]
    for b, t, n, gram in occurrences:
        if gram in high:
            count[b] += 1
            for i in range(t, t + n):
                mask[b][i] = True
    score = []
    for b in range(len(seqs)):
        content = sum(vals[b])
        covered = sum(1 for i in range(len(seqs[b])) if mask[b][i] and vals[b][i])
        score.append(1.0 - covered / content if content else 1.0)
    return {"high_freq_ngrams": high, "count": count, "token_mask": mask, "diversity_score": score, "threshold": thr}


# ---- text side: which tokens and windows may count ----------------------------------------------


def _char_flags(texts: Sequence[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(non-space (B, width) bool, alphanumeric (B, width) bool) of normalised texts, padded."""
    B = len(texts)
    nonspace = np.zeros((B, width), dtype=bool)
    alnum = np.zeros((B, width), dtype=bool)
    for b, t in enumerate(texts):
        if not t:
            continue
        # C-level substitutions instead of a Python loop per character. Normalised text holds
        # no control characters, so \x01 cannot occur in it before the first substitution.
        ns = re.sub(r"[^\x01]", "\x00", re.sub(r"\S", "\x01", t))
        an = re.sub(r"[^\x01]", "\x00", re.sub(r"[^\W_]", "\x01", t))
        nonspace[b, : len(t)] = np.frombuffer(ns.encode("latin-1"), dtype=np.uint8).astype(bool)
        alnum[b, : len(t)] = np.frombuffer(an.encode("latin-1"), dtype=np.uint8).astype(bool)
    return nonspace, alnum


@lru_cache(maxsize=4)
def _stopwords(path: str) -> tuple[frozenset[str], re.Pattern[str] | None]:
    """(English function words, regex of Chinese function characters) from a stopword file."""
    import yaml

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = LEXICON_DIR / p
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    en = frozenset(normalize_chars(str(w)) for w in data.get("en") or [])
    zh = [normalize_chars(str(w)) for w in data.get("zh") or []]
    singles = "".join(re.escape(w) for w in zh if len(w) == 1)
    multi = [re.escape(w) for w in sorted((w for w in zh if len(w) > 1), key=len, reverse=True)]
    parts = multi + ([f"[{singles}]"] if singles else [])
    return en, (re.compile("|".join(parts)) if parts else None)


_ASCII_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _content_chars(texts: Sequence[str], alnum: np.ndarray, stopwords: str | None) -> np.ndarray:
    """(B, width) bool: letters / digits that are not inside a function word.

    English function words are whole ASCII words looked up in a set; Chinese ones are matched by
    one character-class regex (both much faster than one big alternation).
    """
    content = alnum.copy()
    if not stopwords:
        return content
    en, zh = _stopwords(stopwords)
    for b, t in enumerate(texts):
        for m in _ASCII_WORD_RE.finditer(t):
            if m.group(0) in en:
                content[b, m.start() : m.end()] = False
        if zh is not None:
            for m in zh.finditer(t):
                content[b, m.start() : m.end()] = False
    return content


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[b, idx[b, ...]] for every b."""
    return np.take_along_axis(a, idx.reshape(idx.shape[0], -1), axis=1).reshape(idx.shape)


_NEWLINE_RE = re.compile(r"[\r\n]+")


@dataclass
class CharArrays:
    """Character-level views of a batch of responses, computed once per batch.

    texts: normalised responses; nonspace / alnum: (B, width) bool; tok_start / tok_end: (B, L)
    each token's span with outer whitespace trimmed (end <= start for whitespace-only tokens).
    """

    texts: list[str]
    width: int
    nonspace: np.ndarray
    alnum: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray

    @classmethod
    def build(cls, responses: Sequence[str], offsets: np.ndarray) -> "CharArrays":
        width = max([len(r) for r in responses] + [0]) + 1
        texts = [normalize_chars(r) for r in responses]
        nonspace, alnum = _char_flags(texts, width)
        s, e = _trimmed_token_spans(nonspace, np.asarray(offsets, dtype=np.int64), width)
        return cls(texts, width, nonspace, alnum, s, e)


def content_token_mask(
    responses: Sequence[str],
    parsed: Sequence[ParsedAd],
    offsets: np.ndarray,
    mask: np.ndarray,
    chars: CharArrays | None = None,
) -> np.ndarray:
    """(B, L) bool: tokens that may be part of an n-gram.

    A token counts when it is inside the response (``mask``), has a non-empty character span,
    and its characters (leading / trailing spaces trimmed) avoid the field labels ("Title: ",
    "标题：") and line breaks. Labels are fixed by the format: every response shares them.
    """
    B, L = mask.shape
    chars = chars or CharArrays.build(responses, offsets)
    width = chars.width
    noncontent = np.zeros((B, width), dtype=np.int32)
    for b, (resp, p) in enumerate(zip(responses, parsed)):
        for a, e in label_spans(resp, p):
            noncontent[b, a:e] = 1
        for m in _NEWLINE_RE.finditer(resp):
            noncontent[b, m.start() : m.end()] = 1
    cum = np.concatenate([np.zeros((B, 1), dtype=np.int32), np.cumsum(noncontent, axis=1)], axis=1)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    raw_s = np.clip(offsets[..., 0], 0, width - 1)
    raw_e = np.clip(offsets[..., 1], 0, width - 1)
    a = np.where(e_tok > s_tok, s_tok, raw_s)
    e = np.where(e_tok > s_tok, e_tok, raw_e)
    bad = _gather(cum, e) - _gather(cum, a)
    return np.asarray(mask, dtype=bool) & (raw_e > raw_s) & (bad == 0)


def _trimmed_token_spans(nonspace: np.ndarray, offsets: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token, its span with leading / trailing whitespace removed: (start (B, L), end (B, L)).

    A whitespace-only token gets end <= start.
    """
    B = nonspace.shape[0]
    pos = np.arange(width, dtype=np.int64)
    big = np.int64(width)
    # next non-space at or after c
    nxt = np.where(nonspace, pos[None, :], big)
    nxt = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    # (last non-space before e) + 1, for e in [0, width]
    prv = np.where(nonspace, pos[None, :] + 1, 0)
    prv = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.maximum.accumulate(prv, axis=1)], axis=1)
    starts = np.clip(offsets[..., 0], 0, width - 1)
    ends = np.clip(offsets[..., 1], 0, width)
    s = _gather(nxt, starts)
    e = _gather(prv, ends)
    return s, e


def text_eligibility(
    responses: Sequence[str],
    offsets: np.ndarray,
    oks: dict[int, np.ndarray],
    prompt_texts: Sequence[str] | None,
    cfg: DiversityConfig,
    chars: CharArrays | None = None,
) -> dict[int, np.ndarray]:
    """{n: (B, W_n) bool}: windows with >= ``min_ngram_chars`` letters/digits, at least one of
    them outside a function word, and not copied from the prompt.

    responses: the decoded texts; offsets: (B, L, 2) character spans of the tokens; oks: the
    window validity from :func:`ngram_keys`; prompt_texts: per response, the prompt's fields
    joined (see :func:`prompt_text`), or None to skip the copy filter.

    The copy test is on normalised text: a window is a copy when its characters, trimmed of
    outer spaces, occur in the prompt text. Copies that would count as n-grams (enough letters,
    a content word) mark their characters as copied, and every window touching a copied
    character is dropped, so neither a copy nor a window reaching into it enters G_high, and
    the copied tokens are never penalised. For a fixed start a longer window contains the
    shorter one, so the scan stops at the first length that is not a copy (most windows cost one
    substring search).
    """
    B = len(responses)
    chars = chars or CharArrays.build(responses, offsets)
    texts, alnum = chars.texts, chars.alnum
    alnum_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(alnum, axis=1)], axis=1)
    content = _content_chars(texts, alnum, cfg.stopwords)
    content_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(content, axis=1)], axis=1)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    ns = sorted(oks)
    out: dict[int, np.ndarray] = {}
    for n in ns:
        W = oks[n].shape[1]
        if W == 0:
            out[n] = np.zeros((B, 0), dtype=bool)
            continue
        s = s_tok[:, :W]
        e = np.maximum(e_tok[:, n - 1 : n - 1 + W], s)
        letters = _gather(alnum_cum, e) - _gather(alnum_cum, s)
        words = _gather(content_cum, e) - _gather(content_cum, s)
        out[n] = oks[n] & (letters >= cfg.min_ngram_chars) & (words > 0)
    if cfg.exclude_prompt_copies and prompt_texts is not None and ns:
        width = chars.width
        copied = np.zeros((B, width), dtype=np.int32)  # characters inside a copied n-gram
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
                    continue  # no window starting with this character occurs in the prompt
                region_end = -1
                for n in ns:
                    row = ok_rows[n]
                    if t >= len(row) or not row[t]:
                        break
                    e = ends[t + n - 1]
                    if e <= s:
                        continue  # whitespace only: says nothing, try the longer window
                    if text[s:e] not in prompt:
                        break
                    if counts[n][t]:  # a copy that would have counted as an n-gram
                        region_end = e
                if region_end > s:
                    copied[b, s:region_end] = 1
        # Exclude every window that touches a copied n-gram, not only the copies themselves:
        # "，全国包邮" or "shipping today" around a copied "全国包邮" / "free shipping" would
        # otherwise carry the prompt's words into G_high through their neighbours.
        copied_cum = np.concatenate([np.zeros((B, 1), dtype=np.int64), np.cumsum(copied, axis=1)], axis=1)
        for n in ns:
            W = oks[n].shape[1]
            if W == 0:
                continue
            s = s_tok[:, :W]
            e = np.maximum(e_tok[:, n - 1 : n - 1 + W], s)
            out[n] &= (_gather(copied_cum, e) - _gather(copied_cum, s)) == 0
    return out


def prompt_text(query: str, bidword: str, selling_points: Sequence[str]) -> str:
    """The prompt fields an n-gram may be copied from, normalised, joined by NUL.

    NUL never occurs in a normalised response (control characters normalise to spaces), so a
    window can never match across two fields.
    """
    return "\x00".join(normalize_chars(x) for x in (query, bidword, *selling_points))
