"""RELATE reward functions (no verl import): components, composition, credit, metrics.

Components (each returns a :class:`~reward_fns.types.ComponentScore`: a value in a documented
range plus the triggers that explain it, with character spans in the original response):

==================  ======================================  ===========  =====================
component           module                                  range        paper
==================  ======================================  ===========  =====================
length              :mod:`reward_fns.length`                [0, 1]       3.3.1 length
format              :mod:`reward_fns.format`                [0, 1]       3.3.1 format
relevance           :mod:`reward_fns.relevance`             [0, 1]       3.3.1 relevance
correctness         :mod:`reward_fns.correctness` (+judge)  [0, 1]       3.3.1 correctness
risk_blacklist      :mod:`reward_fns.risk`                  [0, 1]       3.3.1 risk, eq. 5 V^black
risk_judge          :mod:`reward_fns.risk` (judge reuse)    [0, 1]       3.3.1 risk (semantic)
diversity           :mod:`reward_fns.ngram_stats`           [floor, 0]   3.3.2 eq. 4, eq. 5 G_high
ctcvr               :mod:`reward_fns.ctcvr`                 (0, 1)       3.3.3
==================  ======================================  ===========  =====================

Each is registered by name in :mod:`reward_fns.compose` (:func:`register_reward_component`,
:func:`get_reward_component`); scoring computes the wanted ones in registry order.

Call patterns (the same code serves both):

* per sample, in verl's reward-loop worker::

      ctx = RewardContext.build(cfg, tokenizer=tokenizer)           # once per worker
      s = score_samples([record], [response_text], ctx, offsets=[offsets],
                        predicted_ctcvr=[p], reference_ctcvr=[p_ref])[0]
      reward, extra = s.sentence_reward, s.values()                 # diversity excluded

* per batch, in the RELATE trainer's advantage step, on the ``responses`` token ids::

      decoded = decode_batch_with_offsets(tokenizer, ids)           # [(text, offsets)] per response
      texts, offsets = [t for t, _ in decoded], [o for _, o in decoded]
      credit = batch_credit(texts, ids, offsets, uids, records, cfg, response_mask=mask)
      rewards += credit.sentence_diversity                          # Models 3-4 (sentence-level)
      A = grpo(rewards) + cfg.credit.alpha * credit.token_penalty   # RELATE (eq. 7-9)

* offline / CLI: :func:`score_batch` (both of the above) and ``python -m reward_fns.score``.
"""

from reward_fns.attribution import decode_batch_with_offsets, decode_with_offsets, spans_to_token_mask, token_penalty
from reward_fns.compose import (
    COMPONENTS,
    BatchCredit,
    BatchScores,
    RewardContext,
    SampleScore,
    ScoredResponse,
    batch_credit,
    get_reward_component,
    register_reward_component,
    score_batch,
    score_samples,
    sentence_reward,
)
from reward_fns.config import PRESETS, ConfigError, RewardConfig, preset
from reward_fns.ngram_stats import NgramStats, batch_ngram_statistics
from reward_fns.metrics import table1, table3
from reward_fns.types import ComponentScore, Trigger

__all__ = [
    "BatchCredit",
    "BatchScores",
    "COMPONENTS",
    "ComponentScore",
    "ConfigError",
    "NgramStats",
    "PRESETS",
    "RewardConfig",
    "RewardContext",
    "SampleScore",
    "ScoredResponse",
    "Trigger",
    "batch_credit",
    "batch_ngram_statistics",
    "decode_batch_with_offsets",
    "decode_with_offsets",
    "get_reward_component",
    "preset",
    "register_reward_component",
    "score_batch",
    "score_samples",
    "sentence_reward",
    "spans_to_token_mask",
    "table1",
    "table3",
    "token_penalty",
]
