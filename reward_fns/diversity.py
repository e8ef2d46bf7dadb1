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
at token boundaries; function words are found by array code and looked up packed into integers
(:func:`_ascii_words`); the prompt-copy filter needs one number per window start, the longest
prefix of the text from there that occurs in the prompt (:func:`_match_lengths`: exact, no
hashing), and then compares window lengths with it (:func:`_copied_chars`); the trainer's path
hashes only the windows G_high counting reads (:class:`WindowKeys`, the keys of
:func:`ngram_keys`). Where numpy's boolean indexing would meet unpredictable masks, index arrays
and ``take`` are used instead (several times faster). tests/test_reward_perf_equivalence.py
checks each piece against the per-response code it replaced.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from relate_common.ad_format import ParsedAd

from reward_fns.config import DiversityConfig
from reward_fns.text import (
    CP_LIMIT,
    KeyTable,
    char_table,
    code_points,
    label_spans,
    label_spans_batch,
    normalize_batch,
    normalize_chars,
)

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


def window_validity(valid: np.ndarray, n_min: int, n_max: int) -> dict[int, np.ndarray]:
    """{n: ok (B, W_n) bool}: every token of the window valid; the ``oks`` of :func:`ngram_keys`
    without hashing anything. valid: (B, L) bool; n > L gives (B, 0) arrays."""
    v = np.asarray(valid, dtype=bool)
    B, L = v.shape
    oks: dict[int, np.ndarray] = {}
    ok = v.copy()
    for n in range(1, n_max + 1):
        if n > 1:
            ok = ok[:, :-1] & v[:, n - 1 :] if n <= L else np.zeros((B, 0), dtype=bool)
        if n >= n_min:
            oks[n] = ok
    return oks


class WindowKeys(Mapping):
    """:func:`ngram_keys`' keys (the same numbers), computed where they are read.

    ``keys[n]`` is the whole (B, W_n) uint64 array, hashed on first access; :meth:`at` hashes
    only the windows asked for. G_high counting reads the keys of its candidate windows, about a
    fifth of the valid ones (Apriori pruning) and a tenth of the (B, W_n) grids, so the trainer
    never hashes the rest.

    O(1) per window from per-row prefix sums ``G[t] = sum_{i<t} x_i Q^i`` (Q = P^-1 mod 2^64):
    the rolling hash of x[t : t + n] is ``sum_j x_{t+j} P^(n-1-j) = (G[t + n] - G[t]) P^(t+n-1)``.
    """

    def __init__(self, token_ids: np.ndarray, n_min: int, n_max: int):
        ids = np.asarray(token_ids)
        if ids.ndim != 2:
            raise ValueError(f"token_ids must be (B, L), got shape {ids.shape}")
        self._ids, self.n_min, self.n_max = ids, int(n_min), int(n_max)
        B, L = ids.shape
        self._ppow, qpow = _powers(L + 1)
        g = np.zeros((B, L + 1), dtype=np.uint64)
        with np.errstate(over="ignore"):
            x = ids.astype(np.uint64)
            x += np.uint64(1)  # as ngram_keys: token 0 still changes the hash
            x *= qpow[:L]
            np.cumsum(x, axis=1, out=g[:, 1:])
        self._g = g
        self._full: dict[int, np.ndarray] | None = None

    def at(self, n: int, flat: np.ndarray) -> np.ndarray:
        """(len(flat),) uint64: keys of the windows of length n at row-major positions ``flat``
        of the (B, W_n) grid (``keys[n].ravel()[flat]``)."""
        B, L = self._ids.shape
        W = L - n + 1
        if W <= 0 or len(flat) == 0:
            return np.zeros(0, dtype=np.uint64)
        b = flat // W
        t = flat - b * W
        i = b * (L + 1) + t  # G[b, t], flat
        with np.errstate(over="ignore"):
            h = self._g.take(i + n)
            h -= self._g.take(i)
            h *= self._ppow.take(t + (n - 1))
            h ^= np.uint64(n * 0x100000001B3)
            return _mix64(h)

    def __getitem__(self, n: int) -> np.ndarray:
        if not self.n_min <= n <= self.n_max:
            raise KeyError(n)
        if self._full is None:
            self._full = ngram_keys(self._ids, np.ones(self._ids.shape, dtype=bool), self.n_min, self.n_max)[0]
        return self._full[n]

    def __contains__(self, n: object) -> bool:  # without hashing (Mapping's would read keys[n])
        return isinstance(n, (int, np.integer)) and self.n_min <= n <= self.n_max

    def __iter__(self):
        return iter(range(self.n_min, self.n_max + 1))

    def __len__(self) -> int:
        return max(self.n_max - self.n_min + 1, 0)


def _keys_at(keys: Mapping[int, np.ndarray], n: int, flat: np.ndarray) -> np.ndarray:
    """``keys[n].ravel()[flat]``, hashing only those windows when ``keys`` is a :class:`WindowKeys`."""
    if isinstance(keys, WindowKeys):
        return keys.at(n, flat)
    return keys[n].ravel()[flat]


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
    keys: Mapping[int, np.ndarray]  # n -> (B, W_n) uint64 (a WindowKeys: hashed on first read)
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


def high_freq_ngrams(
    keys: Mapping[int, np.ndarray],
    oks: dict[int, np.ndarray],
    counted: dict[int, np.ndarray],
    group_codes_: np.ndarray,
    n_groups: int,
    threshold: int,
) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """G_high and its counted occurrences.

    keys / oks / counted: {n: (B, W_n)} (counted is a subset of oks; keys may be a
    :class:`WindowKeys`, read at the candidate windows only); group_codes_: (B,) int64 in
    [0, n_groups). Returns (G_high keys (K,), their group frequencies (K,),
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
        B, W = oks[n].shape
        cand = oks[n]
        if frequent_prev is not None and n - 1 in keys:
            cand = cand & frequent_prev[:, :W] & frequent_prev[:, 1 : W + 1]
        frequent = np.zeros(B * W, dtype=bool)
        hit = np.zeros(B * W, dtype=bool)
        at = np.flatnonzero(cand)  # candidate windows, row-major
        if at.size:
            gc = group_codes_.take(at // W) if W else at
            codes, uniq = pd.factorize(_keys_at(keys, n, at))
            codes = codes.astype(np.int64)
            pairs = pd.unique(codes * g + gc)  # distinct (n-gram, group) pairs
            freq = np.bincount(pairs // g, minlength=len(uniq))
            uniq = np.asarray(uniq)
            hot = freq >= threshold
            frequent[at] = hot.take(codes)
            if same:
                hit = frequent
                high_keys.append(uniq[hot])
                high_freq.append(freq[hot])
            else:
                sel = np.flatnonzero(counted[n].ravel().take(at))  # (take: boolean indexing is slow here)
                if sel.size:
                    # The counted windows reuse the candidates' codes: frequencies over the
                    # counted subset, G_high keys in order of first counted occurrence (as a
                    # factorisation of the counted keys alone would list them).
                    c2 = codes.take(sel)
                    pairs2 = pd.unique(c2 * g + gc.take(sel))
                    f2 = np.bincount(pairs2 // g, minlength=len(uniq))
                    hot2 = f2 >= threshold
                    hit[at.take(sel)] = hot2.take(c2)
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
    keys: Mapping[int, np.ndarray],
    oks: dict[int, np.ndarray],
    codes: np.ndarray,
    n_groups: int,
    cfg: DiversityConfig,
    valid: np.ndarray,
    eligible: dict[int, np.ndarray] | None = None,
) -> NgramStats:
    """:func:`batch_ngram_statistics` after :func:`ngram_keys` and :func:`group_codes` (a caller
    that needs the window validity first, as ``batch_credit`` does, hashes only once).

    keys / oks: from ``ngram_keys(ids, valid, cfg.n_min, cfg.n_max)``, or ``WindowKeys(ids,
    cfg.n_min, cfg.n_max)`` / ``window_validity(valid, cfg.n_min, cfg.n_max)`` (the same
    numbers, hashed only where read; ``NgramStats.keys`` is then that mapping); codes: (B,)
    group codes in [0, n_groups); valid: (B, L) bool.
    """
    v = valid
    B, L = v.shape
    counted = {n: (oks[n] & eligible[n]) if eligible is not None else oks[n] for n in keys}
    thr = group_threshold(n_groups, cfg)
    high, freq, hits = high_freq_ngrams(keys, oks, counted, codes, n_groups, thr)
    count = np.zeros(B, dtype=np.int64)
    for h in hits.values():
        count += h.view(np.uint8).sum(axis=1, dtype=np.int32)  # (count_nonzero along an axis is 2x slower)
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
# read at each token's trimmed start / end, and the prompt-copy test compares window lengths with
# the length of the prompt's longest match at each start. No Python code runs per character or
# per token. tests/test_reward_perf_equivalence.py checks
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


# Character classes of _ASCII_WORD_RE: 1 a-z, 2 0-9, 3 the apostrophe, 0 anything else.
_WORD_CLASS = np.zeros(128, dtype=np.uint8)
_WORD_CLASS[ord("a") : ord("z") + 1] = 1
_WORD_CLASS[ord("0") : ord("9") + 1] = 2
_WORD_CLASS[ord("'")] = 3
# A word of up to _PACK_LEN characters as one integer: 6 bits per character (a-z 1..26, 0-9
# 27..36, ' 37), exact.
_PACK_LEN = 10
_PACK_SYMBOL = np.zeros(128, dtype=np.uint64)
_PACK_SYMBOL[ord("a") : ord("z") + 1] = np.arange(1, 27)
_PACK_SYMBOL[ord("0") : ord("9") + 1] = np.arange(27, 37)
_PACK_SYMBOL[ord("'")] = 37


def _ascii_words(codes: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spans (start (K,), end (K,)) int64 of ``_ASCII_WORD_RE.finditer`` over every text, in
    flat positions; codes: (N,) code points of the texts concatenated, text b is
    ``[bounds[b], bounds[b + 1])``.

    The regex's words are the runs of [a-z0-9], except around an apostrophe: a match that ends
    a run goes on over "'" and the letters that start the next run (``'[a-z]+``) when that run
    follows the apostrophe directly and starts with a letter; such a run then starts a word of
    its own only after those letters (at a digit), and when the letters were the whole run the
    match that took them ends there, so it cannot take the suffix of the run after it in turn.
    """
    N = len(codes)
    cls = _WORD_CLASS.take(np.minimum(codes, 127))  # 127 (DEL) is in no class
    word = (cls == 1) | (cls == 2)
    first = np.zeros(N, dtype=bool)  # first character of a text
    first[bounds[:-1][np.diff(bounds) > 0]] = True
    before = np.empty(N, dtype=bool)  # the previous character, in the same text, is a word character
    before[:1] = False
    before[1:] = word[:-1]
    before &= ~first
    after = np.empty(N, dtype=bool)  # the next character, in the same text, is a word character
    after[-1:] = False
    after[:-1] = word[1:] & ~first[1:]
    st = np.flatnonzero(word & ~before)  # runs [st, en)
    en = np.flatnonzero(word & ~after) + 1
    if st.size == 0:
        return st, en
    # Run r is linked when "'" sits between it and run r - 1 and it starts with a letter.
    link = np.zeros(st.size, dtype=bool)
    link[1:] = (en[:-1] == st[1:] - 1) & (cls.take(st[1:]) == 1) & (codes.take(st[1:] - 1) == ord("'"))
    link[1:] &= ~(first.take(st[1:] - 1) | first.take(st[1:]))  # the apostrophe in the same text as both runs
    starts = st.copy()
    ends = en.copy()
    has_word = np.ones(st.size, dtype=bool)
    linked = np.flatnonzero(link)
    if linked.size:  # rare
        end_l = en.take(linked)
        j = st.take(linked)  # -> the end of each linked run's leading letters
        go = np.ones(linked.size, dtype=bool)
        while go.any():
            go &= j < end_l
            go &= cls.take(np.minimum(j, N - 1)) == 1
            j += go
        taken_whole = {}  # run -> its letters were all taken as a suffix
        for r, jr, er in zip(linked.tolist(), j.tolist(), end_l.tolist()):  # in order: a chain
            if taken_whole.get(r - 1, False):
                continue  # the previous match ended with a suffix: no second one
            ends[r - 1] = jr  # the match over run r - 1 goes on to the end of the letters
            taken_whole[r] = jr == er
            if jr == er:
                has_word[r] = False
            else:
                starts[r] = jr
        keep = np.flatnonzero(has_word)
        starts, ends = starts.take(keep), ends.take(keep)
    return starts, ends


def _pack_words(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, upto: int = _PACK_LEN) -> np.ndarray:
    """(K,) uint64 keys of the words [starts, ends) (characters from [a-z0-9']) of at most
    ``upto`` <= _PACK_LEN characters: 6 bits per character, distinct words distinct keys;
    longer words get 2^63 + 1, which no word packs to."""
    length = ends - starts
    key = np.full(len(starts), 2**63 + 1, dtype=np.uint64)
    short = np.flatnonzero(length <= upto)
    s, n = starts.take(short), length.take(short)
    last = s + np.maximum(n - 1, 0)
    k = np.zeros(len(short), dtype=np.uint64)
    for j in range(upto):
        sym = _PACK_SYMBOL.take(codes.take(np.minimum(s + j, last)))  # inside the word: ASCII
        sym *= (n > j).astype(np.uint64)
        sym <<= np.uint64(6 * j)
        k |= sym
    key[short] = k
    return key


@lru_cache(maxsize=4)
def _stopword_keys(path: str) -> np.ndarray | None:
    """Sorted :func:`_pack_words` keys of the English function words (None: one is too long to
    pack; words with other characters can never be a ``_ASCII_WORD_RE`` word and are left out)."""
    en, _ = _stopwords(path)
    words = [w for w in en if w and all(ord(c) < 128 and _PACK_SYMBOL[ord(c)] for c in w)]
    if any(len(w) > _PACK_LEN for w in words):
        return None
    codes = code_points("".join(words))
    lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lens)
    return np.unique(_pack_words(codes, ends - lens, ends))


@lru_cache(maxsize=4)
def _stopword_len(path: str) -> int:
    """Characters of the longest English function word of :func:`_stopword_keys`."""
    en, _ = _stopwords(path)
    return max((len(w) for w in en if w and all(ord(c) < 128 and _PACK_SYMBOL[ord(c)] for c in w)), default=0)


def _content_flat(chars: "CharArrays", stopwords: str | None) -> np.ndarray:
    """(N,) bool over the flat characters: letters / digits that are not inside a function word.

    English function words are whole ASCII words (``_ASCII_WORD_RE``) looked up in a set;
    Chinese ones are single characters (a table look-up) or, if the file has longer ones, a regex.
    The words of the whole batch come from array code (:func:`_ascii_words`), each packed into
    an integer and looked up among the function words' (:func:`_pack_words`); a stopword file
    with words too long to pack uses one ``split`` over the batch joined by NUL (which no
    normalised text holds, and no word pattern matches) instead.
    """
    alnum = chars.flat_alnum
    if not stopwords:
        return alnum.copy()
    en, _ = _stopwords(stopwords)
    single, multi = _stopword_chars(stopwords)
    stop = single.take(chars.norm_codes)  # (N,)
    codes = chars.norm_codes
    stop_keys = _stopword_keys(stopwords)
    if stop_keys is not None:
        a, e = _ascii_words(codes, chars.bounds)
        key = _pack_words(codes, a, e, _stopword_len(stopwords))  # longer words: no function word
        at = np.minimum(np.searchsorted(stop_keys, key), max(len(stop_keys) - 1, 0))
        hit = np.flatnonzero(stop_keys.take(at) == key) if len(stop_keys) else np.zeros(0, dtype=np.int64)
        stop |= _mark_spans(len(stop), a.take(hit), e.take(hit))
    spans_a: list[np.ndarray] = []
    spans_e: list[np.ndarray] = []
    joined = "\x00".join(chars.texts) if (stop_keys is None or multi is not None) else ""
    if stop_keys is None:  # text b's character c is joined[bounds[b] + b + c]
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
                  flat_nonspace=table.nonspace.take(nb.norm_codes), flat_alnum=table.alnum.take(nb.norm_codes))
        out.tok_start, out.tok_end, *flat = _trimmed_token_spans_flat(out, np.asarray(offsets, dtype=np.int64))
        out.__dict__["_flat_tokens"] = tuple(flat)
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

    def flat_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(``flat_index(tok_start)``, ``flat_index(tok_end)``), computed once (the content mask,
        the eligibility and the copy scan all read them)."""
        got = self.__dict__.get("_flat_tokens")
        if got is None:
            got = self.__dict__["_flat_tokens"] = (self.flat_index(self.tok_start), self.flat_index(self.tok_end))
        return got


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
    parsed: Sequence[ParsedAd] | None,
    offsets: np.ndarray,
    mask: np.ndarray,
    chars: CharArrays | None = None,
) -> np.ndarray:
    """(B, L) bool: tokens that may be part of an n-gram.

    A token counts when it is inside the response (``mask``), has a non-empty character span,
    and its characters (leading / trailing spaces trimmed) avoid the field labels ("Title: ",
    "标题：") and line breaks. Labels are fixed by the format: every response shares them.
    parsed: ``parse_ad`` of every response, or None to find the labels batch-wise
    (:func:`reward_fns.text.label_spans_batch`, the same spans).
    """
    chars = _as_flat(chars, responses, offsets)
    width = chars.width
    N = len(chars.codes)
    if parsed is None:
        rows, a_lab, e_lab = label_spans_batch(responses)
    else:
        spans = [(b, a, e) for b, (resp, p) in enumerate(zip(responses, parsed)) for a, e in label_spans(resp, p)]
        rows, a_lab, e_lab = np.asarray(spans, dtype=np.int64).reshape(-1, 3).T
    base = chars.bounds.take(rows)
    noncontent = _mark_spans(N, base + a_lab, base + e_lab)
    codes = chars.codes
    noncontent |= (codes == 10) | (codes == 13)  # line breaks (\r, \n) of the original text
    cum = _flat_cumsum(noncontent)
    s_tok, e_tok = chars.tok_start, chars.tok_end
    raw_s = np.maximum(offsets[..., 0], 0)
    np.minimum(raw_s, width - 1, out=raw_s)
    raw_e = np.maximum(offsets[..., 1], 0)
    np.minimum(raw_e, width - 1, out=raw_e)
    ok = np.asarray(mask, dtype=bool) & (raw_e > raw_s)
    has = e_tok > s_tok
    # No label / line break inside: the trimmed span [s_tok, e_tok) when it has characters (then
    # inside its text: flat_tokens), else the raw one (whitespace tokens: few, done apart).
    fs, fe = chars.flat_tokens()
    raw = np.flatnonzero(ok & ~has)
    ok &= has
    ok &= cum.take(fe) == cum.take(fs)
    if raw.size:
        row = raw // raw_s.shape[1]
        end, base = chars.bounds.take(row + 1), chars.bounds.take(row)
        a = np.minimum(raw_s.ravel().take(raw) + base, end)  # flat_index of the raw span
        e = np.minimum(raw_e.ravel().take(raw) + base, end)
        ok.ravel()[raw] = cum.take(e) == cum.take(a)
    return ok


def _trimmed_token_spans_flat(
    chars: CharArrays, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per token, its span with leading / trailing whitespace removed: (start (B, L), end (B, L)),
    and the same as flat positions (``chars.flat_index`` of both: see :meth:`CharArrays.flat_tokens`).

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
    end = chars.bounds[1:][:, None]
    # int32 positions where they fit: half the memory traffic of the running minima / maxima
    small = np.int32 if N < 2**31 - 1 else np.int64
    nonspace = chars.flat_nonspace
    nxt = np.empty(N + 1, dtype=small)  # next non-space at or after f (N: none); nxt[f] >= f
    nxt[N] = N
    np.copyto(nxt[:N], np.arange(N, dtype=small))
    nxt[:N][~nonspace] = N
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    prv = np.zeros(N + 1, dtype=small)  # (last non-space before f) + 1 (0: none)
    np.maximum.accumulate(np.arange(1, N + 1, dtype=small) * nonspace, out=prv[1:])
    f = np.maximum(offsets[..., 0], 0)
    np.minimum(f, lens, out=f)
    f += base
    fs = nxt.take(f).astype(np.int64)  # >= the token's start, so >= its text's start
    s = fs - base
    s[fs >= end] = width  # past the text's end: none in this text
    np.minimum(fs, end, out=fs)
    f = np.maximum(offsets[..., 1], 0)
    np.minimum(f, lens, out=f)
    f += base
    fe = prv.take(f).astype(np.int64)  # <= the token's end, so <= its text's end
    np.maximum(fe, base, out=fe)
    return s, fe - base, fs, fe


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
    fs, fe = chars.flat_tokens()
    ns = sorted(oks)
    alnum_cum = _flat_cumsum(chars.flat_alnum)
    content_cum = _flat_cumsum(_content_flat(chars, cfg.stopwords))
    a_s, a_e = alnum_cum.take(fs), alnum_cum.take(fe)
    c_s, c_e = content_cum.take(fs), content_cum.take(fe)
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
        copied_cum = _flat_cumsum(_copied_chars(chars, oks, out, prompt_texts, ns, fs, fe))
        # Exclude every window that touches a copied n-gram, not only the copies themselves:
        # "，全国包邮" or "shipping today" around a copied "全国包邮" / "free shipping" would
        # otherwise carry the prompt's words into G_high through their neighbours.
        p_s, p_e = copied_cum.take(fs), copied_cum.take(fe)
        for n in ns:
            W = oks[n].shape[1]
            if W:
                out[n] &= p_e[:, n - 1 : n - 1 + W] <= p_s[:, :W]
    return out


# -- the prompt-copy test -------------------------------------------------------------------------

_COPY_BUDGET = 8_000_000  # (start, prompt position) pairs to extend; beyond it the per-window loop is cheaper


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(P^k, Q^k) for k < size, uint64 (Q = P^-1 mod 2^64).

    In blocks of 1024: P^(1024 i + j) = P^(1024 i) * P^j, two short running products and one
    vectorised multiply (a running product over the whole length is one slow sequential pass).
    """
    block = 1024
    rows = -(-max(size, 1) // block)
    out = []
    with np.errstate(over="ignore"):
        for base in (_P, _P_INV):
            within = np.full(block, base, dtype=np.uint64)
            within[0] = 1
            np.cumprod(within, out=within)  # base^j, j < block
            step = np.full(rows, within[-1] * base, dtype=np.uint64)
            step[0] = 1
            np.cumprod(step, out=step)  # base^(block i)
            out.append(np.multiply.outer(step, within).ravel()[:size])
    return out[0], out[1]


_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_KeyTable = KeyTable  # exact tables of packed characters (reward_fns.text)


def _triples(codes: np.ndarray) -> np.ndarray:
    """(len(codes),) uint64: codes[i], codes[i + 1], codes[i + 2] packed 21 bits each (0 past the end)."""
    n = len(codes)
    pad = np.zeros(n + 2, dtype=np.uint64)
    pad[:n] = codes
    out = pad[2:] << np.uint64(42)
    out |= pad[1:-1] << np.uint64(21)
    out |= pad[:-2]
    return out


def _match_lengths(
    codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, prompt: np.ndarray, prompt_texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Matching statistics: per start s, the length of the longest prefix of ``codes[s : end]``
    that occurs in ``prompt_texts[prompt]`` (a window [s, e) of the text is a copy iff
    e - s <= that length: substrings of a prompt are closed under taking prefixes).

    codes: (N,) code points of the texts concatenated; starts / ends / prompt: (K,) start
    (< end), end of its text, prompt number. Returns ((K,) int64 lengths, (K,) bool starts whose
    look-ups a table answered wrongly: never, the keys are exact; the caller redoes those by
    string search), or None when more than _COPY_BUDGET (start, position) pairs would be extended.

    Exact, no hashing: the prompts' characters and pairs of characters (packed: prompt, code,
    next code) index their positions; every prompt position holding the start's first two
    characters is a candidate, extended one character at a time while both sides agree; a start
    whose first two characters are nowhere in its prompt matches 1 or 0 characters.
    """
    K = len(starts)
    out = np.zeros(K, dtype=np.int64)
    bad = np.zeros(K, dtype=bool)
    pcodes = code_points("\x00".join(prompt_texts) + "\x00")  # each prompt ends with a NUL
    plens = np.fromiter(map(len, prompt_texts), dtype=np.int64, count=len(prompt_texts))
    prompt_of = np.repeat(np.arange(len(prompt_texts), dtype=np.uint64), plens + 1)
    at = np.flatnonzero(pcodes[:-1] != 0)  # prompt characters (NUL separates fields, ends prompts)
    u21 = np.uint64(21)
    pair = (prompt_of.take(at) << np.uint64(42)) | (pcodes.take(at).astype(np.uint64) << u21) | pcodes.take(at + 1)
    order = np.argsort(pair, kind="stable")
    pair, ppos = pair.take(order), at.take(order)  # sorted: the positions of one pair are consecutive
    first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(pair) else np.zeros(0, dtype=np.int64)
    pair_keys = pair.take(first)
    count = np.diff(np.r_[first, len(pair)])
    single = pair >> u21  # (prompt, code), sorted too
    single_keys = single.take(np.flatnonzero(np.r_[True, single[1:] != single[:-1]])) if len(single) else single
    if K == 0 or len(pair_keys) == 0:
        return out, bad
    c0 = codes.take(starts).astype(np.uint64)
    p64 = prompt.astype(np.uint64)
    key = (p64 << u21) | c0
    row = _KeyTable(single_keys).lookup(key)
    has = row >= 0
    wrong = has & (single_keys.take(np.maximum(row, 0)) != key)
    bad |= wrong
    has &= ~wrong
    out[has] = 1  # the first character occurs in the prompt
    q = np.flatnonzero(has & (starts + 1 < ends))
    key = (p64.take(q) << np.uint64(42)) | (c0.take(q) << u21) | codes.take(starts.take(q) + 1)
    row = _KeyTable(pair_keys).lookup(key)
    found = row >= 0
    wrong = found & (pair_keys.take(np.maximum(row, 0)) != key)
    bad[q.take(np.flatnonzero(wrong))] = True
    f = np.flatnonzero(found & ~wrong)
    q, row = q.take(f), row.take(f)
    cnt = count.take(row)
    total = int(cnt.sum())
    if total > _COPY_BUDGET:
        return None
    if total == 0:
        return out, bad
    # Candidates (start, prompt position), grouped by start; both sides agree on 2 characters.
    lo = first.take(row)
    owner = np.repeat(np.arange(len(q), dtype=np.int64), cnt)
    s0 = np.repeat(starts.take(q), cnt)
    cand = ppos.take(np.arange(total, dtype=np.int64) + np.repeat(lo - (np.cumsum(cnt) - cnt), cnt))
    shift = cand - s0  # prompt position - text position
    end = np.repeat(ends.take(q), cnt)
    stop = s0 + 2  # where each candidate's agreement ends
    # Three characters per step while three are left in the text (packed 21 bits each: equal
    # packs, equal characters; a NUL of the prompt never equals a text character), then one at
    # a time for the last two.
    p3 = _triples(pcodes)
    act, s, sh, e = np.arange(total, dtype=np.int64), stop.copy(), shift, end
    while act.size:
        go = s + 3 <= e
        t3 = codes.take(s + 2, mode="clip").astype(np.uint64) << np.uint64(42)  # (read only where 3 are left)
        t3 |= codes.take(s + 1, mode="clip").astype(np.uint64) << np.uint64(21)
        t3 |= codes.take(s, mode="clip")
        go &= t3 == p3.take(s + sh, mode="clip")
        keep = np.flatnonzero(go)
        if keep.size < act.size:
            done = np.flatnonzero(~go)
            stop[act.take(done)] = s.take(done)
        act, s, sh, e = act.take(keep), s.take(keep) + 3, sh.take(keep), e.take(keep)
    for _ in range(2):  # (a candidate that stopped stays stopped: the same test again)
        go = stop < end
        pc = pcodes.take(stop + shift, mode="clip")
        go &= codes.take(stop, mode="clip") == pc
        go &= pc != 0
        stop += go
    gfirst = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    out[q] = np.maximum.reduceat(stop - np.repeat(starts.take(q), cnt), gfirst)
    return out, bad


def _copied_chars(
    chars: CharArrays,
    oks: dict[int, np.ndarray],
    counts: dict[int, np.ndarray],
    prompt_texts: Sequence[str],
    ns: list[int],
    flat_start: np.ndarray | None = None,
    flat_end: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) bool over the flat characters: inside a copied n-gram (see :func:`text_eligibility`).

    Per token t (the windows starting there, shortest first): a window whose span is empty says
    nothing and the scan goes on; the first window whose text does not occur in the prompt ends
    the scan; the last copy that counts (``counts``: enough letters and a content word) before
    that marks its characters. Every window of one scan starts where the scan does, so one
    number per scan decides all of them: the longest prefix of the text from there that occurs
    in the prompt (:func:`_match_lengths`); the scans then advance together, one window length
    at a time, comparing lengths. The result is exactly the per-window string search's
    (:func:`_copied_chars_loop`). flat_start / flat_end: ``chars.flat_index`` of the tokens'
    trimmed starts / ends, when the caller has them.
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
    if flat_start is None:
        flat_start = chars.flat_index(s_tok)
    fe_all = (flat_end if flat_end is not None else chars.flat_index(e_tok)).ravel()
    # The scans: one per (response with a prompt, token t with a valid first window) that starts
    # inside its text (one starting past its text tests no window).
    wid = np.flatnonzero(np.pad(oks[ns[0]] & (pid >= 0)[:, None], ((0, 0), (0, Lw - W0))))  # b * Lw + t
    cb = wid // Lw
    fs = flat_start.ravel().take(wid)
    end = chars.bounds.take(cb + 1)
    inside = np.flatnonzero(fs < end)
    if inside.size < wid.size:
        wid, cb, fs, end = wid.take(inside), cb.take(inside), fs.take(inside), end.take(inside)
    if wid.size == 0:
        return np.zeros(N, dtype=bool)
    # One match length per start: tokens that begin inside the same character (a Chinese
    # character is often two or three tokens) share it.
    new_start = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
    got = _match_lengths(chars.norm_codes, fs.take(new_start), end.take(new_start), pid.take(cb.take(new_start)), list(index))
    if got is None:
        return _copied_chars_loop(chars, oks, counts, prompts, ns)
    same = np.cumsum(np.r_[True, fs[1:] != fs[:-1]]) - 1  # scan -> its start's entry
    ms, bad = got[0].take(same), got[1].take(same)
    # A scan whose first character is not in its prompt copies nothing.
    live = np.flatnonzero((ms > 0) & ~bad)
    K = live.size
    region = np.full(K, -1, dtype=np.int64)  # flat end of the last counted copy of each scan
    okn = np.zeros((B, Lw), dtype=bool)  # oks[n] laid out on the scans' (B, Lw) grid
    # The scans still going, compacted every level: index, first token b * Lw + t, flat start,
    # longest copy. (Index arrays and ``take``: numpy's boolean indexing is several times slower
    # on masks as unpredictable as these.)
    act, aw, afs, ams = np.arange(K, dtype=np.int64), wid.take(live), fs.take(live), ms.take(live)
    for n in ns:
        if act.size == 0:
            break
        Wn = oks[n].shape[1]
        okn[:, :Wn] = oks[n]
        okn[:, Wn:] = False
        ok = okn.ravel().take(aw)  # False past the row's last window: the scan stops there
        e = fe_all.take(aw + (n - 1), mode="clip")  # (read only where ok)
        tested = ok & (e > afs)  # an empty span says nothing: the scan goes on
        hit = tested & (e - afs <= ams)
        hi = np.flatnonzero(hit)
        if hi.size:
            ha, he, hw = act.take(hi), e.take(hi), aw.take(hi)
            hb = hw // Lw
            c = np.flatnonzero(counts[n].ravel().take(hb * Wn + (hw - hb * Lw)))  # (b, t) on counts[n]'s (B, Wn) grid
            region[ha.take(c)] = he.take(c)
        keep = np.flatnonzero(ok & (hit | ~tested))  # not a copy: the scan ends
        act, aw, afs, ams = act.take(keep), aw.take(keep), afs.take(keep), ams.take(keep)
    fs_live = fs.take(live)
    marks = np.flatnonzero(region > fs_live)
    starts, stops = fs_live.take(marks), region.take(marks)
    redo = np.flatnonzero(bad)
    if redo.size:  # a table answered wrongly (never seen): string search for those scans
        extra_s, extra_e = [], []
        for j in redo.tolist():
            b, t = int(cb[j]), int(wid[j] % Lw)
            stop = _scan_copy(chars.texts[b], prompts[b], t, s_tok[b], e_tok[b], oks, counts, b, ns)
            row0 = int(chars.bounds[b])
            if stop > int(s_tok[b, t]):
                extra_s.append(row0 + int(s_tok[b, t]))
                extra_e.append(row0 + stop)
        starts = np.concatenate([starts, np.asarray(extra_s, dtype=np.int64)])
        stops = np.concatenate([stops, np.asarray(extra_e, dtype=np.int64)])
    return _mark_spans(N, starts, stops)


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
    """:func:`_copied_chars` by string search per window (for prompts too long to index)."""
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
