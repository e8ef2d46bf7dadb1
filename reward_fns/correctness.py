"""Correctness reward: claims must be grounded in the record; optionally an LLM judge's verdict.

(a) Offline checker, :func:`find_claims` + :func:`offline_correctness`. A claim is a number
(kind ``price``, ``percentage``, ``duration`` or ``number``), a guarantee word or a superlative
about the advertiser (lexicons/claims.yaml) inside the ad's title or description. It is grounded
when the same value / word occurs in the record's sources (``CorrectnessConfig.sources``:
selling points and landing page, plus query and bidword). Numbers compare by value, so
"5,000+" matches "5000", "3万" matches "30000" and "三天" matches "3天".
Range [0, 1]: ``max(0, 1 - penalty_per_claim * ungrounded)``.

(b) LLM judge (judge.py) gives a score in [0, 1] (neutral on failure). :func:`correctness_reward`
mixes them: ``(1 - judge_weight) * offline + judge_weight * judge`` when a verdict is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from relate_common.ad_format import ParsedAd
from relate_common.records import AdRecord

from reward_fns.config import CorrectnessConfig
from reward_fns.text import content_spans, literal_alternation, normalize_chars
from reward_fns.types import ComponentScore, Span, Trigger

CLAIMS_FILE = Path(__file__).parent / "lexicons" / "claims.yaml"

_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10_000, "亿": 100_000_000}
_MULTIPLIERS = {"万": 10_000, "千": 1000, "百": 100, "亿": 100_000_000}


def cn_to_int(text: str) -> int | None:
    """Simple Chinese numerals ("三", "十五", "二十一", "两千", "三万") -> int; None if not one."""
    if not text or any(c not in _CN_DIGITS and c not in _CN_UNITS for c in text):
        return None
    total, section, digit = 0, 0, None
    for c in text:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        else:
            unit = _CN_UNITS[c]
            if unit >= 10_000:
                total = (total + section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
    return total + section + (digit or 0)


@dataclass(frozen=True)
class Claim:
    """A checkable statement in a response."""

    kind: str  # price | percentage | duration | number | guarantee | superlative
    text: str  # original characters
    span: Span  # in the original response
    values: frozenset[str]  # canonical numbers ("5000", "3"), or the normalised word


@dataclass
class _ClaimLexicon:
    words: dict[str, re.Pattern[str]]  # kind -> alternation of both languages' words
    exceptions: re.Pattern[str] | None
    number: re.Pattern[str]
    cn_number: re.Pattern[str]
    price_units: frozenset[str]
    currency: frozenset[str]
    duration_units: frozenset[str]
    number_exceptions: re.Pattern[str] | None


def _canon(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(round(float(x), 6))


@lru_cache(maxsize=1)
def _lexicon() -> _ClaimLexicon:
    import yaml

    data = yaml.safe_load(CLAIMS_FILE.read_text(encoding="utf-8"))

    alt = literal_alternation
    words = {kind: alt([str(t) for lang in ("zh", "en") for t in data[kind].get(lang, [])]) for kind in ("guarantee", "superlative")}
    exceptions = alt([str(t) for lang in ("zh", "en") for t in data["exceptions"].get(lang, [])])
    price_units = [normalize_chars(u) for u in data["price_units"]]
    duration_units = [normalize_chars(u) for u in data["duration_units"]]
    measure_units = [normalize_chars(u) for u in data["measure_units"]]
    currency = [normalize_chars(u) for u in data["currency_symbols"]]
    units = sorted(set(price_units + duration_units + measure_units + ["%"]), key=len, reverse=True)
    unit_alt = "|".join(re.escape(u) + (r"(?![a-z])" if u[-1].isascii() and u[-1].isalpha() else "") for u in units)
    cur_alt = "|".join(re.escape(c) for c in currency)
    number = re.compile(
        # Not part of a longer token ("N2", "#1", "No.1", "第2", "3.5" seen from its "5").
        rf"(?P<cur>{cur_alt})?\s*(?<![a-z0-9#第])(?<!\d[.,])(?<!no\.)(?P<num>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)"
        rf"(?:\s*(?P<mult>[万千百亿]))?(?:\s*(?P<unit>{unit_alt}))?"
    )
    cn_units = "|".join(re.escape(u) for u in sorted(set(duration_units + price_units + ["倍", "斤"]), key=len, reverse=True) if not u.isascii())
    # Not an ordinal ("第二天") or a vague amount ("几千块", "上百"); see _number_claims for "一".
    cn_number = re.compile(rf"(?<![第几数上好])(?P<num>[零一二两三四五六七八九十百千万]+)\s*(?:个)?(?P<unit>{cn_units})")
    num_exc = [str(p) for p in data.get("number_exceptions") or []]
    return _ClaimLexicon(
        words={k: v for k, v in words.items() if v is not None},
        exceptions=exceptions,
        number=number,
        cn_number=cn_number,
        price_units=frozenset(price_units),
        currency=frozenset(currency),
        duration_units=frozenset(duration_units),
        number_exceptions=re.compile("|".join(f"(?:{p})" for p in num_exc)) if num_exc else None,
    )


def _number_claims(norm: str, original: str, offset: int) -> list[Claim]:
    lex = _lexicon()
    out: list[Claim] = []
    excluded = [m.span() for m in lex.number_exceptions.finditer(norm)] if lex.number_exceptions is not None else []
    for m in lex.number.finditer(norm):
        if any(x <= m.start("num") < y for x, y in excluded):
            continue
        unit, cur, mult = m.group("unit"), m.group("cur"), m.group("mult")
        end = m.end()
        if unit is None and end < len(norm) and norm[end].isascii() and norm[end].isalpha():
            continue  # a model name or code: "5G", "4K", "N2" is caught by the lookbehind
        base = float(m.group("num").replace(",", ""))
        values = {_canon(base)}
        if mult:
            values.add(_canon(base * _MULTIPLIERS[mult]))
        if unit == "%":
            kind = "percentage"
        elif cur or (unit in lex.price_units):
            kind = "price"
        elif unit in lex.duration_units:
            kind = "duration"
        else:
            kind = "number"
        start = m.start("cur") if cur else m.start("num")
        out.append(Claim(kind, original[offset + start : offset + end], (offset + start, offset + end), frozenset(values)))
    for m in lex.cn_number.finditer(norm):
        num = m.group("num")
        value = cn_to_int(num)
        # A bare unit character ("千块") is vague, and "一天/一年/一周" is mostly the indefinite
        # article ("a day"), as in English where "a day" is no number.
        if value is None or value == 1 or not (set(num) & set(_CN_DIGITS) or num.startswith("十")):
            continue
        unit = m.group("unit")
        kind = "duration" if unit in lex.duration_units else "price" if unit in lex.price_units else "number"
        a, b = m.start(), m.end()
        out.append(Claim(kind, original[offset + a : offset + b], (offset + a, offset + b), frozenset({_canon(value)})))
    return out


def _word_claims(norm: str, original: str, offset: int) -> list[Claim]:
    lex = _lexicon()
    excluded = [m.span() for m in lex.exceptions.finditer(norm)] if lex.exceptions is not None else []
    out = []
    for kind, rx in lex.words.items():
        for m in rx.finditer(norm):
            a, b = m.span()
            if any(x <= a and b <= y for x, y in excluded):
                continue
            word = re.sub(r"[\s\-]+", " ", m.group(0))
            out.append(Claim(kind, original[offset + a : offset + b], (offset + a, offset + b), frozenset({word})))
    return out


def find_claims(response: str, parsed: ParsedAd) -> list[Claim]:
    """Claims in the title and description of ``response`` (the whole text if neither parsed)."""
    spans = content_spans(parsed) or [(0, len(response))]
    claims: list[Claim] = []
    for a, b in spans:
        original = response[a:b]
        norm = normalize_chars(original)
        claims += _number_claims(norm, response, a)
        claims += _word_claims(norm, response, a)
    return sorted(claims, key=lambda c: (c.span, c.kind))


def source_text(record: AdRecord, sources: list[str]) -> str:
    """The record fields a claim may be grounded in, joined by newlines."""
    parts: list[str] = []
    for name in sources:
        value = getattr(record, name, "")
        parts.extend(value if isinstance(value, list) else [value])
    return "\n".join(p for p in parts if p)


@lru_cache(maxsize=4096)
def _source_facts(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(numbers, words) stated by a source text; cached because one record serves G responses."""
    norm = normalize_chars(text)
    numbers: set[str] = set()
    for c in _number_claims(norm, text, 0):
        numbers |= c.values
    words: set[str] = set()
    for c in _word_claims(norm, text, 0):
        words |= c.values
    return frozenset(numbers), frozenset(words)


def is_grounded(claim: Claim, sources: str) -> bool:
    numbers, words = _source_facts(sources)
    pool = words if claim.kind in ("guarantee", "superlative") else numbers
    return bool(claim.values & pool)


def offline_correctness(response: str, parsed: ParsedAd, record: AdRecord, cfg: CorrectnessConfig) -> ComponentScore:
    """Offline correctness in [0, 1] with one trigger per ungrounded claim."""
    sources = source_text(record, cfg.sources)
    claims = find_claims(response, parsed)
    ungrounded = [c for c in claims if not is_grounded(c, sources)]
    value = max(0.0, 1.0 - cfg.penalty_per_claim * len(ungrounded))
    triggers = [Trigger(f"ungrounded_{c.kind}", c.text, c.span) for c in ungrounded]
    return ComponentScore(
        "correctness", round(float(value), 6), triggers, {"claims": len(claims), "ungrounded": len(ungrounded)}
    )


def correctness_reward(
    offline: ComponentScore, judge_score: float | None, cfg: CorrectnessConfig, judge_triggers: list[Trigger] | None = None
) -> ComponentScore:
    """Combine the offline checker with a judge score (None: offline only). Range [0, 1]."""
    if judge_score is None:
        return offline
    value = (1.0 - cfg.judge_weight) * offline.value + cfg.judge_weight * float(judge_score)
    details = dict(offline.details, offline=offline.value, judge=float(judge_score))
    return ComponentScore("correctness", round(float(value), 6), offline.triggers + list(judge_triggers or []), details)
