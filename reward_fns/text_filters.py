"""Text filters of the diversity statistics: which tokens and windows may count toward G_high.

Step 2 of the credit path (:mod:`reward_fns.credit`): it reads the batch normalised once
(:class:`reward_fns.text.CharArrays`, step 1) and its masks feed the n-gram statistics
(:mod:`reward_fns.ngram_stats`, step 3). :func:`eligibility_masks` runs the step:

Shapes: B responses, L tokens, W_n = L - n + 1 windows of length n, N characters of the batch's
texts concatenated.

* :func:`content_token_mask` (B, L): tokens inside the response, not a field label, not a line
  break;
* :func:`window_validity` {n: (B, W_n)}: windows whose every token is such a token;
* :func:`text_eligibility` {n: (B, W_n)}: from the decoded, normalised text, windows with at
  least ``min_ngram_chars`` letters / digits, at least one of them outside a function word
  (lexicons/stopwords.yaml), and not touching an n-gram copied from the prompt's own query,
  bidword or selling points (:mod:`reward_fns.prompt_copies`). Copies are detected on the TEXT,
  never by tokenising the fields: byte-level BPE gives " free shipping" in context other ids
  than "free shipping" alone.

Everything works on the whole batch at once: the texts are concatenated and read as code points
(:class:`reward_fns.text.CharArrays`' flat views, from its normalize_batch: a long response does not
widen every row), with per-code-point tables instead of per-character Python; per-window
quantities come from prefix sums read at each token's trimmed start / end; function words are
found by array code and looked up packed into integers (:func:`_ascii_words`). No Python code
runs per character or per token. tests/reward_fns/test_reward_perf_equivalence.py checks every function
against the per-response loops it replaced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from relate_common.ad_format import ParsedAd
from relate_common.records import AdRecord

from reward_fns.config import DiversityConfig
from reward_fns import prompt_copies
from reward_fns.text import (
    CP_LIMIT,
    CharArrays,
    code_points,
    flat_cumsum,
    label_spans,
    label_spans_batch,
    mark_spans,
    normalize_chars,
)

LEXICON_DIR = Path(__file__).parent / "lexicons"


@dataclass
class Eligibility:
    """Step 2's masks. valid: (B, L) bool tokens that may be part of an n-gram; oks: {n: (B, W_n)
    bool} windows of valid tokens; eligible: {n: (B, W_n) bool} windows the text lets count."""

    valid: np.ndarray
    oks: dict[int, np.ndarray]
    eligible: dict[int, np.ndarray]


def eligibility_masks(
    chars: CharArrays,
    responses: Sequence[str],
    offsets: np.ndarray,
    mask: np.ndarray,
    parsed: Sequence[ParsedAd] | None,
    prompts: Sequence[AdRecord | Mapping[str, object]] | None,
    cfg: DiversityConfig,
) -> Eligibility:
    """:func:`content_token_mask`, :func:`window_validity` and :func:`text_eligibility` of a batch.

    chars: ``CharArrays.build(responses, offsets)``; offsets: (B, L, 2); mask: (B, L) tokens
    inside each response; parsed: ``parse_ad`` of each response or None (labels found
    batch-wise); prompts: (B,) records or mappings whose fields may be copied (None: no copy
    filter), normalised together by :func:`reward_fns.prompt_copies.prompt_texts`.
    """
    valid = content_token_mask(responses, parsed, offsets, mask, chars)
    oks = window_validity(valid, cfg.n_min, cfg.n_max)
    ptexts = prompt_copies.prompt_texts(prompts) if prompts is not None else None
    return Eligibility(valid, oks, text_eligibility(responses, offsets, oks, ptexts, cfg, chars))


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


def _content_flat(chars: CharArrays, stopwords: str | None) -> np.ndarray:
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
        stop |= mark_spans(len(stop), a.take(hit), e.take(hit))
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
        marked = mark_spans(len(joined), np.concatenate(spans_a), np.concatenate(spans_e))
        stop |= marked[np.arange(len(stop)) + chars.rows]  # drop the B - 1 separators
    return alnum & ~stop


def _content_chars(chars: CharArrays, stopwords: str | None) -> np.ndarray:
    """(B, width) bool: :func:`_content_flat` laid out per response."""
    return chars.to_rows(_content_flat(chars, stopwords))


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
    noncontent = mark_spans(N, base + a_lab, base + e_lab)
    codes = chars.codes
    noncontent |= (codes == 10) | (codes == 13)  # line breaks (\r, \n) of the original text
    cum = flat_cumsum(noncontent)
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


def window_validity(valid: np.ndarray, n_min: int, n_max: int) -> dict[int, np.ndarray]:
    """{n: ok (B, W_n) bool}: every token of the window valid; the ``oks`` of
    :func:`reward_fns.ngram_stats.ngram_keys` without hashing anything. valid: (B, L) bool; n > L gives (B, 0) arrays."""
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
    window validity from :func:`window_validity`; prompt_texts: per response, the prompt's fields
    joined (:func:`reward_fns.prompt_copies.prompt_text`), or None to skip the copy filter.

    The copy test is on normalised text: a window is a copy when its characters, trimmed of
    outer spaces, occur in the prompt text. Copies that would count as n-grams (enough letters,
    a content word) mark their characters as copied, and every window touching a copied
    character is dropped, so neither a copy nor a window reaching into it enters G_high, and
    the copied tokens are never penalised. For a fixed start a longer window contains the
    shorter one, so the scan stops at the first length that is not a copy
    (:func:`reward_fns.prompt_copies.copied_chars`).

    Counts per window come from prefix sums over the characters read at each token's trimmed
    start and end: window [t, t + n) spans [s, e) = [s_tok[t], max(e_tok[t + n - 1], s_tok[t])),
    and prefix sums never decrease, so cum[max(e, s)] = max(cum[e], cum[s]).
    """
    B = len(responses)
    chars = _as_flat(chars, responses, offsets)
    fs, fe = chars.flat_tokens()
    ns = sorted(oks)
    alnum_cum = flat_cumsum(chars.flat_alnum)
    content_cum = flat_cumsum(_content_flat(chars, cfg.stopwords))
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
        copied_cum = flat_cumsum(prompt_copies.copied_chars(chars, oks, out, prompt_texts, ns, fs, fe))
        # Exclude every window that touches a copied n-gram, not only the copies themselves:
        # "，全国包邮" or "shipping today" around a copied "全国包邮" / "free shipping" would
        # otherwise carry the prompt's words into G_high through their neighbours.
        p_s, p_e = copied_cum.take(fs), copied_cum.take(fe)
        for n in ns:
            W = oks[n].shape[1]
            if W:
                out[n] &= p_e[:, n - 1 : n - 1 + W] <= p_s[:, :W]
    return out
