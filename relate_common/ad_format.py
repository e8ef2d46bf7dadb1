"""The ad output format: what the prompt asks the policy to write and what the rewards parse.

One place defines it so that the prompt (``data_prep.prompts``) and the parser used by every
reward component can never drift apart. A response is exactly two lines::

    Title: <title>                 标题：<title>
    Description: <description>     描述：<description>

The paper gives no length limits; the intervals below are ours, chosen from common search-ad
practice (Baidu: titles of roughly 10-30 Chinese characters, descriptions up to about 100;
Google responsive search ads: 30-character headlines, 90-character descriptions, which we relax
because one of our titles stands for a full headline line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# (title label, description label) per language.
FIELD_LABELS: dict[str, tuple[str, str]] = {
    "zh": ("标题", "描述"),
    "en": ("Title", "Description"),
}

# Target length intervals in characters, per language and field (inclusive).
LENGTH_LIMITS: dict[str, dict[str, tuple[int, int]]] = {
    "zh": {"title": (10, 30), "description": (30, 100)},
    "en": {"title": (20, 60), "description": (60, 180)},
}

_TITLE_LABELS = "|".join(re.escape(labels[0]) for labels in FIELD_LABELS.values())
_DESC_LABELS = "|".join(re.escape(labels[1]) for labels in FIELD_LABELS.values())
# A label, optional spaces, an ASCII or full-width colon. Case-insensitive for English.
_LINE_RE = re.compile(
    rf"^\s*(?:(?P<title>{_TITLE_LABELS})|(?P<desc>{_DESC_LABELS}))\s*[:：]\s*(?P<text>.*?)\s*$",
    re.IGNORECASE,
)


def render_ad(title: str, description: str, language: str) -> str:
    """The exact text a perfect response would contain for ``title`` and ``description``."""
    title_label, desc_label = FIELD_LABELS[language]
    colon = "：" if language == "zh" else ": "
    return f"{title_label}{colon}{title}\n{desc_label}{colon}{description}"


@dataclass
class ParsedAd:
    """Result of parsing one response; ``problems`` lists every deviation from the format."""

    title: str = ""
    description: str = ""
    # Character spans of the title and description text inside the original response.
    title_span: tuple[int, int] = (0, 0)
    description_span: tuple[int, int] = (0, 0)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def is_empty(self) -> bool:
        """Nothing to show: no title, no description and no other text (an empty or blank output)."""
        return not self.title.strip() and not self.description.strip() and "extra_text" not in self.problems


def parse_ad(response: str) -> ParsedAd:
    """Parse a response into title and description, recording every format problem.

    Lenient where a downstream system would be (blank lines, surrounding spaces, either colon,
    label case) and strict where it would not (missing or repeated fields, extra text lines,
    wrong order). Always returns; never raises on any string.
    """
    parsed = ParsedAd()
    titles: list[tuple[str, tuple[int, int]]] = []
    descs: list[tuple[str, tuple[int, int]]] = []
    order: list[str] = []
    pos = 0
    for line in response.splitlines(keepends=True):
        start = pos
        pos += len(line)
        stripped = line.rstrip("\r\n")
        if not stripped.strip():
            continue
        m = _LINE_RE.match(stripped)
        if m is None:
            parsed.problems.append("extra_text")
            continue
        span = (start + m.start("text"), start + m.end("text"))
        if m.group("title") is not None:
            titles.append((m.group("text"), span))
            order.append("title")
        else:
            descs.append((m.group("text"), span))
            order.append("description")
    for name, found in (("title", titles), ("description", descs)):
        if not found:
            parsed.problems.append(f"missing_{name}")
        elif len(found) > 1:
            parsed.problems.append(f"repeated_{name}")
        elif not found[0][0]:
            parsed.problems.append(f"empty_{name}")
    if titles and descs and order.index("title") > order.index("description"):
        parsed.problems.append("wrong_order")
    if titles:
        parsed.title, parsed.title_span = titles[0]
    if descs:
        parsed.description, parsed.description_span = descs[0]
    return parsed
