"""Result types shared by every reward component.

Every component returns a :class:`ComponentScore`: a value in the range documented by that
component plus the :class:`Trigger` list that explains it (which rule fired, on which characters
of the ORIGINAL response), so a score can always be traced back to the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int]  # [start, end) character offsets into the original response


@dataclass(frozen=True)
class Trigger:
    """One reason a component lost (or was denied) reward."""

    rule: str  # stable machine name, e.g. "title_too_short", "absolute_terms", "ungrounded_price"
    detail: str = ""  # human-readable: the matched term, the measured length, the judge's issue
    span: Span | None = None  # characters of the original response, when the rule is local

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule}
        if self.detail:
            out["detail"] = self.detail
        if self.span is not None:
            out["span"] = [int(self.span[0]), int(self.span[1])]
        return out


@dataclass
class ComponentScore:
    """A component's value for one response and what triggered it."""

    name: str
    value: float
    triggers: list[Trigger] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # sub-scores worth logging

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": float(self.value),
            "triggers": [t.to_dict() for t in self.triggers],
            **({"details": self.details} if self.details else {}),
        }
