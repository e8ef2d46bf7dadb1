"""The prompt-copy test of the diversity statistics: characters inside an n-gram copied from the prompt.

An ad may repeat its own query, bidword or selling points without that counting as a template:
:func:`reward_fns.text_filters.text_eligibility` drops every window touching such a copy.
Shapes: B responses, L tokens, N characters of the batch's normalised texts concatenated.

:func:`prompt_texts` gives the text a copy is looked for in: per response, its prompt's fields
normalised and joined by NUL (:func:`prompt_text`), all prompts of a batch normalised at once.

:func:`copied_chars` needs one number per window start, the longest prefix of the text from
there that occurs in the prompt (:func:`_match_lengths`: exact, no hashing), and then compares
window lengths with it; the per-window string search (:func:`_copied_chars_loop`) gives the same
result and serves prompts too long to index. Where numpy's boolean indexing would meet
unpredictable masks, index arrays and ``take`` are used instead (several times faster).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from relate_common.records import AdRecord

from reward_fns.text import CharArrays, KeyTable, code_points, mark_spans, normalize_batch, normalize_chars

_COPY_BUDGET = 8_000_000  # (start, prompt position) pairs to extend; beyond it the per-window loop is cheaper


# ---- the prompt's text ---------------------------------------------------------------------------


def prompt_text(query: str, bidword: str, selling_points: Sequence[str]) -> str:
    """The prompt fields an n-gram may be copied from, normalised, joined by NUL.

    NUL never occurs in a normalised response (control characters normalise to spaces), so a
    window can never match across two fields.
    """
    return "\x00".join(normalize_chars(x) for x in (query, bidword, *selling_points))


def prompt_fields(p: AdRecord | Mapping[str, Any]) -> str:
    """:func:`prompt_text` of one prompt (a record, or a mapping with query, bidword, selling_points)."""
    return prompt_text(*_prompt_parts(p))


def _prompt_parts(p: AdRecord | Mapping[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """(query, bidword, selling points) that :func:`prompt_fields` joins."""
    if isinstance(p, AdRecord):
        return p.query, p.bidword, tuple(p.selling_points)
    sp = p.get("selling_points") or []
    if isinstance(sp, str):
        sp = [s for s in sp.split("|") if s.strip()]
    return str(p.get("query", "")), str(p.get("bidword", "")), tuple(sp)


def prompt_texts(prompts: Sequence[AdRecord | Mapping[str, Any]]) -> list[str]:
    """(B,) :func:`prompt_fields` of every prompt, each distinct one joined once (G responses share
    one), the fields of all of them normalised in one ``normalize_batch`` (which equals
    ``normalize_chars`` per text, as :func:`prompt_text` uses it)."""
    seen: dict[tuple[str, str, tuple[str, ...]], int] = {}
    distinct: list[tuple[str, str, tuple[str, ...]]] = []
    which = []
    for p in prompts:
        key = _prompt_parts(p)
        i = seen.get(key)
        if i is None:
            i = seen[key] = len(distinct)
            distinct.append(key)
        which.append(i)
    norm = normalize_batch([f for query, bidword, sps in distinct for f in (query, bidword, *sps)]).texts
    texts, k = [], 0
    for _, _, sps in distinct:
        texts.append("\x00".join(norm[k : k + 2 + len(sps)]))
        k += 2 + len(sps)
    return [texts[i] for i in which]


# ---- the copies ----------------------------------------------------------------------------------


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
    row = KeyTable(single_keys).lookup(key)
    has = row >= 0
    wrong = has & (single_keys.take(np.maximum(row, 0)) != key)
    bad |= wrong
    has &= ~wrong
    out[has] = 1  # the first character occurs in the prompt
    q = np.flatnonzero(has & (starts + 1 < ends))
    key = (p64.take(q) << np.uint64(42)) | (c0.take(q) << u21) | codes.take(starts.take(q) + 1)
    row = KeyTable(pair_keys).lookup(key)
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


def copied_chars(
    chars: CharArrays,
    oks: dict[int, np.ndarray],
    counts: dict[int, np.ndarray],
    prompt_texts: Sequence[str],
    ns: list[int],
    flat_start: np.ndarray | None = None,
    flat_end: np.ndarray | None = None,
) -> np.ndarray:
    """(N,) bool over the flat characters: inside a copied n-gram (see
    :func:`reward_fns.text_filters.text_eligibility`).

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
    return mark_spans(N, starts, stops)


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
    """:func:`copied_chars` by string search per window (for prompts too long to index)."""
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
