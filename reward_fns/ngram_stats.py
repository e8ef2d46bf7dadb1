"""N-gram statistics of a batch: G_high, the eq. 4 penalty, the eq. 5 token indicators, eq. 12's score.

Shapes: B responses, L tokens (right-padded), W_n = L - n + 1 windows of length n.

1. :func:`ngram_keys`: a 64-bit key for every token window of length n = n_min..n_max,
   computed for all windows at once by a rolling polynomial hash over the (B, L) id matrix
   (uint64 arithmetic wraps mod 2^64), then mixed with n (splitmix64 finaliser) so that lengths
   never share keys. Two different n-grams share a key with probability ~2^-64 per pair
   (~1e-7 for a whole 1440 x 128 batch); the known weakness of hashing mod 2^64 (Thue-Morse
   strings) needs windows of thousands of tokens, and n_max is at most 32.
2. Which windows COUNT (``counted``): every token valid (``valid``: inside the response, not a
   field label, not a line break: :func:`reward_fns.text_filters.content_token_mask`) and the
   window ``eligible`` (:func:`reward_fns.text_filters.text_eligibility`: enough letters, a
   content word, not touching a copy of the prompt).
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
whole-batch array code; the trainer's path hashes only the windows G_high counting reads
(:class:`WindowKeys`, the keys of :func:`ngram_keys`). tests/reward_fns/test_reward_perf_equivalence.py
checks each piece against the per-response code it replaced.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reward_fns.config import DiversityConfig

_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the rolling hash (2^64 / golden ratio)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_P_INV = np.uint64(pow(int(_P), -1, 2**64))  # Q = P^-1 mod 2^64 (WindowKeys' prefix sums)


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
    cfg.n_min, cfg.n_max)`` / ``text_filters.window_validity(valid, cfg.n_min, cfg.n_max)`` (the same
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
