"""Format reward: a valid parse (relate_common.ad_format.parse_ad) plus the structural rules.

Range: [0, 1]. 0 when the title or the description is missing (the ad cannot be served);
otherwise ``1 - sum(penalty of each broken rule)``, floored at 0, each rule counted once however
often it fires (every occurrence is still reported as a trigger with its span).

Rules, from parse_ad's problems: extra_text, repeated_field, empty_field, wrong_order; and on the
whole response: markdown, url and phone (allowed when the same URL / number is in the selling
points: the advertiser asked for it), emoji, control_char (incl. zero-width / bidi format
characters), excessive_punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from relate_common.ad_format import ParsedAd

from reward_fns.config import FormatConfig
from reward_fns.text import normalize_chars
from reward_fns.types import ComponentScore, Trigger

_MARKDOWN_RES = [
    re.compile(r"\*\*[^*\n]*\*\*|\*\*"),  # bold (or a stray '**')
    re.compile(r"(?<!\w)__\S"),  # bold with underscores
    re.compile(r"~~"),  # strikethrough
    re.compile(r"`+"),  # code
    re.compile(r"^[ \t]*#{1,6}\s", re.M),  # heading
    re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", re.M),  # list item at a line start
    re.compile(r"\[[^\]\n]+\]\([^)\n]*\)"),  # link
    re.compile(r"^[ \t]*>", re.M),  # quote
]
# Field text that itself starts with a list marker ("Title: - Best course").
_FIELD_BULLET_RE = re.compile(r"^(?:[-*+]|\d+[.)]|#{1,6})\s")

_TLDS = "com|cn|net|org|io|co|info|biz|top|xyz|shop|app|edu|gov|me|tv|cc|us|uk|de|jp|hk|tw"
_URL_RE = re.compile(
    rf"(?:https?://|www\.)[^\s，。；、]+|(?<![\w@.])[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\.(?:{_TLDS})(?:/[^\s，。；、]*)?(?![\w.])",
    re.I,
)
_PHONE_RES = [
    re.compile(r"(?<!\d)1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"),  # CN mobile
    re.compile(r"(?<!\d)[48]00[ -]?\d{3}[ -]?\d{4}(?!\d)"),  # CN 400/800 service numbers
    re.compile(r"(?<![\d-])0\d{2,3}-\d{7,8}(?!\d)"),  # CN landline with area code
    re.compile(r"(?<![\d-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"),  # NANP
    re.compile(r"(?<!\d)\+\d{1,3}[ -]?\d(?:[\d -]{5,}\d)(?!\d)"),  # international
]
_EMOJI_RE = re.compile(
    "["
    "\U0001F000-\U0001FAFF"  # mahjong .. symbols & pictographs extended-A (incl. flags, emoticons)
    "\u2600-\u27BF"  # misc symbols, dingbats (☀ ✓ ★ ❤)
    "\u2B50\u2B55\u2B1B\u2B1C"  # ⭐ ⭕ ⬛ ⬜
    "\u3030\u303D\u3297\u3299\u203C\u2049\u2139\u24C2"
    # not forbidden: ® ™ © (brand marks are legitimate ad text), arrows, CJK punctuation
    "\uFE0F\uFE0E"  # emoji / text presentation selectors
    "]"
)
_BANG = "!！"
_QUESTION = "?？"


def _control_spans(response: str) -> list[tuple[int, int]]:
    """Control / format characters, except the line breaks that separate the two lines."""
    out = []
    for i, ch in enumerate(response):
        if ch == "\n" or (ch == "\r" and response[i + 1 : i + 2] == "\n"):
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs"):
            out.append((i, i + 1))
    return out


def _punct_runs(response: str, max_run: int) -> list[tuple[int, int, str]]:
    """Runs of punctuation judged excessive: (start, end, text)."""
    out = []
    i, n = 0, len(response)
    while i < n:
        ch = response[i]
        if ch in _BANG + _QUESTION:
            j = i
            while j < n and response[j] in _BANG + _QUESTION:
                j += 1
            if j - i >= 2:  # "!!", "?!", "？？"
                out.append((i, j, response[i:j]))
            i = j
            continue
        if unicodedata.category(ch).startswith("P"):
            j = i
            while j < n and response[j] == ch:
                j += 1
            limit = max_run + 1 if ch == "." else max_run  # "..." is an ellipsis, "...." is not
            if j - i >= limit:
                out.append((i, j, response[i:j]))
            i = j
            continue
        i += 1
    return out


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _url_key(url: str) -> str:
    u = normalize_chars(url).rstrip("/.")
    return re.sub(r"^(?:https?://)?(?:www\.)?", "", u)


def format_reward(response: str, parsed: ParsedAd, selling_points: Sequence[str], cfg: FormatConfig) -> ComponentScore:
    """Format component of one response, in [0, 1] (see module docstring)."""
    triggers: list[Trigger] = []
    for problem in parsed.problems:
        rule = {
            "missing_title": "missing_field", "missing_description": "missing_field",
            "repeated_title": "repeated_field", "repeated_description": "repeated_field",
            "empty_title": "empty_field", "empty_description": "empty_field",
        }.get(problem, problem)
        triggers.append(Trigger(rule, problem))

    for rx in _MARKDOWN_RES:
        for m in rx.finditer(response):
            triggers.append(Trigger("markdown", m.group(0).strip()[:20], (m.start(), m.end())))
    for text, span in ((parsed.title, parsed.title_span), (parsed.description, parsed.description_span)):
        m = _FIELD_BULLET_RE.match(text)
        if m:
            triggers.append(Trigger("markdown", m.group(0).strip(), (span[0], span[0] + m.end())))

    sp_text = " ".join(selling_points)
    sp_urls = {_url_key(m.group(0)) for m in _URL_RE.finditer(normalize_chars(sp_text))}
    for m in _URL_RE.finditer(response):
        if _url_key(m.group(0)) not in sp_urls:
            triggers.append(Trigger("url", m.group(0), (m.start(), m.end())))

    sp_digits = _digits(normalize_chars(sp_text))
    seen: set[tuple[int, int]] = set()
    for rx in _PHONE_RES:
        for m in rx.finditer(normalize_chars(response)):
            if any(a < m.end() and m.start() < b for a, b in seen):
                continue  # one number matched by two patterns
            seen.add((m.start(), m.end()))
            if _digits(m.group(0)) not in sp_digits:
                triggers.append(Trigger("phone", response[m.start() : m.end()], (m.start(), m.end())))

    for m in _EMOJI_RE.finditer(response):
        triggers.append(Trigger("emoji", m.group(0), (m.start(), m.end())))
    for span in _control_spans(response):
        triggers.append(Trigger("control_char", f"U+{ord(response[span[0]]):04X}", span))
    for a, b, text in _punct_runs(response, cfg.max_punct_run):
        triggers.append(Trigger("excessive_punctuation", text[:10], (a, b)))
    n_bang = sum(response.count(c) for c in _BANG)
    if n_bang > cfg.max_exclamations:
        triggers.append(Trigger("excessive_punctuation", f"{n_bang} exclamation marks > {cfg.max_exclamations}"))

    broken = {t.rule for t in triggers}
    if "missing_field" in broken:
        value = 0.0
    else:
        value = max(0.0, 1.0 - sum(cfg.penalties.get(rule, 0.0) for rule in broken))
    return ComponentScore("format", round(float(value), 6), triggers, {"rules_broken": sorted(broken)})
