"""Which texts hold which strings, and which strings every match of a regex holds.

The blacklist scan's prefilter (:meth:`reward_fns.risk.Lexicon.find_many`): a regex can only
match a text that holds one string of each of its clauses (:func:`required_clauses`, read from
``re``'s parse tree), and :func:`literal_presence` finds which of a batch's texts hold which of
those strings, all texts and strings at once. Nothing here knows about risk: plain strings and
regexes in, booleans out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reward_fns.text import CP_LIMIT, KeyTable, code_points


def texts_containing(texts: Sequence[str], literals: Sequence[str]) -> dict[str, set[int]]:
    """{literal: indices of the texts that contain it} (see :func:`literal_presence`)."""
    lits = list(dict.fromkeys(literals))
    present = literal_presence(texts, lits)
    return {lit: set(np.flatnonzero(present[i]).tolist()) for i, lit in enumerate(lits)}


def literal_presence(
    texts: Sequence[str], literals: Sequence[str], flat: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """(len(literals), len(texts)) bool: literal i occurs in text b; many texts and literals at once.

    Every text position holding some literal's first character is keyed by its first 1, 2 or 3
    characters (21 bits per code point) and looked up among the literals' keys (a hash table):
    literals of up to three characters are found exactly this way; a longer one is compared
    character by character at the positions where its first three occur. All positions of the
    batch at once (no Python loop per text or per occurrence); an occurrence must lie inside one
    text. flat: (code points (N,) of the texts concatenated, bounds (B + 1,)) when the caller
    has them (``normalize_batch``).
    """
    B = len(texts)
    out = np.zeros((len(literals), B), dtype=bool)
    if B <= 16:  # a few texts: plain substring tests are cheaper than the set-up below
        for b, text in enumerate(texts):
            for i, lit in enumerate(literals):
                if lit in text:
                    out[i, b] = True
        return out
    if not literals:
        return out
    index = _literal_index(tuple(literals))
    if index.empty is not None:
        out[index.empty] = True
    if flat is None:
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=B)
        bounds = np.zeros(B + 1, dtype=np.int64)
        np.cumsum(lens, out=bounds[1:])
        codes = code_points("".join(texts))
    else:
        codes, bounds = flat
    N = len(codes)
    if N == 0:
        return out
    firsts = index.first.take(codes)  # bit q - 1: some literal of group q starts here
    cand = np.flatnonzero(firsts)
    if cand.size == 0:
        return out
    bits = firsts.take(cand)
    # The first three characters at each candidate (clipped at the batch's end: such a key only
    # matches a literal that would run past its text, which the check below rejects).
    c0 = codes.take(cand).astype(np.uint64)
    c1 = codes.take(np.minimum(cand + 1, N - 1)).astype(np.uint64)
    c2 = codes.take(np.minimum(cand + 2, N - 1)).astype(np.uint64)
    for q, table, ptr, members in index.groups:
        at = np.flatnonzero(bits & np.uint8(1 << (q - 1)))
        if at.size == 0:
            continue
        key = c0.take(at)
        for c in (c1, c2)[: q - 1]:
            key <<= np.uint64(21)
            key |= c.take(at)
        idx = table.lookup(key)
        found = np.flatnonzero(idx >= 0)
        if found.size == 0:
            continue
        # (position, literal) for every literal of the key found at each position
        k = idx.take(found)
        cnt = ptr.take(k + 1) - ptr.take(k)
        pos = np.repeat(cand.take(at.take(found)), cnt)
        lit = members.take(np.arange(int(cnt.sum()), dtype=np.int64) + np.repeat(ptr.take(k) - (np.cumsum(cnt) - cnt), cnt))
        b = np.searchsorted(bounds, pos, side="right") - 1
        length = index.length.take(lit)
        ok = pos + length <= bounds.take(b + 1)  # inside its text
        for j in range(q, index.max_len):  # the characters past the key
            sel = np.flatnonzero(ok & (length > j))
            if sel.size == 0:
                break
            ok[sel] = codes.take(pos.take(sel) + j) == index.codes[lit.take(sel), j]
        ok = np.flatnonzero(ok)
        out[lit.take(ok), b.take(ok)] = True
    return out


@dataclass
class _LiteralIndex:
    empty: list[int] | None  # literals "" (in every text)
    first: np.ndarray  # (CP_LIMIT,) uint8: bit q - 1 set for the first characters of group q
    # (q, table of the keys (row k), literals of key k: members[ptr[k] : ptr[k + 1]])
    groups: list[tuple[int, KeyTable, np.ndarray, np.ndarray]]
    length: np.ndarray  # (n,) int64 characters of each literal
    codes: np.ndarray  # (n, max_len) uint32 code points of each literal, zero-padded
    max_len: int


@lru_cache(maxsize=16)
def _literal_index(literals: tuple[str, ...]) -> _LiteralIndex:
    """:func:`literal_presence`'s look-up tables for a set of literals (built once per lexicon)."""
    empty = [i for i, lit in enumerate(literals) if not lit] or None
    by_q: dict[int, list[int]] = {}
    for i, lit in enumerate(literals):
        if lit:
            by_q.setdefault(min(len(lit), 3), []).append(i)
    groups = []
    first = np.zeros(CP_LIMIT, dtype=np.uint8)
    for q, members in by_q.items():
        first[[ord(literals[i][0]) for i in members]] |= np.uint8(1 << (q - 1))
        keyed: dict[int, list[int]] = {}
        for i in members:
            k = 0
            for ch in literals[i][:q]:
                k = (k << 21) | ord(ch)
            keyed.setdefault(k, []).append(i)
        ukeys = sorted(keyed)
        ptr = np.zeros(len(ukeys) + 1, dtype=np.int64)
        np.cumsum([len(keyed[k]) for k in ukeys], out=ptr[1:])
        flat = np.array([i for k in ukeys for i in keyed[k]], dtype=np.int64)
        groups.append((q, KeyTable(np.array(ukeys, dtype=np.uint64)), ptr, flat))
    length = np.array([len(lit) for lit in literals], dtype=np.int64)
    max_len = int(length.max(initial=0))
    codes = np.zeros((len(literals), max_len), dtype=np.uint32)
    for i, lit in enumerate(literals):
        codes[i, : len(lit)] = code_points(lit)
    return _LiteralIndex(empty, first, groups, length, codes, max_len)


def _parse_regex(rx: "re.Pattern[str]"):
    """(parse tree, sre constants, repeat opcodes) of a case-sensitive str pattern, else None."""
    if not isinstance(rx.pattern, str) or rx.flags & re.IGNORECASE:
        return None
    try:
        from re import _constants as C, _parser as P
    except ImportError:  # pragma: no cover - Python < 3.11
        import sre_constants as C  # type: ignore[no-redef]
        import sre_parse as P  # type: ignore[no-redef]
    try:
        tree = P.parse(rx.pattern, rx.flags)
    except Exception:  # pragma: no cover - the pattern compiled, so it parses
        return None
    return tree, C, {C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", C.MAX_REPEAT)}


def required_literals(rx: re.Pattern[str]) -> list[str] | None:
    """Strings one of which occurs in every match of ``rx`` (None: none can be derived): the most
    selective clause of :func:`required_clauses` (longest shortest string, then fewest strings)."""
    clauses = required_clauses(rx, limit=1)
    return clauses[0] if clauses else None


def required_clauses(rx: re.Pattern[str], limit: int = 4) -> list[list[str]] | None:
    """Clauses that every match of ``rx`` satisfies: each clause is a list of strings one of
    which occurs in the match, and every clause holds (None: no clause can be derived).

    Read from ``re``'s parse tree: a run of literal characters must occur; a branch needs one of
    its alternatives' strings (each alternative's most selective clause); a group or a repeat of
    at least one its content's; a character class of literals one of its characters. A sequence
    keeps the requirements of all its items (a match of "no[\\s\\-]+1" holds "no" AND "1"), so a
    text must hold one string of every clause. Anything else (assertions, classes,
    backreferences, case-insensitive parts) requires nothing. At most ``limit`` clauses, the most
    selective first (longest shortest string, then fewest strings).
    """
    parsed = _parse_regex(rx)
    if parsed is None:
        return None
    tree, C, repeats = parsed

    def rank(clause: list[str]) -> tuple[int, int]:
        return min(map(len, clause)), -len(clause)

    def seq(items) -> list[list[str]]:
        clauses: list[list[str]] = []
        run: list[str] = []
        for op, av in items:
            if op is C.LITERAL:
                run.append(chr(av))
                continue
            if run:
                clauses.append(["".join(run)])
                run = []
            clauses.extend(item(op, av))
        if run:
            clauses.append(["".join(run)])
        return [c for c in clauses if c and min(map(len, c)) > 0]

    def item(op, av) -> list[list[str]]:
        if op is C.IN:
            if av and all(o is C.LITERAL for o, _ in av):
                return [list(dict.fromkeys(chr(v) for _, v in av))]
            return []
        if op is C.SUBPATTERN:
            _, add_flags, _, p = av
            return [] if add_flags & re.IGNORECASE else seq(p)
        if op is C.BRANCH:  # one clause: each alternative's most selective one
            out: list[str] = []
            for p in av[1]:
                sub = seq(p)
                if not sub:
                    return []
                out.extend(max(sub, key=rank))
            return [list(dict.fromkeys(out))]
        if op in repeats:
            lo, _, p = av
            return seq(p) if lo >= 1 else []
        if op is getattr(C, "ATOMIC_GROUP", None):
            return seq(av)
        return []

    clauses: list[list[str]] = []
    for c in sorted(seq(tree), key=rank, reverse=True):
        if c not in clauses:
            clauses.append(c)
    return clauses[:limit] or None
