"""Length reward: a target interval per field, full score inside, linear decay outside.

Range: [0, 1]. Per field the score is 1 for ``lo <= x <= hi``, else ``max(0, 1 - d / decay)``
with ``d`` the relative distance to the interval (``(lo - x) / lo`` below, ``(x - hi) / hi``
above). A missing or empty field scores 0. The component is the weighted mean over fields.

Lengths are measured in characters or in tokens per language (``LengthConfig.unit``). Token
counts come, in order of preference, from the generated token offsets (the exact tokens the
policy produced; a Chinese character split into two byte tokens counts twice, as it costs two
decoding steps) or from a ``count_tokens`` callable (re-tokenising the field alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from relate_common.ad_format import ParsedAd

from reward_fns.config import FIELDS, LengthConfig
from reward_fns.types import ComponentScore, Span, Trigger


def interval_score(x: float, lo: float, hi: float, decay: float) -> float:
    """1 inside [lo, hi]; outside, 1 minus the relative distance / ``decay``, floored at 0."""
    if lo <= x <= hi:
        return 1.0
    d = (lo - x) / max(lo, 1e-9) if x < lo else (x - hi) / max(hi, 1e-9)
    return float(max(0.0, 1.0 - d / decay))


def tokens_in_span(offsets: np.ndarray | Sequence[Sequence[int]], span: Span) -> int:
    """Number of tokens whose character offsets overlap ``span``.

    ``offsets``: (L, 2) [start, end) per token of the response. A leading-space token
    (" Best" at (6, 11) for a field starting at 7) overlaps and counts; empty-span special
    tokens do not.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if off.size == 0 or span[1] <= span[0]:
        return 0
    s, e = off[:, 0], off[:, 1]
    return int(np.count_nonzero((e > s) & (s < span[1]) & (e > span[0])))


def field_lengths(
    parsed: ParsedAd,
    unit: str,
    offsets: np.ndarray | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> dict[str, int]:
    """Length of each field in ``unit`` ('chars' or 'tokens')."""
    spans = {"title": parsed.title_span, "description": parsed.description_span}
    texts = {"title": parsed.title, "description": parsed.description}
    out = {}
    for f in FIELDS:
        if unit == "chars":
            out[f] = len(texts[f].strip())
        elif offsets is not None:
            out[f] = tokens_in_span(offsets, spans[f]) if texts[f] else 0
        elif count_tokens is not None:
            out[f] = int(count_tokens(texts[f])) if texts[f] else 0
        else:
            raise ValueError("length unit 'tokens' needs the response offsets or a count_tokens callable")
    return out


def length_reward(
    parsed: ParsedAd,
    language: str,
    cfg: LengthConfig,
    offsets: np.ndarray | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> ComponentScore:
    """Length component of one parsed response, in [0, 1], with a trigger per field outside."""
    lang = language if language in cfg.unit else "en"
    unit = cfg.unit[lang]
    table = cfg.char_intervals if unit == "chars" else cfg.token_intervals
    lengths = field_lengths(parsed, unit, offsets, count_tokens)
    spans = {"title": parsed.title_span, "description": parsed.description_span}
    triggers: list[Trigger] = []
    scores: dict[str, float] = {}
    for f in FIELDS:
        lo, hi = table[lang][f]
        x = lengths[f]
        present = f"missing_{f}" not in parsed.problems and x > 0
        scores[f] = interval_score(x, lo, hi, cfg.decay) if present else 0.0
        if not present:
            triggers.append(Trigger(f"{f}_missing", f"no {f} text"))
        elif x < lo:
            triggers.append(Trigger(f"{f}_too_short", f"{x} {unit} < {lo}", spans[f]))
        elif x > hi:
            triggers.append(Trigger(f"{f}_too_long", f"{x} {unit} > {hi}", spans[f]))
    wsum = sum(cfg.field_weights.get(f, 0.0) for f in FIELDS) or 1.0
    value = sum(cfg.field_weights.get(f, 0.0) * scores[f] for f in FIELDS) / wsum
    details = {f"{f}_{unit}": lengths[f] for f in FIELDS} | {f"{f}_score": scores[f] for f in FIELDS}
    return ComponentScore("length", float(value), triggers, details)
