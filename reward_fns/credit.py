"""Batch credit (trainer side): G_high, eq. 4's diversity term and eq. 5's token penalty.

:func:`batch_credit` runs the steps in the order their data flows, one module per step, each
calling only the steps before it (none calls back):

1. normalise the batch once: :class:`reward_fns.text.CharArrays` (normalised texts, character
   flags, each token's trimmed span), read by every later step;
2. eligibility masks: :func:`reward_fns.text_filters.eligibility_masks` (content tokens, windows
   of them, windows the text lets count; the prompt-copy filter of
   :mod:`reward_fns.prompt_copies` normalises the batch's prompts once);
3. n-gram statistics: :mod:`reward_fns.ngram_stats` (G_high, eq. 4's counts and penalty, eq. 5's
   G_high token indicator);
4. spans: the blacklist hits of :mod:`reward_fns.risk`'s lexicon on the normalised texts (and,
   read lazily, the character spans of the G_high occurrences);
5. token mask: :mod:`reward_fns.attribution` (spans -> tokens, eq. 5's token penalty).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from relate_common.ad_format import ParsedAd
from relate_common.records import AdRecord

from reward_fns.attribution import batch_spans_to_token_mask, pad_batch, token_mask_to_spans, token_penalty
from reward_fns.config import RewardConfig, resolve_config
from reward_fns.ngram_stats import NgramStats, WindowKeys, group_codes, statistics_from_keys
from reward_fns.risk import load_lexicon
from reward_fns.text import CharArrays
from reward_fns.text_filters import eligibility_masks
from reward_fns.types import Span


@dataclass
class BatchCredit:
    """Batch-level consequences: diversity statistics, sentence diversity term, token penalty."""

    stats: NgramStats
    diversity_penalty: np.ndarray  # (B,) eq. 4, in [floor, 0]
    sentence_diversity: np.ndarray  # (B,) w_div * penalty when diversity is sentence-level, else 0
    blacklist_mask: np.ndarray  # (B, L) bool, tokens in blacklisted spans
    token_penalty: np.ndarray  # (B, L) float32, eq. 5 over the preset's token-level components
    mask: np.ndarray  # (B, L) bool, tokens inside each response
    blacklist_spans: list[list[Span]]
    # Character spans of G_high occurrences per response. None: computed from ``_span_source``
    # (texts, (B, L, 2) offsets) on first access; the trainer never reads them.
    diversity_spans: list[list[Span]] | None = None
    _span_source: tuple[Sequence[str], np.ndarray] | None = field(default=None, repr=False, compare=False)


def _get_diversity_spans(self: BatchCredit) -> list[list[Span]]:
    spans = self.__dict__.get("_diversity_spans")
    if spans is None and self._span_source is not None:
        texts, off = self._span_source
        tm = self.stats.token_mask
        spans = [token_mask_to_spans(tm[b], off[b], texts[b]) for b in range(len(texts))]
        self.__dict__["_diversity_spans"] = spans
        self._span_source = None
    return spans


def _set_diversity_spans(self: BatchCredit, value: list[list[Span]] | None) -> None:
    self.__dict__["_diversity_spans"] = value


# A property over the dataclass field: ``BatchCredit(..., diversity_spans=...)`` still works, and
# ``credit.diversity_spans`` is a plain list, computed only when someone reads it.
BatchCredit.diversity_spans = property(_get_diversity_spans, _set_diversity_spans)  # type: ignore[assignment]


def batch_credit(
    responses: Sequence[str],
    token_ids: Sequence[Sequence[int]] | np.ndarray,
    offsets: Sequence[Sequence[Sequence[int]]] | np.ndarray,
    group_ids: Sequence[Hashable],
    prompts: Sequence[AdRecord | Mapping[str, Any]] | None,
    config: RewardConfig | str | dict | None = None,
    response_mask: np.ndarray | None = None,
    parsed: Sequence[ParsedAd] | None = None,
) -> BatchCredit:
    """Batch n-gram statistics + span attribution over generated token ids (trainer side).

    responses: B decoded texts; token_ids: (B, L) padded or ragged; offsets: (B, L, 2) or ragged
    (L_i, 2) character spans of each token in its text (attribution.decode_with_offsets gives both
    text and offsets for generated ids); group_ids: (B,) prompt / uid of each response;
    prompts: per response the record (or a mapping with query, bidword, selling_points) whose
    fields may be copied without counting as a template (None: no copy filter);
    response_mask: (B, L) valid tokens of a padded batch.

    Whole-batch array code throughout (no Python loop per character or token); see
    benchmarks/bench_advantage.py for its cost on a 1440 x 256 batch.
    """
    cfg = resolve_config(config)
    ids, off, mask = pad_batch(token_ids, offsets, response_mask)
    B, L = ids.shape
    if len(responses) != B:
        raise ValueError(f"{len(responses)} responses but {B} token rows")
    D = cfg.diversity
    # 1. the batch normalised once
    chars = CharArrays.build(responses, off)
    # 2. eligibility masks (only the field labels are read from the parse: found batch-wise when not given)
    el = eligibility_masks(chars, responses, off, mask, list(parsed) if parsed is not None else None, prompts, D)
    # 3. n-gram statistics, hashing only the windows G_high counting reads
    codes, n_groups = group_codes(list(group_ids))
    if len(codes) != B:
        raise ValueError(f"{len(codes)} group ids for {B} responses")
    stats = statistics_from_keys(WindowKeys(ids, D.n_min, D.n_max), el.oks, codes, n_groups, D, el.valid, el.eligible)
    penalty = stats.penalty(D)
    div_sentence = "diversity" in cfg.weights and not cfg.is_token_level("diversity")
    sentence_div = cfg.weights.get("diversity", 0.0) * penalty if div_sentence else np.zeros(B)
    # 4. spans: the blacklist scan reads the normalised texts of step 1
    lexicon = load_lexicon(cfg.risk)
    bl_spans = [[h.span for h in hits] for hits in lexicon.find_many(responses, chars.texts, (chars.norm_codes, chars.bounds))]
    # 5. token mask and eq. 5's penalty
    bl_mask = batch_spans_to_token_mask(bl_spans, off, mask)
    use_bl = "risk_blacklist" in cfg.weights and cfg.is_token_level("risk_blacklist")
    use_div = "diversity" in cfg.weights and cfg.is_token_level("diversity")
    r_token = token_penalty(
        bl_mask if use_bl else None, stats.token_mask if use_div else None, cfg.credit.lambda1, cfg.credit.lambda2, (B, L)
    )
    return BatchCredit(
        stats=stats,
        diversity_penalty=penalty,
        sentence_diversity=np.asarray(sentence_div, dtype=np.float64),
        blacklist_mask=bl_mask,
        token_penalty=r_token,
        mask=mask,
        blacklist_spans=bl_spans,
        _span_source=(list(responses), off),
    )
