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

Cost (the trainer runs this every step on 1440 x 256 tokens, benchmarks/bench_advantage.py):
everything is whole-batch array code. Character-level work runs on the batch's characters
concatenated (:class:`CharArrays`' flat views: a long response does not widen every row), with
per-code-point tables instead of per-character Python; window counts come from prefix sums read
at token boundaries; the prompt-copy filter tests all windows of one length at once by hash
look-up (:func:`_copied_chars`, exact: hits are checked character by character); keys are
hashed once per batch in cache-sized blocks of rows. tests/test_reward_perf_equivalence.py
checks each piece against the per-response code it replaced.
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
from reward_fns.text import CP_LIMIT, char_table, code_points, label_spans, normalize_batch, normalize_chars

LEXICON_DIR = Path(__file__).parent / "lexicons"

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (2^64 / golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(30))  # a new array: the input is left alone
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def ngram_keys(
    token_ids: np.ndarray, valid: np.ndarray, n_min: int, n_max: int
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Keys and validity of every window, per n.

    token_ids: (B, L) int; valid: (B, L) bool (token may be part of an n-gram).
    Returns ({n: keys (B, W_n) uint64}, {n: ok (B, W_n) bool}); n > L gives (B, 0) arrays.
    Computed in blocks of rows that stay in the CPU cache through all n (about 2x faster than
    whole-batch arrays, same numbers).
    """
    ids = np.asarray(token_ids)
    B, L = ids.shape
    v_all = np.asarray(valid, dtype=bool)
    keys: dict[int, np.ndarray] = {}
    oks: dict[int, np.ndarray] = {}
    for n in range(n_min, n_max + 1):
        W = L - n + 1 if n <= L else 0
        keys[n] = np.zeros((B, W), dtype=np.uint64)
        oks[n] = np.zeros((B, W), dtype=bool)
    with np.errstate(over="ignore"):
        for r0 in range(0, B, _ROW_BLOCK):
            r1 = min(r0 + _ROW_BLOCK, B)
            x = ids[r0:r1].astype(np.uint64) + np.uint64(1)  # +1: token 0 still changes the hash
            v = v_all[r0:r1]
            h, ok = x, v
            for n in range(1, min(n_max, L) + 1):
                if n > 1:
                    h = h[:, :-1] * _P + x[:, n - 1 :]
                    ok = ok[:, :-1] & v[:, n - 1 :]
                if n >= n_min:
                    keys[n][r0:r1] = _mix64(h ^ np.uint64(n * 0x100000001B3))
                    oks[n][r0:r1] = ok
    return keys, oks


_ROW_BLOCK = 64  # rows per block: (64, 256) uint64 arrays are 128 KiB


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
    g = max(n_groups, 1)
    for n in ns:
        k = keys[n]
        B, W = k.shape
        cand = oks[n]
        if frequent_prev is not None and n - 1 in keys:
            cand = cand & frequent_prev[:, :W] & frequent_prev[:, 1 : W + 1]
        frequent = np.zeros(B * W, dtype=bool)
        hit = np.zeros(B * W, dtype=bool)
        at = np.flatnonzero(cand)  # candidate windows, row-major
        if at.size:
            gc = group_codes_[at // W] if W else at
            codes, uniq = pd.factorize(k.ravel()[at])
            codes = codes.astype(np.int64)
            pairs = pd.unique(codes * g + gc)  # distinct (n-gram, group) pairs
            freq = np.bincount(pairs // g, minlength=len(uniq))
            uniq = np.asarray(uniq)
            hot = freq >= threshold
            frequent[at] = hot[codes]
            if same:
                hit = frequent
                high_keys.append(uniq[hot])
                high_freq.append(freq[hot])
            else:
                sel = counted[n].ravel()[at]
                if sel.any():
                    # The counted windows reuse the candidates' codes: frequencies over the
                    # counted subset, G_high keys in order of first counted occurrence (as a
                    # factorisation of the counted keys alone would list them).
                    c2 = codes[sel]
                    pairs2 = pd.unique(c2 * g + gc[sel])
                    f2 = np.bincount(pairs2 // g, minlength=len(uniq))
                    hot2 = f2 >= threshold
                    hit[at[sel]] = hot2[c2]
                    order = pd.unique(c2)
                    order = order[hot2[order]]
                    high_keys.append(uniq[order])
                    high_freq.append(f2[order])
        hits[n] = hit.reshape(B, W)
        frequent_prev = frequent.reshape(B, W)
    hk = np.concatenate(high_keys).astype(np.uint64) if high_keys else np.zeros(0, dtype=np.uint64)
    hf = np.concatenate(high_freq).astype(np.int64) if high_freq else np.zeros(0, dtype=np.int64)
    return hk, hf, hits


def token_indicator(hits: dict[int, np.ndarray], length: int) -> np.ndarray:
    """Eq. 5's indicator (B, L) bool: token t lies in some hit window [s, s + n).

    A difference array per n (+1 at s, -1 at s + n) summed over n, then one cumulative sum.
    """
    any_hits = next(iter(hits.values())) if hits else None
    B = any_hits.shape[0] if any_hits is not None else 0
    # int32 unless few n: a token lies in at most sum(n) windows, far below 2^15
    dtype = np.int16 if sum(hits) < 2**15 else np.int32
    diff = np.zeros((B, length + 1), dtype=dtype)
    for n, h in hits.items():
        W = h.shape[1]
        if W == 0:
            continue
        hi = h.view(np.int8)
        diff[:, :W] += hi
        diff[:, n : n + W] -= hi
    return np.cumsum(diff, axis=1, dtype=dtype)[:, :length] > 0


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
    return statistics_from_keys(keys, oks, codes, n_groups, cfg, v, eligible)


def statistics_from_keys(
    keys: dict[int, np.ndarray],
    oks: dict[int, np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    cfg: DiversityConfig,
    valid: np.ndarray,
    eligible: dict[int, np.ndarray] | None = None,
) -> NgramStats:
    """:func:`batch_ngram_statistics` after :func:`ngram_keys` and :func:`group_codes` (a caller
    that needs the window validity first, as ``batch_credit`` does, hashes only once).

    keys / oks: from ``ngram_keys(ids, valid, cfg.n_min, cfg.n_max)``; codes: (B,) group codes
    in [0, n_groups); valid: (B, L) bool.
    """
    v = valid
    B, L = v.shape
    counted = {n: (oks[n] & eligible[n]) if eligible is not None else oks[n] for n in keys}
    thr = group_threshold(n_groups, cfg)
    high, freq, hits = high_freq_ngrams(keys, oks, counted, codes, n_groups, thr)
    count = np.zeros(B, dtype=np.int64)
    for h in hits.values():
        count += np.count_nonzero(h, axis=1)
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
#
# Everything below works on the whole batch at once: the texts are concatenated and read as code
# points (reward_fns.text.normalize_batch, CharTable), per-window quantities come from prefix sums
# read at each token's trimmed start / end, and the prompt-copy test is a hash look-up per window.
# No Python code runs per character or per token. tests/test_reward_perf_equivalence.py checks
# every function against the per-response loops it replaced.


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


@lru_cache(maxsize=4)
def _stopword_chars(path: str) -> tuple[np.ndarray, re.Pattern[str] | None]:
    """(bool table over code points: one-character Chinese function words, regex of the longer ones).

    Equivalent to scanning with :func:`_stopwords`' regex (longer words first, then the
    character class): at a position where no longer word matches, that regex takes one character
    or moves on by one, so the longer words it finds are exactly those a regex of the longer
    words alone finds, and every function character outside them is matched on its own.
    """
    import yaml

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = LEXICON_DIR / p
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    zh = [normalize_chars(str(w)) for w in data.get("zh") or []]
    table = np.zeros(CP_LIMIT, dtype=bool)
    table[[ord(w) for w in zh if len(w) == 1]] = True
    multi = [re.escape(w) for w in sorted((w for w in zh if len(w) > 1), key=len, reverse=True)]
    return table, (re.compile("|".join(multi)) if multi else None)


_ASCII_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_ASCII_WORD_SPLIT = re.compile(f"({_ASCII_WORD_RE.pattern})")  # split() keeps the words


def _mark_spans(size: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(size,) bool: union of the half-open spans [starts[i], ends[i]) (ends <= size)."""
    if len(starts) == 0:
        return np.zeros(size, dtype=bool)
    diff = np.bincount(starts, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    return np.cumsum(diff[:size]) > 0


def _flat_cumsum(x: np.ndarray) -> np.ndarray:
    """(N,) -> (N + 1,) int32 prefix sums starting at 0."""
    out = np.zeros(len(x) + 1, dtype=np.int32)
    np.cumsum(x, dtype=np.int32, out=out[1:])
    return out


def _content_flat(chars: "CharArrays", stopwords: str | None) -> np.ndarray:
    """(N,) bool over the flat characters: letters / digits that are not inside a function word.

    English function words are whole ASCII words (``_ASCII_WORD_RE``) looked up in a set;
    Chinese ones are single characters (a table look-up) or, if the file has longer ones, a regex.
    One ``split`` over the batch joined by NUL (which no normalised text holds, and no word
    pattern matches) finds the same words as a ``finditer`` per text.
    """
    alnum = chars.flat_alnum
    if not stopwords:
        return alnum.copy()
    en, _ = _stopwords(stopwords)
    single, multi = _stopword_chars(stopwords)
    stop = single[chars.norm_codes]  # (N,)
    joined = "\x00".join(chars.texts)  # text b's character c is joined[bounds[b] + b + c]
    spans_a: list[np.ndarray] = []
    spans_e: list[np.ndarray] = []
    parts = _ASCII_WORD_SPLIT.split(joined)
    if len(parts) > 1:
        ends = np.cumsum(np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)))
        words = parts[1::2]
        is_stop = np.fromiter(map(en.__contains__, words), dtype=bool, count=len(words))
        spans_a.append(ends[0:-1:2][is_stop])  # end of the piece before each word
        spans_e.append(ends[1::2][is_stop])
    if multi is not None:
        found = [m.span() for m in multi.finditer(joined)]
        if found:
            arr = np.asarray(found, dtype=np.int64)
            spans_a.append(arr[:, 0])
            spans_e.append(arr[:, 1])
    if spans_a:
        marked = _mark_spans(len(joined), np.concatenate(spans_a), np.concatenate(spans_e))
        stop |= marked[np.arange(len(stop)) + chars.rows]  # drop the B - 1 separators
    return alnum & ~stop


def _content_chars(chars: "CharArrays", stopwords: str | None) -> np.ndarray:
    """(B, width) bool: :func:`_content_flat` laid out per response."""
    return chars.to_rows(_content_flat(chars, stopwords))


@dataclass
class CharArrays:
    """Character-level views of a batch of responses, computed once per batch.

    texts: normalised responses; nonspace / alnum: (B, width) bool; tok_start / tok_end: (B, L)
    each token's span with outer whitespace trimmed (end <= start for whitespace-only tokens).

    The batch code works on the flat views (the texts concatenated, N characters, so that one
    long response does not make every row long): bounds (B + 1,) (text b is
    ``[bounds[b], bounds[b + 1])``), codes / norm_codes (N,) uint32 code points of the original /
    normalised texts, rows (N,) the text of each character, flat_nonspace / flat_alnum (N,)
    bool. ``nonspace`` and ``alnum`` are laid out per response only when read.
    """

    texts: list[str]
    width: int
    nonspace: np.ndarray | None = None
    alnum: np.ndarray | None = None
    tok_start: np.ndarray | None = None
    tok_end: np.ndarray | None = None
    bounds: np.ndarray | None = None
    codes: np.ndarray | None = None
    norm_codes: np.ndarray | None = None
    rows: np.ndarray | None = None
    flat_nonspace: np.ndarray | None = None
    flat_alnum: np.ndarray | None = None

    @classmethod
    def build(cls, responses: Sequence[str], offsets: np.ndarray) -> "CharArrays":
        nb = normalize_batch(responses)
        B = len(responses)
        lens = np.diff(nb.bounds)
        width = int(lens.max(initial=0)) + 1
        table = char_table()
        table.ensure(nb.norm_codes)
        out = cls(nb.texts, width, bounds=nb.bounds, codes=nb.codes, norm_codes=nb.norm_codes,
                  rows=np.repeat(np.arange(B, dtype=np.int64), lens),
                  flat_nonspace=table.nonspace[nb.norm_codes], flat_alnum=table.alnum[nb.norm_codes])
        out.tok_start, out.tok_end = _trimmed_token_spans_flat(out, np.asarray(offsets, dtype=np.int64))
        return out

    def to_rows(self, flat: np.ndarray) -> np.ndarray:
        """(N,) per-character values -> (B, width), zero past each text."""
        B = len(self.texts)
        lens = np.diff(self.bounds)
        out = np.zeros(B * self.width, dtype=flat.dtype)
        out[np.arange(len(flat), dtype=np.int64) + self.rows * self.width - np.repeat(self.bounds[:-1], lens)] = flat
        return out.reshape(B, self.width)

    def flat_index(self, pos: np.ndarray) -> np.ndarray:
        """(B, L) positions (>= 0) in each text -> indices into (N + 1,) flat prefix sums: past
        a text's end (where a row of width ``width`` holds nothing) reads as its end."""
        out = np.minimum(pos, np.diff(self.bounds)[:, None])
        out += self.bounds[:-1][:, None]
        return out


def _cached_rows(name: str, flat_name: str):
    key = "_" + name

    def get(self: CharArrays) -> np.ndarray | None:
        value = self.__dict__.get(key)
        if value is None and getattr(self, flat_name) is not None:
            value = self.__dict__[key] = self.to_rows(getattr(self, flat_name))
        return value

    def set_(self: CharArrays, value: np.ndarray | None) -> None:
        self.__dict__[key] = value

    return property(get, set_)


CharArrays.nonspace = _cached_rows("nonspace", "flat_nonspace")  # type: ignore[assignment]
CharArrays.alnum = _cached_rows("alnum", "flat_alnum")  # type: ignore[assignment]


def _as_flat(chars: CharArrays | None, responses: Sequence[str], offsets: np.ndarray) -> CharArrays:
    """``chars`` if it has the flat views (built by :meth:`CharArrays.build`), else built here."""
    if chars is not None and chars.bounds is not None and chars.flat_alnum is not None:
        return chars
    return CharArrays.build(responses, offsets)


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
    chars = _as_flat(chars, responses, offsets)
    width = chars.width
    N = len(chars.codes)
    bounds = chars.bounds.tolist()
    a_list: list[int] = []
    e_list: list[int] = []
    for b, (resp, p) in enumerate(zip(responses, parsed)):
        for a, e in label_spans(resp, p):
            a_list.append(bounds[b] + a)
            e_list.append(bounds[b] + e)
    noncontent = _mark_spans(N, np.asarray(a_list, dtype=np.int64), np.asarray(e_list, dtype=np.int64))
    codes = chars.codes
    noncontent |= (codes == 10) | (codes == 13)  # line breaks (\r, \n) of the original text
    cum = _flat_cumsum(noncontent)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    raw_s = np.clip(offsets[..., 0], 0, width - 1)
    raw_e = np.clip(offsets[..., 1], 0, width - 1)
    has = e_tok > s_tok
    ok = np.asarray(mask, dtype=bool) & (raw_e > raw_s)
    a = np.where(has, s_tok, raw_s)
    e = np.where(has, e_tok, raw_e)
    ok &= cum[chars.flat_index(e)] == cum[chars.flat_index(a)]  # no label / line break inside
    return ok


def _trimmed_token_spans_flat(chars: CharArrays, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token, its span with leading / trailing whitespace removed: (start (B, L), end (B, L)).

    start: the next non-space character at or after the token's start in its text (``width``
    if none); end: one past the last non-space character before its end (0 if none); so a
    whitespace-only token gets end <= start. Offsets are clipped to [0, width - 1] / [0, width]
    as for a (B, width) layout; past a text's end (where such a row holds nothing) they read as
    its end. Running minima / maxima over the flat characters, one gather per token.
    """
    width = chars.width
    N = len(chars.flat_nonspace)
    lens = np.diff(chars.bounds)[:, None]
    base = chars.bounds[:-1][:, None]
    pos = np.arange(N, dtype=np.int64)
    nxt = np.empty(N + 1, dtype=np.int64)  # next non-space at or after f (N: none); nxt[f] >= f
    nxt[N] = N
    nxt[:N] = np.where(chars.flat_nonspace, pos, N)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    prv = np.zeros(N + 1, dtype=np.int64)  # (last non-space before f) + 1 (0: none)
    np.maximum.accumulate(np.where(chars.flat_nonspace, pos + 1, 0), out=prv[1:])
    f = np.clip(offsets[..., 0], 0, lens)
    f += base
    g = nxt[f]
    g -= base
    s = np.where(g < lens, g, width)  # past the text's end: none in this text
    f = np.clip(offsets[..., 1], 0, lens)
    f += base
    e = prv[f]
    e -= base
    np.maximum(e, 0, out=e)
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
    shorter one, so the scan stops at the first length that is not a copy
    (:func:`_copied_chars`).

    Counts per window come from prefix sums over the characters read at each token's trimmed
    start and end: window [t, t + n) spans [s, e) = [s_tok[t], max(e_tok[t + n - 1], s_tok[t])),
    and prefix sums never decrease, so cum[max(e, s)] = max(cum[e], cum[s]).
    """
    B = len(responses)
    chars = _as_flat(chars, responses, offsets)
    fs = chars.flat_index(chars.tok_start)
    fe = chars.flat_index(chars.tok_end)
    ns = sorted(oks)
    alnum_cum = _flat_cumsum(chars.flat_alnum)
    content_cum = _flat_cumsum(_content_flat(chars, cfg.stopwords))
    a_s, a_e = alnum_cum[fs], alnum_cum[fe]
    c_s, c_e = content_cum[fs], content_cum[fe]
    k = int(cfg.min_ngram_chars) if float(cfg.min_ngram_chars).is_integer() else math.ceil(cfg.min_ngram_chars)
    need = a_s + k  # letters >= k  <=>  a_e >= a_s + k (k > 0; always true otherwise)
    out: dict[int, np.ndarray] = {}
    for n in ns:
        W = oks[n].shape[1]
        if W == 0:
            out[n] = np.zeros((B, 0), dtype=bool)
            continue
        o = oks[n] & (c_e[:, n - 1 : n - 1 + W] > c_s[:, :W])  # a letter outside function words
        if k > 0:
            o &= a_e[:, n - 1 : n - 1 + W] >= need[:, :W]
        out[n] = o
    if cfg.exclude_prompt_copies and prompt_texts is not None and ns:
        copied_cum = _flat_cumsum(_copied_chars(chars, oks, out, prompt_texts, ns))
        # Exclude every window that touches a copied n-gram, not only the copies themselves:
        # "，全国包邮" or "shipping today" around a copied "全国包邮" / "free shipping" would
        # otherwise carry the prompt's words into G_high through their neighbours.
        p_s, p_e = copied_cum[fs], copied_cum[fe]
        for n in ns:
            W = oks[n].shape[1]
            if W:
                out[n] &= p_e[:, n - 1 : n - 1 + W] <= p_s[:, :W]
    return out


# -- the prompt-copy test -------------------------------------------------------------------------

_COPY_BUDGET = 8_000_000  # prompt substrings to hash; beyond it the per-window loop is cheaper


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(P^k, Q^k) for k < size, uint64 (Q = P^-1 mod 2^64)."""
    ppow = np.empty(size, dtype=np.uint64)
    qpow = np.empty(size, dtype=np.uint64)
    ppow[0] = qpow[0] = 1
    with np.errstate(over="ignore"):
        if size > 1:
            ppow[1:] = _P
            qpow[1:] = _P_INV
            np.cumprod(ppow, out=ppow)
            np.cumprod(qpow, out=qpow)
    return ppow, qpow


def _poly_prefix(codes: np.ndarray, qpow: np.ndarray) -> np.ndarray:
    """Prefix sums G (N + 1,) of x_k * Q^k, x = code + 1 (uint64, wrapping; len(qpow) >= N).

    The hash of characters [s, e) is ``(G[e] - G[s]) * P^s = sum_j x_{s+j} Q^j``: it does not
    depend on where the characters are, so text windows and prompt substrings compare by it.
    """
    n = len(codes)
    g = np.zeros(n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * qpow[:n], out=g[1:])
    return g


def _window_hash(g: np.ndarray, ppow: np.ndarray, s: np.ndarray, e: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """Key of characters [s, e) (flat positions) of the text of ``prompt`` (its id):
    ``(g[e] - g[s]) * P^s + prompt * K`` (uint64, wrapping). The length is left out: two strings
    of different lengths share a key with probability 2^-64, and every hit is checked anyway."""
    with np.errstate(over="ignore"):
        h = g[e]
        h -= g[s]
        h *= ppow[s]
        h += prompt.astype(np.uint64) * _TAG_MUL
        return h


_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_TAG_MUL = np.uint64(0xD6E8FEB86659FD93)


class _KeyTable:
    """Hash table uint64 key -> row (pandas' C hash table; a sorted array where unavailable)."""

    def __init__(self, keys: np.ndarray):
        try:
            from pandas._libs.hashtable import UInt64HashTable

            self._ht = UInt64HashTable(max(len(keys), 1))
            self._ht.map_locations(keys)
            self._sorted = None
        except Exception:  # pragma: no cover - private pandas API moved
            self._ht = None
            self._order = np.argsort(keys, kind="stable")
            self._sorted = keys[self._order]

    def lookup(self, q: np.ndarray) -> np.ndarray:
        """(len(q),) int64: a row holding each key, -1 where none does."""
        if self._ht is not None:
            return np.asarray(self._ht.lookup(q), dtype=np.int64)
        if len(self._sorted) == 0:  # pragma: no cover
            return np.full(len(q), -1, dtype=np.int64)
        i = np.minimum(np.searchsorted(self._sorted, q), len(self._sorted) - 1)  # pragma: no cover
        return np.where(self._sorted[i] == q, self._order[i], -1)  # pragma: no cover


def _copied_chars(
    chars: CharArrays,
    oks: dict[int, np.ndarray],
    counts: dict[int, np.ndarray],
    prompt_texts: Sequence[str],
    ns: list[int],
) -> np.ndarray:
    """(N,) bool over the flat characters: inside a copied n-gram (see :func:`text_eligibility`).

    Per token t (the windows starting there, shortest first): a window whose span is empty says
    nothing and the scan goes on; the first window whose text does not occur in the prompt ends
    the scan; the last copy that counts (``counts``: enough letters and a content word) before
    that marks its characters. All scans advance together, one window length at a time: a
    window's text occurs in the prompt iff its hash is one of the prompt's substring hashes.
    Only substrings that could equal a window are hashed: no NUL inside (NUL separates the
    fields and never occurs in normalised text), first and last character not a space (a
    window's span is trimmed). A hash miss is certain; a hit is certain up to a 64-bit
    collision, so the longest hit of every scan that marks characters is compared character by
    character (each other hit of the scan is a prefix of it), and a scan with a false hit (never
    seen) is redone by string search. The result is exactly the per-window string search's
    (:func:`_copied_chars_loop`).
    """
    B, N = len(chars.texts), len(chars.norm_codes)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    Lw = s_tok.shape[1]
    W0 = oks[ns[0]].shape[1]
    prompts = list(prompt_texts)
    index: dict[str, int] = {}
    pid = np.fromiter((index.setdefault(p, len(index)) if p else -1 for p in prompts), dtype=np.int64, count=B)
    if W0 == 0 or not index:
        return np.zeros(N, dtype=bool)
    # The scans: one per (response with a prompt, token t with a valid first window).
    wid = np.flatnonzero(np.pad(oks[ns[0]] & (pid >= 0)[:, None], ((0, 0), (0, Lw - W0))))  # b * Lw + t
    if wid.size == 0:
        return np.zeros(N, dtype=bool)
    cb = wid // Lw
    cs = s_tok.ravel()[wid]

    uniq = list(index)
    pcodes = code_points("\x00".join(uniq))
    M = len(pcodes)
    table_c = char_table()
    table_c.ensure(pcodes)
    pnonspace = table_c.nonspace[pcodes] & (pcodes != 0)
    pos = np.arange(M, dtype=np.int64)
    nxt = np.where(pcodes == 0, pos, M)
    run = np.minimum.accumulate(nxt[::-1])[::-1] - pos  # characters from i to the field's end
    run[~pnonspace] = 0  # a window starts with a non-space character
    if int(run.sum()) > _COPY_BUDGET:  # long fields: hash only substrings as long as a window
        lmax = 0
        for n in ns:
            W = oks[n].shape[1]
            if W:
                d = np.where(oks[n] & (pid >= 0)[:, None], e_tok[:, n - 1 : n - 1 + W] - s_tok[:, :W], 0)
                lmax = max(lmax, int(d.max(initial=0)))
        run = np.minimum(run, lmax)
        if int(run.sum()) > _COPY_BUDGET:
            return _copied_chars_loop(chars, oks, counts, prompts, ns)
    total = int(run.sum())
    plens = np.fromiter(map(len, uniq), dtype=np.int64, count=len(uniq))
    prompt_of = np.repeat(np.arange(len(uniq), dtype=np.int64), plens + 1)[:M]
    sub_i = np.repeat(pos, run)  # prompt substrings [sub_i, sub_i + sub_l) without NUL
    sub_l = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(run) - run, run) + 1
    last_ok = pnonspace[sub_i + sub_l - 1]  # ... that end with a non-space character
    sub_i, sub_l = sub_i[last_ok], sub_l[last_ok]
    tcodes = chars.norm_codes
    ppow, qpow = _powers(max(M, len(tcodes)) + 1)
    g_p = _poly_prefix(pcodes, qpow)
    g_t = _poly_prefix(tcodes, qpow)
    table = _KeyTable(_window_hash(g_p, ppow, sub_i, sub_i + sub_l, prompt_of[sub_i]))

    # Per scan, the key of text [s, e) is g_t[e] * pw + c0 (see _window_hash).
    rstart = chars.bounds[:-1][cb]
    fs = rstart + cs
    fs_in = np.minimum(fs, len(tcodes))  # a scan starting past its text never tests a window
    pw = ppow[fs_in]
    with np.errstate(over="ignore"):
        c0 = pid[cb].astype(np.uint64) * _TAG_MUL - g_t[fs_in] * pw
    K = wid.size
    region = np.full(K, -1, dtype=np.int64)
    best = np.full(K, -1, dtype=np.int64)  # end of the longest hit of each scan
    e_flat = e_tok.ravel()
    act = np.arange(K, dtype=np.int64)  # scans still going, their first token (b * Lw + t), start
    aw, acs = wid, cs
    with np.errstate(over="ignore"):
        for n in ns:
            Wn = oks[n].shape[1]
            okn = np.pad(oks[n], ((0, 0), (0, Lw - Wn))).ravel() if Wn < Lw else oks[n].ravel()
            ok = okn[aw]  # False past the row's last window: the scan stops there
            e = np.take(e_flat, aw + (n - 1), mode="clip")
            tested = np.flatnonzero(ok & (e > acs))
            if tested.size:
                ta, te = act[tested], e[tested]
                h = g_t[rstart[ta] + te]
                h *= pw[ta]
                h += c0[ta]
                hit = table.lookup(h) >= 0
                ha, he = ta[hit], te[hit]
                best[ha] = np.maximum(best[ha], he)
                cn = np.pad(counts[n], ((0, 0), (0, Lw - Wn))).ravel() if Wn < Lw else counts[n].ravel()
                c = cn[wid[ha]]
                region[ha[c]] = he[c]
                ok[tested[~hit]] = False  # not a copy: the scan ends
            act, aw, acs = act[ok], aw[ok], acs[ok]
            if act.size == 0:
                break

    marks = np.flatnonzero(region > cs)
    if marks.size == 0:
        return np.zeros(N, dtype=bool)
    mb, ms, ends = cb[marks], cs[marks], region[marks]
    # Character check of the longest hit of every scan that marks characters.
    mfs = fs[marks]
    ln = best[marks] - ms
    with np.errstate(over="ignore"):
        loc = table.lookup(_window_hash(g_t, ppow, mfs, mfs + ln, pid[mb]))
    ps = sub_i[loc]
    good = (loc >= 0) & (sub_l[loc] == ln) & (prompt_of[ps] == pid[mb])
    k = np.arange(int(ln.sum()), dtype=np.int64) - np.repeat(np.cumsum(ln) - ln, ln)
    differ = tcodes[np.repeat(mfs, ln) + k] != pcodes[np.minimum(np.repeat(ps, ln) + k, M - 1)]
    if differ.any():
        good[np.repeat(np.arange(marks.size), ln)[differ]] = False
    for j in np.flatnonzero(~good).tolist():  # a 64-bit collision: string search for that scan
        b, t = int(mb[j]), int(wid[marks[j]] % Lw)
        ends[j] = _scan_copy(chars.texts[b], prompts[b], t, s_tok[b], e_tok[b], oks, counts, b, ns)
    keep = ends > ms
    row0 = chars.bounds[mb][keep]
    return _mark_spans(N, row0 + ms[keep], row0 + ends[keep])


def _scan_copy(
    text: str, prompt: str, t: int, starts: np.ndarray, ends: np.ndarray,
    oks: dict[int, np.ndarray], counts: dict[int, np.ndarray], b: int, ns: list[int],
) -> int:
    """End of the copied region of the windows starting at token t (-1: none), by string search."""
    s = int(starts[t])
    region_end = -1
    if s < len(text) and text[s] not in prompt:
        return region_end
    for n in ns:
        row = oks[n][b]
        if t >= len(row) or not row[t]:
            break
        e = int(ends[t + n - 1])
        if e <= s:
            continue
        if text[s:e] not in prompt:
            break
        if counts[n][b, t]:
            region_end = e
    return region_end


def _copied_chars_loop(
    chars: CharArrays,
    oks: dict[int, np.ndarray],
    counts: dict[int, np.ndarray],
    prompts: Sequence[str],
    ns: list[int],
) -> np.ndarray:
    """:func:`_copied_chars` by string search per window (for prompts too long to hash)."""
    B = len(chars.texts)
    copied = np.zeros(len(chars.norm_codes), dtype=bool)
    W0 = oks[ns[0]].shape[1]
    for b in range(B):
        prompt = prompts[b]
        if not prompt:
            continue
        text = chars.texts[b]
        for t in range(W0):
            end = _scan_copy(text, prompt, t, chars.tok_start[b], chars.tok_end[b], oks, counts, b, ns)
            s = int(chars.tok_start[b, t])
            if end > s:
                copied[chars.bounds[b] + s : chars.bounds[b] + end] = True
    return copied


def prompt_text(query: str, bidword: str, selling_points: Sequence[str]) -> str:
    """The prompt fields an n-gram may be copied from, normalised, joined by NUL.

    NUL never occurs in a normalised response (control characters normalise to spaces), so a
    window can never match across two fields.
    """
    return "\x00".join(normalize_chars(x) for x in (query, bidword, *selling_points))
