"""Risk-control reward: blacklist lexicons (zh / en, by category) and a sentence compliance flag.

* :func:`find_blacklist_hits` matches every lexicon on the normalised response (full / half
  width and case folded, length-preserving) and returns spans in the ORIGINAL response; both
  languages' lexicons always run, because a Chinese ad quoting "NO.1" is as risky as an English
  one.
* :func:`risk_blacklist_reward`: range [0, 1], ``max(0, 1 - penalty_per_hit * hits)``. At token
  level (preset ``relate``) the same spans become eq. 5's ``-lambda1`` tokens instead.
* :func:`risk_judge_reward`: range [0, 1], the LLM judge's ``compliant`` verdict reused (1 / 0,
  ``neutral_score`` on judge failure); sentence-level in every preset.
* :func:`is_compliant`: the Table 1 flag: no blacklist hit and the judge (when used) not
  saying non-compliant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from reward_fns.config import RiskConfig
from reward_fns.text import literal_alternation, normalize_chars
from reward_fns.types import ComponentScore, Span, Trigger

LEXICON_DIR = Path(__file__).parent / "lexicons"


@dataclass(frozen=True)
class RiskHit:
    """One blacklisted expression in a response."""

    category: str
    term: str  # the lexicon entry (or pattern) that matched
    span: Span  # characters of the original response
    text: str  # the original characters


@dataclass
class _Category:
    name: str
    language: str
    description: str
    regexes: list[re.Pattern[str]]
    exceptions: list[re.Pattern[str]]


def _alternation(terms: list[str], patterns: list[str]) -> list[re.Pattern[str]]:
    """Literal terms as one prefiltered alternation, regex patterns as a second one."""
    out = []
    lit = literal_alternation(terms)
    if lit is not None:
        out.append(lit)
    if patterns:
        out.append(re.compile("|".join(f"(?:{p})" for p in patterns)))
    return out


class Lexicon:
    """A set of categorised blacklists loaded from YAML files (see lexicons/risk_zh.yaml)."""

    def __init__(self, categories: list[_Category]):
        self.categories = categories

    @classmethod
    def from_files(cls, paths: list[str | Path], only: list[str] | None = None) -> "Lexicon":
        import yaml

        cats: list[_Category] = []
        for p in paths:
            path = Path(p)
            if not path.is_absolute() and not path.exists():
                path = LEXICON_DIR / path
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("categories"), dict):
                raise ValueError(f"{path}: a risk lexicon needs a 'categories' mapping")
            lang = str(data.get("language", "?"))
            for name, spec in data["categories"].items():
                if only is not None and name not in only:
                    continue
                spec = spec or {}
                for key in spec:
                    if key not in ("description", "terms", "patterns", "exceptions", "exception_patterns"):
                        raise ValueError(f"{path}: categories.{name}.{key}: unknown key")
                for i, pat in enumerate(list(spec.get("patterns") or []) + list(spec.get("exception_patterns") or [])):
                    try:
                        re.compile(pat)
                    except re.error as e:
                        raise ValueError(f"{path}: categories.{name}: bad pattern {pat!r}: {e}") from e
                terms = [str(t) for t in spec.get("terms") or []]
                cats.append(
                    _Category(
                        name=name,
                        language=lang,
                        description=str(spec.get("description", "")),
                        regexes=_alternation(terms, list(spec.get("patterns") or [])),
                        exceptions=_alternation(
                            [str(t) for t in spec.get("exceptions") or []], list(spec.get("exception_patterns") or [])
                        ),
                    )
                )
        return cls(cats)

    @property
    def category_names(self) -> list[str]:
        return sorted({c.name for c in self.categories})

    def find(self, response: str) -> list[RiskHit]:
        """Every blacklisted expression in ``response``, sorted by span (see module docstring)."""
        norm = normalize_chars(response)
        hits: list[RiskHit] = []
        for cat in self.categories:
            excluded = [m.span() for rx in cat.exceptions for m in rx.finditer(norm)]
            for rx in cat.regexes:
                for m in rx.finditer(norm):
                    a, b = m.span()
                    if b <= a or any(x <= a and b <= y for x, y in excluded):
                        continue
                    hits.append(RiskHit(cat.name, m.group(0), (a, b), response[a:b]))
        # One span can match several categories ("guaranteed returns"); keep one hit per pair.
        uniq = {(h.category, h.span): h for h in hits}
        return sorted(uniq.values(), key=lambda h: (h.span, h.category))


@lru_cache(maxsize=8)
def _cached_lexicon(paths: tuple[str, ...], only: tuple[str, ...] | None) -> Lexicon:
    return Lexicon.from_files(list(paths), list(only) if only is not None else None)


def load_lexicon(cfg: RiskConfig) -> Lexicon:
    """The lexicon named by ``cfg`` (loaded once per process)."""
    return _cached_lexicon(tuple(cfg.lexicons), tuple(cfg.categories) if cfg.categories is not None else None)


def find_blacklist_hits(response: str, cfg: RiskConfig) -> list[RiskHit]:
    """Blacklist hits of ``response`` with spans in the original text."""
    return load_lexicon(cfg).find(response)


def risk_blacklist_reward(hits: list[RiskHit], cfg: RiskConfig) -> ComponentScore:
    """Sentence-level blacklist component in [0, 1] (see module docstring)."""
    value = max(0.0, 1.0 - cfg.penalty_per_hit * len(hits))
    triggers = [Trigger(h.category, h.text, h.span) for h in hits]
    return ComponentScore("risk_blacklist", round(float(value), 6), triggers, {"hits": len(hits)})


def risk_judge_reward(compliant: bool | None, issues: list[str], failed: bool, neutral: float) -> ComponentScore:
    """The judge's compliance verdict as a component in [0, 1]."""
    if failed or compliant is None:
        return ComponentScore("risk_judge", neutral, [Trigger("judge_failed", "neutral score")] if failed else [])
    triggers = [] if compliant else [Trigger("judge_non_compliant", "; ".join(issues)[:300])]
    return ComponentScore("risk_judge", 1.0 if compliant else 0.0, triggers)


def is_compliant(hits: list[RiskHit], judge_compliant: bool | None = None) -> bool:
    """Table 1's per-text flag: no blacklist hit and no non-compliant judge verdict."""
    return not hits and judge_compliant is not False
