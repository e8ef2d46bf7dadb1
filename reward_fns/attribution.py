"""Token attribution: character spans <-> token indices, and eq. 5's token penalty.

Everything that penalises text (blacklist hits, G_high occurrences) is located in CHARACTERS of
the decoded response; the policy acts in TOKENS. The bridge is the per-token character offsets
(L, 2) = [start, end) of each token, as a fast tokenizer's ``return_offsets_mapping`` gives them,
or as :func:`decode_with_offsets` computes them for GENERATED ids (which need not be the
canonical tokenisation of their text). With byte-level BPE one Chinese character is often two
or three tokens that all carry that character's span; all of them are attributed.

Eq. 5: ``r_token[i, t] = -lambda1 * [t in a blacklisted span] - lambda2 * [t in a G_high
occurrence]`` (both can apply).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain
from typing import Any

import numpy as np

from reward_fns.types import Span


# ---- batching -----------------------------------------------------------------------------------


def pad_batch(
    token_ids: Sequence[Sequence[int]] | np.ndarray,
    offsets: Sequence[Sequence[Sequence[int]]] | np.ndarray,
    response_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ragged or padded inputs -> (ids (B, L) int64, offsets (B, L, 2) int64, mask (B, L) bool).

    A padded (B, L) input keeps its width; its mask is ``response_mask`` when given, else all
    True. Ragged lists are right-padded with id 0, offsets (0, 0), mask False.
    """
    if isinstance(token_ids, np.ndarray) and token_ids.ndim == 2:
        ids = token_ids.astype(np.int64)
        off = np.asarray(offsets, dtype=np.int64).reshape(ids.shape[0], ids.shape[1], 2)
        mask = np.ones(ids.shape, dtype=bool) if response_mask is None else np.asarray(response_mask, dtype=bool)
        return ids, off, mask
    values = _flat_ints(token_ids)
    if values is None:
        rows: Sequence[Sequence[int]] = [list(map(int, r)) for r in token_ids]
        values = np.fromiter(chain.from_iterable(rows), dtype=np.int64)
    else:
        rows = token_ids
    B = len(rows)
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=B)
    L = max(int(lens.max(initial=0)), 1)
    parts = []
    if len(offsets) == B and all(
        type(o) is np.ndarray and o.dtype == np.int64 and o.ndim == 2 and o.shape[1] == 2 for o in offsets
    ):
        # (L_i, 2) int64 arrays, as decode_batch_with_offsets gives them: checked and joined at once
        olens = np.fromiter(map(len, offsets), dtype=np.int64, count=B)
        wrong = np.flatnonzero(olens != lens)
        if wrong.size:
            b = int(wrong[0])
            raise ValueError(f"response {b}: {len(rows[b])} token ids but {len(offsets[b])} offsets")
        parts = [np.concatenate(offsets)] if B else []
    else:
        for b, (r, o) in enumerate(zip(rows, offsets)):
            if len(o) != len(r):
                raise ValueError(f"response {b}: {len(r)} token ids but {len(o)} offsets")
            if len(r):
                parts.append(np.asarray(o, dtype=np.int64).reshape(len(r), 2))
    # One scatter for the whole batch instead of a row-by-row copy.
    flat = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(np.arange(B, dtype=np.int64) * L - np.cumsum(lens) + lens, lens)
    ids = np.zeros(B * L, dtype=np.int64)
    ids[flat] = values
    off = np.zeros((B * L, 2), dtype=np.int64)
    if parts:
        pair = np.dtype((np.void, 16))  # one (start, end) row as one 16-byte item: a 3x faster scatter
        off.view(pair).ravel()[flat] = np.concatenate(parts).view(pair).ravel()
    mask = np.zeros(B * L, dtype=bool)
    mask[flat] = True
    ids, off, mask = ids.reshape(B, L), off.reshape(B, L, 2), mask.reshape(B, L)
    if response_mask is not None:
        mask &= np.asarray(response_mask, dtype=bool)[:, :L]
    return ids, off, mask


def _flat_ints(token_ids: Sequence[Sequence[int]]) -> np.ndarray | None:
    """All ids of ragged rows (lists / tuples / arrays) as one int64 array, each converted as
    ``int()`` converts it (``np.fromiter`` does exactly that, about twice as fast as building an
    array from a list); None when some row is anything else or some id does not convert (the
    caller's own ``int()`` per element then decides, and raises, as it always did)."""
    if not all(isinstance(r, (list, tuple, np.ndarray)) for r in token_ids):
        return None
    try:
        return np.fromiter(chain.from_iterable(token_ids), dtype=np.int64, count=sum(map(len, token_ids)))
    except (TypeError, ValueError, OverflowError):
        return None


# ---- spans <-> tokens -----------------------------------------------------------------------------


def spans_to_token_mask(spans: Sequence[Span], offsets: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(L,) bool: tokens whose character span overlaps any of ``spans``.

    offsets: (L, 2). Empty-span tokens (special tokens, padding) are never marked. A token with a
    leading space (" best" at (6, 11) for the span (7, 11)) overlaps and is marked; the token
    before a span ending at its start is not.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    s, e = off[:, 0], off[:, 1]
    out = np.zeros(len(off), dtype=bool)
    nonempty = e > s
    for a, b in spans:
        if b > a:
            out |= nonempty & (s < b) & (e > a)
    if mask is not None:
        out &= np.asarray(mask, dtype=bool)
    return out


def batch_spans_to_token_mask(spans: Sequence[Sequence[Span]], offsets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B, L) bool: :func:`spans_to_token_mask` per response. offsets: (B, L, 2); mask: (B, L).

    All spans of the batch at once: each non-empty span against every token of its row, then
    the rows' spans OR-ed together (responses without spans are not touched)."""
    out = np.zeros(mask.shape, dtype=bool)
    found = [(b, a, e) for b, sp in enumerate(spans) for a, e in sp if e > a]
    if not found:
        return out
    sp = np.asarray(found, dtype=np.int64)  # (S, 3), by row
    off = np.asarray(offsets, dtype=np.int64).reshape(mask.shape[0], -1, 2)
    rows = sp[:, 0]
    s, e = off[rows, :, 0], off[rows, :, 1]  # (S, L)
    hit = (e > s) & (s < sp[:, 2:3]) & (e > sp[:, 1:2])
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    r = rows.take(first)
    out[r] = np.logical_or.reduceat(hit, first, axis=0) & np.asarray(mask, dtype=bool)[r]
    return out


def token_mask_to_spans(token_mask: np.ndarray, offsets: np.ndarray, text: str) -> list[Span]:
    """Character spans covered by runs of marked tokens (L,), trimmed of outer whitespace."""
    out: list[Span] = []
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    idx = np.flatnonzero(np.asarray(token_mask, dtype=bool) & (off[:, 1] > off[:, 0]))
    if idx.size == 0:
        return out
    # Runs of consecutive marked token indices.
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    for i, j in zip(starts, ends):
        a = int(off[idx[i]:idx[j] + 1, 0].min())
        b = int(off[idx[i]:idx[j] + 1, 1].max())
        while a < b and text[a:a + 1].isspace():
            a += 1
        while b > a and text[b - 1:b].isspace():
            b -= 1
        if b > a:
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(b, out[-1][1]))
            else:
                out.append((a, b))
    return out


def token_penalty(
    blacklist_mask: np.ndarray | None, ngram_mask: np.ndarray | None, lambda1: float, lambda2: float, shape: tuple[int, int]
) -> np.ndarray:
    """Eq. 5: (B, L) float32 ``-lambda1 * blacklist - lambda2 * ngram`` (None = no such term)."""
    out = np.zeros(shape, dtype=np.float32)
    if blacklist_mask is not None:
        out -= np.float32(lambda1) * np.asarray(blacklist_mask, dtype=np.float32)
    if ngram_mask is not None:
        out -= np.float32(lambda2) * np.asarray(ngram_mask, dtype=np.float32)
    return out


# ---- offsets for generated ids -------------------------------------------------------------------


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the byte-level BPE alphabet -> byte values."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _utf8_chars(data: bytes) -> tuple[str, np.ndarray]:
    """Decode UTF-8 exactly like ``data.decode('utf-8', 'replace')``; return (text, char index per byte).

    Valid input (the common case) maps bytes to characters by counting lead bytes. Invalid input
    (a generation cut inside a multi-byte character) is fed to an incremental decoder byte by
    byte, so each byte maps to the character (or U+FFFD) it ends up in.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return text, np.cumsum((arr & 0xC0) != 0x80) - 1
    # CPython's 'replace' emits one U+FFFD per "maximal subpart" of an ill-formed sequence
    # (Unicode sec. 3.9): a lead byte plus the continuation bytes that could still complete it.
    chars: list[str] = []
    index = np.zeros(len(data), dtype=np.int64)
    i, n = 0, len(data)
    while i < n:
        size, ok = _utf8_sequence(data, i)
        chars.append(data[i : i + size].decode("utf-8") if ok else "\ufffd")
        index[i : i + size] = len(chars) - 1
        i += size
    return "".join(chars), index


def _utf8_sequence(data: bytes, i: int) -> tuple[int, bool]:
    """(bytes consumed, well-formed) for the UTF-8 sequence starting at ``data[i]``."""
    b0 = data[i]
    if b0 < 0x80:
        return 1, True
    if 0xC2 <= b0 <= 0xDF:
        need, lo, hi = 1, 0x80, 0xBF
    elif b0 == 0xE0:
        need, lo, hi = 2, 0xA0, 0xBF
    elif 0xE1 <= b0 <= 0xEC or 0xEE <= b0 <= 0xEF:
        need, lo, hi = 2, 0x80, 0xBF
    elif b0 == 0xED:
        need, lo, hi = 2, 0x80, 0x9F
    elif b0 == 0xF0:
        need, lo, hi = 3, 0x90, 0xBF
    elif 0xF1 <= b0 <= 0xF3:
        need, lo, hi = 3, 0x80, 0xBF
    elif b0 == 0xF4:
        need, lo, hi = 3, 0x80, 0x8F
    else:
        return 1, False
    j, k = i + 1, 0
    while k < need and j < len(data):
        b = data[j]
        if not ((lo <= b <= hi) if k == 0 else (0x80 <= b <= 0xBF)):
            break
        j += 1
        k += 1
    return j - i, k == need


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    dec = getattr(backend, "decoder", None)
    # The decoder may be ByteLevel itself or a Sequence containing it (GGUF conversions).
    return dec is not None and "ByteLevel" in repr(dec)


@dataclass
class _DecodeState:
    """What decoding needs from a tokenizer, kept between calls while its special tokens stay.

    key: the special ids and added tokens it was built from; special: ids decoded to nothing;
    pieces: for byte-level tokenizers, the bytes of every token id seen so far (filled lazily
    with one ``convert_ids_to_tokens`` call per batch of unseen ids).
    """

    key: tuple
    byte_level: bool
    special: set[int]
    added: dict[int, str]
    pieces: dict[int, bytes] = field(default_factory=dict)

    _tab_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _tab_len: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _buf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def byte_table(self, tokenizer: Any, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start (V,), length (V,), bytes) with every id of ``ids`` (int64 >= 0) filled in:
        token i's bytes are ``bytes[start[i] : start[i] + length[i]]`` (:meth:`token_bytes`)."""
        with self._lock:
            top = int(ids.max(initial=-1)) + 1
            if top > len(self._tab_len):
                grow = max(top, 2 * len(self._tab_len))
                self._tab_start = np.concatenate([self._tab_start, np.zeros(grow - len(self._tab_start), dtype=np.int64)])
                self._tab_len = np.concatenate([self._tab_len, np.full(grow - len(self._tab_len), -1, dtype=np.int64)])
            unknown = np.unique(ids[self._tab_len[ids] < 0])
            if unknown.size:
                new = self.token_bytes(tokenizer, unknown.tolist())
                lens = np.fromiter(map(len, new), dtype=np.int64, count=len(new))
                self._tab_start[unknown] = len(self._buf) + np.cumsum(lens) - lens
                self._tab_len[unknown] = lens
                self._buf = np.concatenate([self._buf, np.frombuffer(b"".join(new), dtype=np.uint8)])
            return self._tab_start, self._tab_len, self._buf

    def token_bytes(self, tokenizer: Any, ids: list[int]) -> list[bytes]:
        pieces = self.pieces
        try:
            return [pieces[i] for i in ids]
        except KeyError:
            pass
        missing = list(dict.fromkeys(i for i in ids if i not in pieces))
        decoder = _byte_decoder()
        for tok_id, tok in zip(missing, tokenizer.convert_ids_to_tokens(missing)):
            if tok_id in self.special:
                pieces[tok_id] = b""
            elif tok_id in self.added:
                pieces[tok_id] = self.added[tok_id].encode("utf-8")
            elif tok is None:
                pieces[tok_id] = b""
            else:
                pieces[tok_id] = bytes(decoder[c] for c in tok if c in decoder)
        return [pieces[i] for i in ids]


_DECODE_STATES: "weakref.WeakKeyDictionary[Any, _DecodeState]" = weakref.WeakKeyDictionary()


def _decode_state(tokenizer: Any) -> _DecodeState:
    """The tokenizer's :class:`_DecodeState`, rebuilt when its special or added tokens change."""
    special_ids = getattr(tokenizer, "all_special_ids", []) or []
    added_dec = getattr(tokenizer, "added_tokens_decoder", None) or {}
    key = (tuple(special_ids), tuple((i, getattr(t, "special", False)) for i, t in added_dec.items()))
    try:
        state = _DECODE_STATES.get(tokenizer)
    except TypeError:  # not weak-referenceable / hashable: no cache
        state = None
    if state is not None and state.key == key:
        return state
    special = set(special_ids)
    # Added tokens flagged special (ChatML's <|im_end|>) are skipped by decode() too.
    special |= {i for i, tok in added_dec.items() if getattr(tok, "special", False)}
    byte_level = _is_byte_level(tokenizer)
    added = {v: k for k, v in (tokenizer.get_added_vocab() or {}).items()} if byte_level else {}
    state = _DecodeState(key, byte_level, special, added)
    try:
        _DECODE_STATES[tokenizer] = state
    except TypeError:
        pass
    return state


def _int_list(ids: Any) -> list[int]:
    """``[int(i) for i in ids]``, without a Python call per element for arrays and tensors."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
        return ids.astype(np.int64, copy=False).ravel().tolist()
    return list(map(int, ids))


def _piece_offsets(lens: np.ndarray, index: np.ndarray, n_chars: int) -> np.ndarray:
    """(T, 2) character span of each token from its byte length (T,) and each byte's character.

    A token with bytes gets [character of its first byte, character of its last byte + 1) (at
    least one character: its bytes may have joined a previous replacement character); a token
    without bytes gets an empty span at the next character (the text's end after the last).
    """
    pos = np.cumsum(lens) - lens
    ext = np.empty(len(index) + 1, dtype=np.int64)
    ext[:-1] = index
    ext[-1] = n_chars
    start = ext[pos]
    has = lens > 0
    last = ext[np.where(has, pos + lens - 1, pos)]
    end = np.where(has, last + 1, start)
    end = np.where(has & (end <= start), start + 1, end)
    return np.stack([start, end], axis=1)


def decode_with_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """Text of generated ``ids`` and each token's character span in it: (text, (L, 2) int64).

    Special tokens (EOS, padding) decode to nothing and get an empty span at their position, as
    with ``skip_special_tokens=True``. Byte-level BPE tokenizers (GPT-2 family, Qwen, SmolLM) are
    decoded byte by byte, so a Chinese character split over several tokens gives each of them
    that character's span. Other tokenizers: the text is re-encoded with offsets when that
    reproduces ``ids``, else offsets come from incremental decoding (O(L^2) decode calls).
    For a whole batch, :func:`decode_batch_with_offsets` gives the same, faster.
    """
    ids = _int_list(ids)
    state = _decode_state(tokenizer)
    if state.byte_level:
        pieces = state.token_bytes(tokenizer, ids)
        text, index = _utf8_chars(b"".join(pieces))
        lens = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        return text, _piece_offsets(lens, index, len(text))
    return _decode_generic(tokenizer, ids, state.special)


def decode_batch_with_offsets(tokenizer: Any, rows: Sequence[Sequence[int]]) -> list[tuple[str, np.ndarray]]:
    """``[decode_with_offsets(tokenizer, r) for r in rows]``, computed for the whole batch at once.

    rows: B sequences of token ids (lists, arrays or tensors; ragged). Byte-level tokenizers:
    the batch's bytes are gathered from a per-tokenizer byte table in one go, and the offsets
    of all tokens come from one vectorised computation; other tokenizers: per row.
    """
    state = _decode_state(tokenizer)
    flat = _flat_ints(rows)
    if flat is None or not state.byte_level or (flat.size and int(flat.min()) < 0):
        return [decode_with_offsets(tokenizer, r) for r in rows]  # the exact per-row path (and its errors)
    B = len(rows)
    n_tok = np.fromiter(map(len, rows), dtype=np.int64, count=B)
    tb = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(n_tok, out=tb[1:])
    tab_start, tab_len, buf = state.byte_table(tokenizer, flat)
    lens = tab_len[flat]  # bytes of each token
    cl = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(lens, out=cl[1:])
    total = int(cl[-1])
    byte_at = np.repeat(tab_start[flat] - cl[:-1], lens) + np.arange(total, dtype=np.int64)
    arr = buf[byte_at]  # the batch's bytes, row after row
    raw = arr.tobytes()
    bstart = cl[tb[:-1]]
    blens = cl[tb[1:]] - bstart
    # Character of every byte, counted from its row's start (valid UTF-8: lead bytes so far - 1).
    lead = np.cumsum((arr & 0xC0) != 0x80)
    before = np.zeros(B, dtype=np.int64)
    nz = bstart > 0
    before[nz] = lead[bstart[nz] - 1]
    index = lead - np.repeat(before, blens) - 1
    texts: list[str] = []
    bs, bl = bstart.tolist(), blens.tolist()
    for b in range(B):
        data = raw[bs[b] : bs[b] + bl[b]]
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError:  # a cut multi-byte character: the exact slow path for this row
            text, idx = _utf8_chars(data)
            texts.append(text)
            index[bs[b] : bs[b] + bl[b]] = idx
    n_chars = np.fromiter(map(len, texts), dtype=np.int64, count=B)
    # _piece_offsets over the whole batch: byte positions are global, "end of text" per row.
    pos = cl[:-1]  # global byte position of each token
    at_end = pos >= np.repeat(bstart + blens, n_tok)
    if len(index):
        start = np.where(at_end, np.repeat(n_chars, n_tok), index[np.minimum(pos, len(index) - 1)])
    else:
        start = np.repeat(n_chars, n_tok)
    has = lens > 0
    last = index[np.where(has, pos + lens - 1, 0)] if len(index) else np.zeros(len(lens), dtype=np.int64)
    end = np.where(has, last + 1, start)
    end = np.where(has & (end <= start), start + 1, end)
    offsets = np.stack([start, end], axis=1).astype(np.int64, copy=False)
    t = tb.tolist()
    return [(texts[b], offsets[t[b] : t[b + 1]]) for b in range(B)]


def _decode_generic(tokenizer: Any, ids: list[int], special: set[int]) -> tuple[str, np.ndarray]:
    """decode_with_offsets for tokenizers that are not byte-level."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    kept = [i for i in ids if i not in special]
    if list(enc["input_ids"]) == kept:
        offsets = np.zeros((len(ids), 2), dtype=np.int64)
        it = iter(enc["offset_mapping"])
        last = 0
        for t, i in enumerate(ids):
            if i in special:
                offsets[t] = (last, last)
            else:
                a, b = next(it)
                offsets[t] = (a, b)
                last = b
        return text, offsets
    offsets = np.zeros((len(ids), 2), dtype=np.int64)
    prev = ""
    for t in range(len(ids)):
        cur = tokenizer.decode(ids[: t + 1], skip_special_tokens=True)
        common = 0
        while common < min(len(prev), len(cur)) and prev[common] == cur[common]:
            common += 1
        offsets[t] = (min(common, len(prev)), len(cur)) if len(cur) > common else (len(cur), len(cur))
        prev = cur
    return prev if ids else "", offsets
