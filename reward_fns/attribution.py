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

from collections.abc import Sequence
from functools import lru_cache
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
    """(B, L) bool: :func:`spans_to_token_mask` per response. offsets: (B, L, 2); mask: (B, L)."""
    out = np.zeros(mask.shape, dtype=bool)
    for b, sp in enumerate(spans):
        if sp:
            out[b] = spans_to_token_mask(sp, offsets[b], mask[b])
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


def decode_with_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """Text of generated ``ids`` and each token's character span in it: (text, (L, 2) int64).

    Special tokens (EOS, padding) decode to nothing and get an empty span at their position, as
    with ``skip_special_tokens=True``. Byte-level BPE tokenizers (GPT-2 family, Qwen, SmolLM) are
    decoded byte by byte, so a Chinese character split over several tokens gives each of them
    that character's span. Other tokenizers: the text is re-encoded with offsets when that
    reproduces ``ids``, else offsets come from incremental decoding (O(L^2) decode calls).
    """
    ids = [int(i) for i in ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # Added tokens flagged special (ChatML's <|im_end|>) are skipped by decode() too.
    special |= {i for i, tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items() if getattr(tok, "special", False)}
    if _is_byte_level(tokenizer):
        decoder = _byte_decoder()
        added = {v: k for k, v in (tokenizer.get_added_vocab() or {}).items()}
        pieces: list[bytes] = []
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
                if offsets[t, 1] <= offsets[t, 0]:  # its bytes joined a previous replacement char
                    offsets[t] = (index[pos], index[pos] + 1)
            else:
                c = index[pos] if pos < len(index) else len(text)
                offsets[t] = (c, c)
            pos += len(piece)
        return text, offsets
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
