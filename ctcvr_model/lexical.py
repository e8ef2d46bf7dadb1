"""Lexical query-ad matching features of one item (term overlap, quoted numbers, lengths).

Classic features of search-ads CTR models, written language-agnostically: terms are CJK character
bigrams and Latin words, so Chinese needs no segmenter. ``ctcvr_model.features`` appends them to the
embedding features when a preset has ``lexical``; they depend on no encoder or model.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Mapping

import numpy as np

from ctcvr_model.schema import normalise_selling_points

LEXICAL_FEATURE_NAMES = (
    "query_in_ad_recall",  # share of the query's terms (CJK bigrams, Latin words) found in title+description
    "query_in_title_recall",
    "bidword_in_ad_recall",
    "bidword_in_title",  # bidword appears verbatim in the title (0/1)
    "selling_points_covered",  # share of selling points with at least half their terms in the ad text
    "selling_point_numbers_quoted",  # share of the numbers in the selling points that the ad repeats
    "log_title_length",  # log(1 + display length): CJK characters + Latin words
    "log_description_length",
    "cjk_share",  # share of CJK characters among letters: tells the MLP which length scale applies
)

_WS = re.compile(r"\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]+")


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


_CJK_RUN = re.compile("[\u3400-\u9fff\uf900-\ufaff]+")


def _terms(text: str) -> set[str]:
    """Match terms of NFKC-lower-cased text: CJK character bigrams and Latin/number words.

    Bigrams stand in for Chinese words (no segmenter needed); English is compared word by word,
    since character bigrams of English match by chance ("th", "er").
    """
    t = unicodedata.normalize("NFKC", text).lower()
    terms: set[str] = set(_LATIN_WORD.findall(t))
    for run in _CJK_RUN.findall(t):
        if len(run) == 1:
            terms.add(run)
        terms.update(run[i : i + 2] for i in range(len(run) - 1))
    return terms


def _recall(needle: str, haystack_terms: set[str]) -> float:
    grams = _terms(needle)
    if not grams:
        return 0.0
    return len(grams & haystack_terms) / len(grams)


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in _NUMBER.findall(unicodedata.normalize("NFKC", text))}


def display_length(text: str) -> int:
    """Length as a reader perceives it: one unit per CJK character and per Latin/number word."""
    return sum(1 for ch in text if _is_cjk(ch)) + len(_LATIN_WORD.findall(text))


def lexical_features(item: Mapping[str, Any]) -> list[float]:
    """The :data:`LEXICAL_FEATURE_NAMES` values of one item (floats, order as named).

    Classic query-ad matching features of search-ads CTR models, written language-agnostically
    (terms are CJK character bigrams and Latin words, so Chinese needs no segmenter). They make explicit what a frozen
    sentence embedding blurs: whether the ad repeats the user's words and the advertiser's facts,
    and how long it is.
    """
    title, desc = str(item.get("title", "")), str(item.get("description", ""))
    query, bidword = str(item.get("query", "")), str(item.get("bidword", ""))
    ad_text = title + "\n" + desc
    ad_grams, title_grams = _terms(ad_text), _terms(title)
    points = normalise_selling_points(item.get("selling_points"))
    bw = _WS.sub("", unicodedata.normalize("NFKC", bidword).lower())
    covered = [(_recall(p, ad_grams) >= 0.5) for p in points]
    point_numbers = set().union(*(_numbers(p) for p in points)) if points else set()
    letters = [ch for ch in ad_text if ch.isalpha()]
    return [
        _recall(query, ad_grams),
        _recall(query, title_grams),
        _recall(bidword, ad_grams),
        float(bool(bw) and bw in _WS.sub("", unicodedata.normalize("NFKC", title).lower())),
        float(np.mean(covered)) if covered else 0.0,
        len(point_numbers & _numbers(ad_text)) / len(point_numbers) if point_numbers else 0.0,
        math.log1p(display_length(title)),
        math.log1p(display_length(desc)),
        sum(1 for ch in letters if _is_cjk(ch)) / len(letters) if letters else 0.0,
    ]
