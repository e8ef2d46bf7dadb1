"""Text helpers shared by the components: length-preserving normalisation and span utilities.

The risk lexicon, the claim checker and the diversity copy filter all match on normalised text
(full-width -> half-width, case folded) but must report spans in the ORIGINAL response. A
normalisation that keeps one output character per input character makes both the same thing:
an index into the normalised string is an index into the original.

:class:`CharArrays` is step 1 of the batch credit (:mod:`reward_fns.credit`): the batch's
responses normalised once, with their character flags and each token's trimmed span, which the
eligibility masks, the prompt-copy scan and the blacklist scan all read.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from relate_common.ad_format import FIELD_LABELS, ParsedAd, parse_ad

from reward_fns.types import Span


_ASCII_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@lru_cache(maxsize=65536)
def _norm_char(ch: str) -> str:
    """One character -> one character: NFKC (full/half width, compatibility forms), lower case.

    A character whose NFKC or lower-case form has several characters ('ﬁ' -> 'fi', 'İ' -> 'i̇')
    keeps its single-character step or itself, so the length never changes. Control and format
    characters become a space so that they separate words instead of gluing them together.
    """
    if unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\t":
        return " "
    n = unicodedata.normalize("NFKC", ch)
    if len(n) != 1:
        n = ch
    low = n.lower()
    return low if len(low) == 1 else n


class _NormMap(dict):
    """{code point: normalised character}, filled on first use: ``str.translate``'s table.

    ``str.translate`` looks every character up in C and only calls back into Python (here,
    :meth:`__missing__`) for a character it has not seen yet.
    """

    def __missing__(self, cp: int) -> str:
        out = _norm_char(chr(cp))
        self[cp] = out
        return out


_NORM_MAP = _NormMap()


@lru_cache(maxsize=8192)
def normalize_chars(text: str) -> str:
    """Normalise ``text`` character by character; ``len(result) == len(text)`` always.

    Cached: one response is normalised by the risk, claim and diversity code alike.
    """
    if text.isascii():  # fast path, same result as the per-character one
        return _ASCII_CTRL_RE.sub(" ", text.lower())
    return text.translate(_NORM_MAP)  # == "".join(_norm_char(c) for c in text)


# ---- whole batches at once ------------------------------------------------------------------------

CP_LIMIT = 0x110000  # code points: 0 .. 0x10FFFF


class CharTable:
    """Per-code-point facts as flat numpy tables, filled lazily (a code point's facts never change).

    ``norm[c]``: code point of ``_norm_char(chr(c))``; ``nonspace[c]`` / ``alnum[c]``: what
    ``re``'s ``\\S`` / ``[^\\W_]`` say about ``chr(c)`` (the same predicates as ``str.isspace`` /
    ``str.isalnum``). Looking a whole batch's code points up in a table replaces a Python call
    per character. About 8 MB, allocated on first use.
    """

    def __init__(self) -> None:
        self.known = np.zeros(CP_LIMIT, dtype=bool)
        self.norm = np.arange(CP_LIMIT, dtype=np.uint32)
        self.nonspace = np.zeros(CP_LIMIT, dtype=bool)
        self.alnum = np.zeros(CP_LIMIT, dtype=bool)
        self._lock = threading.Lock()

    def ensure(self, cps: np.ndarray) -> None:
        """Fill the tables for every code point in ``cps`` and for their normalised forms."""
        miss = cps[~self.known[cps]]
        if miss.size == 0:
            return
        with self._lock:
            new = np.unique(miss)
            new = new[~self.known[new]]
            if new.size == 0:
                return
            chars = "".join(map(chr, new.tolist()))
            norm = np.fromiter((ord(_norm_char(c)) for c in chars), dtype=np.uint32, count=new.size)
            # re's \\s is Py_UNICODE_ISSPACE and [^\\W_] is Py_UNICODE_ISALNUM, as str.isspace /
            # str.isalnum of one character (tests check every code point).
            self.nonspace[new] = np.fromiter((not c.isspace() for c in chars), dtype=bool, count=new.size)
            self.alnum[new] = np.fromiter((c.isalnum() for c in chars), dtype=bool, count=new.size)
            self.norm[new] = norm
            self.known[new] = True
        self.ensure(norm)  # flags of the normalised characters are read as well


_CHAR_TABLE: CharTable | None = None
_CHAR_TABLE_LOCK = threading.Lock()


def char_table() -> CharTable:
    """The process-wide :class:`CharTable`."""
    global _CHAR_TABLE
    if _CHAR_TABLE is None:
        with _CHAR_TABLE_LOCK:
            if _CHAR_TABLE is None:
                _CHAR_TABLE = CharTable()
    return _CHAR_TABLE


class KeyTable:
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


def code_points(text: str) -> np.ndarray:
    """(len(text),) uint32 code points (lone surrogates included)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.uint32)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)


def mark_spans(size: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(size,) bool: union of the half-open spans [starts[i], ends[i]) (ends <= size)."""
    if len(starts) == 0:
        return np.zeros(size, dtype=bool)
    diff = np.bincount(starts, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    return np.cumsum(diff[:size]) > 0


@dataclass
class NormalizedBatch:
    """:func:`normalize_chars` of a batch of texts, with the code points of both sides.

    texts: normalised texts; bounds: (B + 1,) int64, text b is ``[bounds[b], bounds[b + 1])`` of
    the flat arrays; codes / norm_codes: (N,) uint32 code points of the original / normalised
    texts, concatenated.
    """

    texts: list[str]
    bounds: np.ndarray
    codes: np.ndarray
    norm_codes: np.ndarray


def normalize_batch(texts: Sequence[str]) -> NormalizedBatch:
    """:func:`normalize_chars` of every text at once (one table look-up over the batch)."""
    texts = list(texts)
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    bounds = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens, out=bounds[1:])
    joined = "".join(texts)
    if joined.isascii():
        norm = _ASCII_CTRL_RE.sub(" ", joined.lower())
        codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).astype(np.uint32)
        ncodes = np.frombuffer(norm.encode("ascii"), dtype=np.uint8).astype(np.uint32)
    else:
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)
        table = char_table()
        table.ensure(codes)
        ncodes = table.norm[codes]
        norm = ncodes.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
    b = bounds.tolist()
    return NormalizedBatch([norm[b[i] : b[i + 1]] for i in range(len(texts))], bounds, codes, ncodes)


# ---- a batch of responses with their tokens, normalised once ------------------------------------


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


def flat_cumsum(x: np.ndarray) -> np.ndarray:
    """(N,) -> (N + 1,) int32 prefix sums starting at 0."""
    out = np.zeros(len(x) + 1, dtype=np.int32)
    np.cumsum(x, dtype=np.int32, out=out[1:])
    return out




def content_spans(parsed: ParsedAd) -> list[Span]:
    """The title and description spans that exist (non-empty), in response order."""
    spans = []
    if "missing_title" not in parsed.problems and parsed.title_span[1] > parsed.title_span[0]:
        spans.append(parsed.title_span)
    if "missing_description" not in parsed.problems and parsed.description_span[1] > parsed.description_span[0]:
        spans.append(parsed.description_span)
    return sorted(spans)


def label_spans(response: str, parsed: ParsedAd) -> list[Span]:
    """Character spans of the field labels ("Title: ", "标题：") of the lines parse_ad matched.

    parse_ad reports where the field TEXT starts; the label is the rest of that line before it.
    Labels are fixed by the format, so they are never content (diversity must not call the
    label every response shares a "template").
    """
    out = []
    for name, span in (("title", parsed.title_span), ("description", parsed.description_span)):
        if f"missing_{name}" in parsed.problems:
            continue
        line_start = response.rfind("\n", 0, span[0]) + 1
        if span[0] > line_start:
            out.append((line_start, span[0]))
    return out


# parse_ad's line pattern up to where the field text starts, for a batch joined by "\n":
# [^\S\n] (whitespace but no line break) where parse_ad, matching one line at a time, has \s.
_LABEL_HEAD_RE = re.compile(
    r"^[^\S\n]*(?:(?P<title>"
    + "|".join(re.escape(labels[0]) for labels in FIELD_LABELS.values())
    + ")|(?:"
    + "|".join(re.escape(labels[1]) for labels in FIELD_LABELS.values())
    + r"))[^\S\n]*[:：][^\S\n]*",
    re.IGNORECASE | re.MULTILINE,
)
# Line breaks of str.splitlines other than "\n".
_OTHER_BREAKS_RE = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def label_spans_batch(responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`label_spans` of ``parse_ad`` of every response, as flat arrays (row (K,), start
    (K,), end (K,)) int64, per row the title's label before the description's.

    One regex scan over the batch joined by "\n" instead of ``parse_ad`` per response: a field
    line is a line whose head matches parse_ad's pattern, and parse_ad's spans are those of the
    first title and the first description line, the label running from the line's start to the
    field text. Exact for responses whose only line break is "\n"; a response with another one
    (which ``str.splitlines`` and ``rfind("\n")`` see differently) goes through ``parse_ad``.
    """
    B = len(responses)
    lens = np.fromiter(map(len, responses), dtype=np.int64, count=B)
    starts = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(lens + 1, out=starts[1:])  # response b is joined[starts[b] : starts[b] + lens[b]]
    joined = "\n".join(responses)
    found = [(m.start(), m.end(), m.start("title") >= 0) for m in _LABEL_HEAD_RE.finditer(joined)]
    other = [m.start() for m in _OTHER_BREAKS_RE.finditer(joined)]
    slow = np.unique(np.searchsorted(starts, np.asarray(other, dtype=np.int64), side="right") - 1)
    none = np.zeros(0, dtype=np.int64)
    rows, a, e, kind = [none], [none], [none], [none]  # kind: 0 title, 1 description
    if found:
        f = np.asarray(found, dtype=np.int64)
        b = np.searchsorted(starts, f[:, 0], side="right") - 1
        for k, is_title in ((0, 1), (1, 0)):
            at = np.flatnonzero(f[:, 2] == is_title)
            first_b, first = np.unique(b.take(at), return_index=True)  # matches come in order
            at = at.take(first)
            rows.append(first_b)
            a.append(f[at, 0] - starts.take(first_b))
            e.append(f[at, 1] - starts.take(first_b))
            kind.append(np.full(len(at), k, dtype=np.int64))
    rows, a, e, kind = (np.concatenate(x) for x in (rows, a, e, kind))
    if slow.size:
        fast = np.flatnonzero(~np.isin(rows, slow))
        rows, a, e, kind = rows.take(fast), a.take(fast), e.take(fast), kind.take(fast)
        extra = [(b, x, y, k) for b in slow.tolist()
                 for k, (x, y) in enumerate(label_spans(responses[b], parse_ad(responses[b])))]
        if extra:
            x = np.asarray(extra, dtype=np.int64)
            rows, a, e, kind = (np.concatenate([v, x[:, i]]) for i, v in enumerate((rows, a, e, kind)))
    order = np.lexsort((kind, rows))
    return rows.take(order), a.take(order), e.take(order)


def ad_text(parsed: ParsedAd) -> str:
    """Title and description as one string, the text an encoder or a judge sees."""
    return " ".join(t for t in (parsed.title.strip(), parsed.description.strip()) if t)


def term_regex(term: str) -> str:
    """Regex source matching the literal ``term`` in NORMALISED text.

    Word boundaries are enforced at ends that are ASCII letters or digits ("best" must not match
    "bestow"; Chinese has no word boundaries, so CJK ends match anywhere). Spaces and hyphens
    inside the term match any run of spaces or hyphens ("risk free" matches "risk-free").
    """
    norm = normalize_chars(term.strip())
    parts = [re.escape(p) for p in re.split(r"[\s\-]+", norm) if p]
    body = r"[\s\-]+".join(parts)
    if norm[:1].isascii() and norm[:1].isalnum():
        body = r"(?<![a-z0-9])" + body
    if norm[-1:].isascii() and norm[-1:].isalnum():
        body = body + r"(?![a-z0-9])"
    return body


def literal_alternation(terms: list[str]) -> re.Pattern[str] | None:
    """One regex matching any of ``terms`` (via :func:`term_regex`) in normalised text.

    Longest terms first, so "稳赚不赔" wins over "稳赚". Python's ``re`` tries every alternative at
    every position; a lookahead on the possible first characters lets it skip the positions
    where no term can start (about 3x faster on ad-sized texts).
    """
    parts = literal_alternation_parts(terms)
    if parts is None:
        return None
    prefix, alternatives, suffix = parts
    return re.compile(prefix + "|".join(alternatives) + suffix)


def literal_alternation_parts(terms: list[str]) -> tuple[str, list[str], str] | None:
    """(prefix, alternatives, suffix) of :func:`literal_alternation`'s regex source, which is
    ``prefix + "|".join(alternatives) + suffix``; the alternatives are tried in this order."""
    terms = sorted({t.strip() for t in terms if t and t.strip()}, key=len, reverse=True)
    if not terms:
        return None
    first = sorted({normalize_chars(t)[0] for t in terms})
    return f"(?=[{''.join(re.escape(c) for c in first)}])(?:", [term_regex(t) for t in terms], ")"
