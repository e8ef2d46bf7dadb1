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

A batch is scanned only where a regex can match: :mod:`reward_fns.literals` says which texts
hold the strings each regex needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from reward_fns.config import RiskConfig
from reward_fns.literals import literal_presence, required_clauses
from reward_fns.text import literal_alternation_parts, normalize_chars
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
    parts = literal_alternation_parts(terms)
    if parts is not None:
        lit = re.compile(parts[0] + "|".join(parts[1]) + parts[2])  # == literal_alternation(terms)
        _SPLITS[(lit.pattern, lit.flags)] = _Split(*parts, lit.flags)
        out.append(lit)
    if patterns:
        alts = [f"(?:{p})" for p in patterns]
        rx = re.compile("|".join(alts))
        if all(re.compile(p).groups == 0 for p in patterns):  # no group numbers to shift
            _SPLITS[(rx.pattern, rx.flags)] = _Split("", alts, "", rx.flags)
        out.append(rx)
    return out


class _Split:
    """A regex ``prefix + "|".join(alternatives) + suffix`` whose alternatives are tried in order.

    An alternative that cannot match anywhere in a text (it needs a string the text lacks) can
    be left out for that text without changing a single match: at every position the first
    alternative that matches is still the first. :meth:`reduced` compiles (and caches) the regex
    of a subset of the alternatives.
    """

    def __init__(self, prefix: str, alternatives: list[str], suffix: str, flags: int):
        self.prefix, self.alternatives, self.suffix, self.flags = prefix, list(alternatives), suffix, flags
        self.required = [required_clauses(re.compile(a, flags)) for a in self.alternatives]
        self._cache: dict[frozenset[int], re.Pattern[str]] = {}

    def reduced(self, keep: frozenset[int]) -> re.Pattern[str]:
        rx = self._cache.get(keep)
        if rx is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            body = "|".join(self.alternatives[i] for i in sorted(keep))
            rx = self._cache[keep] = re.compile(self.prefix + body + self.suffix, self.flags)
        return rx


_SPLITS: dict[tuple[str, int], _Split] = {}


class Lexicon:
    """A set of categorised blacklists loaded from YAML files (see lexicons/risk_zh.yaml)."""

    def __init__(self, categories: list[_Category]):
        self.categories = categories
        self._plan: tuple[tuple[re.Pattern[str] | None, ...], _ScanPlan] | None = None

    def _scan_plan(self) -> "_ScanPlan":
        """What :meth:`find_many` looks for; rebuilt when the regexes change (the attribute is public)."""
        regexes = [rx for cat in self.categories for rx in (*cat.regexes, None, *cat.exceptions, None)]
        old = self._plan
        if old is None or len(old[0]) != len(regexes) or any(a is not b for a, b in zip(old[0], regexes)):
            self._plan = old = (tuple(regexes), _ScanPlan(self.categories))
        return old[1]

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

    def find(self, response: str, normalized: str | None = None) -> list[RiskHit]:
        """Every blacklisted expression in ``response``, sorted by span (see module docstring).

        ``normalized``: ``normalize_chars(response)`` when the caller has it already.
        """
        norm = normalize_chars(response) if normalized is None else normalized
        return self.find_many([response], [norm])[0]

    def find_many(
        self,
        responses: Sequence[str],
        normalized: Sequence[str] | None = None,
        flat: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[list[RiskHit]]:
        """:meth:`find` of every response (``normalized``: their ``normalize_chars``, if known;
        flat: the code points of those concatenated and their bounds, see
        :func:`reward_fns.literals.literal_presence`).

        Most responses hold no blacklisted term. Every regex (for the lexicon's literal
        alternations: every alternative) has required strings (:func:`reward_fns.literals.required_clauses`, e.g.
        "guaranteed" for "guaranteed\\s+\\d+%"), looked for in the whole batch at once
        (:func:`reward_fns.literals.literal_presence`). A response is scanned only by the regexes it holds a required
        string of, and an alternation only with the alternatives it can match
        (:class:`_Split`): a regex or alternative cannot match a text without its strings, so
        the hits are exactly the per-response scan's.
        """
        norms = [normalize_chars(r) for r in responses] if normalized is None else list(normalized)
        B = len(norms)
        plan = self._scan_plan()
        present = literal_presence(norms, plan.literals, flat)  # (literals, B) bool
        # held[k, b]: text b satisfies clause k (holds one of its strings)
        held = np.zeros((len(plan.clause_unit), B), dtype=bool)
        if len(plan.pair_literal):
            held[plan.pair_clauses] = np.logical_or.reduceat(present[plan.pair_literal], plan.pair_first, axis=0)
        # active[u, b]: unit u (a regex or exception, or one alternative of a split one) can
        # match text b: it satisfies every clause of u
        active = np.zeros((len(plan.units), B), dtype=bool)
        if len(plan.unit_first):
            active[plan.clause_units] = np.logical_and.reduceat(held, plan.unit_first, axis=0)
        active[plan.always] = True
        out: list[list[RiskHit]] = [[] for _ in range(B)]
        scan = np.flatnonzero(active[plan.regex_units].any(axis=0))
        # Texts with the same active units share their regexes: built once per distinct set.
        sets = np.packbits(active[:, scan], axis=0).T
        todos: dict[bytes, list[tuple[_Category, list[re.Pattern[str]], list[re.Pattern[str]]]]] = {}
        for j, b in enumerate(scan.tolist()):
            key = sets[j].tobytes()
            todo = todos.get(key)
            if todo is None:
                todo = todos[key] = self._regexes(plan, np.flatnonzero(active[:, b]).tolist())
            out[b] = self._scan(responses[b], norms[b], todo)
        return out

    def _regexes(
        self, plan: "_ScanPlan", on: list[int]
    ) -> list[tuple[_Category, list[re.Pattern[str]], list[re.Pattern[str]]]]:
        """Per category, the regexes and exceptions of the active units ``on`` (sorted), split
        alternations reduced to their active alternatives."""
        units = plan.units
        found: dict[int, tuple[list[re.Pattern[str]], list[re.Pattern[str]]]] = {}
        alts: set[int] = set()
        for i, u in enumerate(on):  # units are ordered by (category, kind, regex, alternative)
            c, kind, r, alt = units[u]
            alts.add(alt)
            if i + 1 < len(on) and units[on[i + 1]][:3] == (c, kind, r):
                continue
            cat = self.categories[c]
            rx = (cat.regexes, cat.exceptions)[kind][r]
            split = plan.splits[c][kind][r]
            if split is not None and len(alts) < len(split.alternatives):
                rx = split.reduced(frozenset(alts))
            alts = set()
            found.setdefault(c, ([], []))[kind].append(rx)
        return [(self.categories[c], regexes, exceptions) for c, (regexes, exceptions) in found.items() if regexes]

    @staticmethod
    def _scan(
        response: str, norm: str, todo: list[tuple[_Category, list[re.Pattern[str]], list[re.Pattern[str]]]]
    ) -> list[RiskHit]:
        """The hits of the given categories' regexes (the per-response scan of :meth:`find`);
        ``todo``: per category the regexes and exceptions that can match ``norm``."""
        hits: list[RiskHit] = []
        for cat, regexes, exceptions in todo:
            excluded: list[tuple[int, int]] | None = None  # the exceptions' spans, found on the first match
            for rx in regexes:
                for m in rx.finditer(norm):
                    a, b = m.span()
                    if b <= a:
                        continue
                    if excluded is None:
                        excluded = [m.span() for ex in exceptions for m in ex.finditer(norm)]
                    if excluded and any(x <= a and b <= y for x, y in excluded):
                        continue
                    hits.append(RiskHit(cat.name, m.group(0), (a, b), response[a:b]))
        # One span can match several categories ("guaranteed returns"); keep one hit per pair.
        uniq = {(h.category, h.span): h for h in hits}
        return sorted(uniq.values(), key=lambda h: (h.span, h.category))


class _ScanPlan:
    """What :meth:`Lexicon.find_many` looks for. A unit is a regex or exception of a category, or
    one alternative of a split one (:class:`_Split`): ``units`` [(category, kind (0 regex,
    1 exception), index, alternative or -1)] in that order. A unit can only match a text that
    satisfies all its clauses (:func:`reward_fns.literals.required_clauses`): ``clause_unit[k]`` is the unit of
    clause k (clauses ordered by unit), ``lit_clauses[i]`` the clauses literal i satisfies,
    ``literals`` every literal, ``always`` the units without clauses, ``regex_units`` the units
    of kind 0."""

    def __init__(self, categories: list[_Category]):
        self.splits: list[tuple[list[_Split | None], list[_Split | None]]] = []
        self.units: list[tuple[int, int, int, int]] = []
        self.always: list[int] = []
        clause_unit: list[int] = []
        users: dict[str, list[int]] = {}
        for c, cat in enumerate(categories):
            per_kind: tuple[list[_Split | None], list[_Split | None]] = ([], [])
            for kind, regexes in enumerate((cat.regexes, cat.exceptions)):
                for r, rx in enumerate(regexes):
                    split = _SPLITS.get((rx.pattern, rx.flags))
                    per_kind[kind].append(split)
                    reqs = list(enumerate(split.required)) if split is not None else [(-1, required_clauses(rx))]
                    for alt, clauses in reqs:
                        u = len(self.units)
                        self.units.append((c, kind, r, alt))
                        if not clauses:
                            self.always.append(u)
                            continue
                        for clause in clauses:
                            k = len(clause_unit)
                            clause_unit.append(u)
                            for lit in dict.fromkeys(clause):
                                users.setdefault(lit, []).append(k)
            self.splits.append(per_kind)
        self.clause_unit = np.asarray(clause_unit, dtype=np.int64)
        self.literals = sorted(users)
        self.lit_clauses = [users[lit] for lit in self.literals]
        # (clause, literal) pairs by clause: a clause holds when one of its literals is present
        pairs = sorted((k, i) for i, ks in enumerate(self.lit_clauses) for k in ks)
        self.pair_literal = np.asarray([i for _, i in pairs], dtype=np.int64)
        pair_clause = np.asarray([k for k, _ in pairs], dtype=np.int64)
        self.pair_first = np.flatnonzero(np.r_[True, pair_clause[1:] != pair_clause[:-1]]) if pairs else pair_clause
        self.pair_clauses = pair_clause[self.pair_first]
        self.regex_units = [u for u, unit in enumerate(self.units) if unit[1] == 0]
        # clauses of one unit are consecutive: reduceat over their first rows
        self.unit_first = np.flatnonzero(np.r_[True, self.clause_unit[1:] != self.clause_unit[:-1]]) if clause_unit else np.zeros(0, dtype=np.int64)
        self.clause_units = self.clause_unit[self.unit_first] if clause_unit else np.zeros(0, dtype=np.int64)


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
