"""The ground-truth user model's own text processing: normalisation, content tokens, lengths,
phrasing keys and lexicon patterns (pure functions, cached).

Split from ``data_prep.user_model`` along its one seam: these functions read text, the model turns
what they read into probabilities. Like the model, they share no code with the rewards or the
learned scorer that the model judges (only ``relate_common.lang``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

from relate_common.lang import is_cjk

# "第一" followed by these is an ordinal ("第一次" = the first time), not a ranking claim.
ORDINAL_FOLLOWERS_ZH = "次步天期节课阶个年周位"

ENGLISH_STOPWORDS = frozenset(
    "a an the and or of to in for on with at by from as into about your you our we us i me my "
    "is are was be been it its this that these those how what which who where when why do does "
    "can could should would will near vs".split()
)
# Chinese function characters split a run of ideographs (they glue words, they are not content).
ZH_BOUNDARY_CHARS = "的了吗呢吧啊和与及或"
# Question-word bigrams carry no topic: "减肥怎么办" is about 减肥.
ZH_STOP_BIGRAMS = frozenset(
    {"怎么", "么办", "什么", "如何", "哪个", "哪家", "哪里", "多少", "可以", "有没", "没有", "一个", "是否", "为什", "怎样", "么样"}
)

_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # the ranges of relate_common.lang.is_cjk
_CJK_RUN = re.compile(f"[{_CJK_CLASS}]+")
_LATIN_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?", re.ASCII | re.IGNORECASE)
_PHRASING_UNIT = re.compile(f"[{_CJK_CLASS}]|[a-z0-9]+", re.ASCII | re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*", re.ASCII)
_ZH_BOUNDARY = re.compile(f"[{ZH_BOUNDARY_CHARS}]")


# Variants of one record share query, bidword and selling points: cache the pure text functions.
_TEXT_CACHE_SIZE = 8192


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def normalize_text(text: str) -> str:
    """NFKC + lowercase: full-width digits, letters and '%' become ASCII, case stops mattering."""
    return unicodedata.normalize("NFKC", text).lower()


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def content_tokens(text: str) -> frozenset[str]:
    """Content tokens of normalised text: Chinese character bigrams and English words.

    Runs of ideographs are split at function characters (的, 了, ...) and cut into bigrams (a lone
    ideograph is its own token); question-word bigrams are dropped. Latin words are lowercase
    alphanumeric runs minus English stopwords. Mixed-script text yields both kinds.
    """
    tokens: set[str] = set()
    for run in _CJK_RUN.findall(text):
        for piece in _ZH_BOUNDARY.split(run):
            if len(piece) == 1:
                tokens.add(piece)
            tokens.update(piece[i : i + 2] for i in range(len(piece) - 1))
    tokens -= ZH_STOP_BIGRAMS
    tokens.update(w for w in _LATIN_WORD.findall(text) if w not in ENGLISH_STOPWORDS)
    return frozenset(tokens)


def recall(needles: frozenset[str], haystack: frozenset[str]) -> float:
    """Share of ``needles`` found in ``haystack``; 0 when there is nothing to find."""
    if not needles:
        return 0.0
    return len(needles & haystack) / len(needles)


@lru_cache(maxsize=_TEXT_CACHE_SIZE)
def numbers_in(text: str) -> frozenset[str]:
    """The numbers written in normalised text ("1,999" -> "1999", "2.5" stays "2.5")."""
    return frozenset(m.replace(",", "") for m in _NUMBER.findall(text))


def display_length(text: str) -> int:
    """Length as a reader sees it: one unit per CJK character and per Latin/number word."""
    cjk = sum(1 for ch in text if is_cjk(ch))
    return cjk + len(_LATIN_WORD.findall(text))


def band_fit(length: float, low: float, high: float, zero_multiple: float) -> float:
    """1 inside [low, high]; linear down to 0 at length 0 and at ``zero_multiple * high``."""
    if length < low:
        return max(0.0, length / low) if low > 0 else 1.0
    if length <= high:
        return 1.0
    zero_at = zero_multiple * high
    return max(0.0, (zero_at - length) / (zero_at - high))


def phrasing_units(text: str) -> list[str]:
    """The units phrasing is made of: single ideographs and lowercase Latin/number words."""
    return [u.lower() for u in _PHRASING_UNIT.findall(text)]


def _hash64(parts: Sequence[str]) -> int:
    """Stable 64-bit hash (Python's hash() is salted per process; this one is not)."""
    data = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def phrasing_keys(title: str, description: str, n: int = 3) -> np.ndarray:
    """Sorted unique uint64 hashes of the word/character n-grams of the ad (title, description).

    A field shorter than ``n`` units contributes one key for its whole unit sequence; an empty ad
    has no keys (and therefore never fatigues).
    """
    keys: set[int] = set()
    for text in (normalize_text(title), normalize_text(description)):
        units = phrasing_units(text)
        if not units:
            continue
        if len(units) < n:
            keys.add(_hash64(units))
            continue
        keys.update(_hash64(units[i : i + n]) for i in range(len(units) - n + 1))
    return np.array(sorted(keys), dtype=np.uint64)


def term_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    """One regex for a lexicon: Latin terms need word boundaries, "第一" must not be an ordinal."""
    alternatives = []
    # longest first so "book now" wins over "book"; ties by text, as set order is salted per process
    for term in sorted({normalize_text(t) for t in terms}, key=lambda t: (-len(t), t)):
        body = re.escape(term)
        if term == "第一":
            body += f"(?![{ORDINAL_FOLLOWERS_ZH}])"
        if term[:1].isascii() and term[:1].isalnum():
            body = r"(?<![a-z0-9])" + body
        if term[-1:].isascii() and term[-1:].isalnum():
            body += r"(?![a-z0-9])"
        alternatives.append(body)
    return re.compile("|".join(alternatives) if alternatives else r"(?!x)x")
