"""RELATE's advantage estimator (paper eq. 7-9), registered in verl's estimator registry.

    A(i, t) = A_sentence(i) + alpha * r_token(i, t)          (eq. 9)
    A_sentence(i) = (r_i - mean_group) / std_group           (eq. 8, verl's GRPO)
    A_token(i, t) = alpha * r_token(i, t)                    (eq. 7)

The sentence part is delegated to one of verl's own GRPO estimators (``grpo`` or
``grpo_vectorized``, chosen by ``relate.sentence_estimator``), so its epsilon, zero-std and
singleton-group handling are verl's; with ``alpha = 0`` or an all-zero ``token_penalty`` the
result is bit-identical to that estimator.

verl hands a custom estimator only ``token_level_rewards``, ``response_mask``, ``config`` and
``index`` (verl/trainer/ppo/ray_trainer.py:250-279, compute_advantage), so the token penalties, which need the whole batch's n-gram
statistics, cannot arrive as an argument through ``compute_advantage``. The RELATE trainer
computes them and hands them over with ``pending_token_penalty`` around its call into verl's
advantage step; ``relate_advantage`` takes them from there. Called through plain verl without
that hand-over it raises instead of silently training plain GRPO.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, register_adv_est

RELATE_ADV_ESTIMATOR = "relate"
SENTENCE_ESTIMATORS = ("grpo", "grpo_vectorized")

_handover = threading.local()


class MissingTokenPenaltyError(RuntimeError):
    """The relate estimator was called without the token penalties of this batch."""


@dataclass
class TokenCredit:
    """What the trainer hands to the estimator, and what the estimator reports back."""

    token_penalty: torch.Tensor  # (bs, response_length) r_token of eq. 5
    alpha: float
    sentence_estimator: str = "grpo_vectorized"
    # Filled by relate_advantage: share of sum |A| over response tokens that came from alpha * r_token.
    token_share: float | None = None


@contextlib.contextmanager
def pending_token_penalty(token_penalty: torch.Tensor, alpha: float, sentence_estimator: str = "grpo_vectorized") -> Iterator[TokenCredit]:
    """Make ``token_penalty`` (bs, response_length) available to the next ``relate_advantage`` call
    in this thread; it is consumed by that call and cleared on exit either way. Yields the
    hand-over, whose ``token_share`` the estimator fills in."""
    if sentence_estimator not in SENTENCE_ESTIMATORS:
        raise ValueError(f"relate.sentence_estimator must be one of {SENTENCE_ESTIMATORS}, got {sentence_estimator!r}")
    credit = TokenCredit(token_penalty, float(alpha), sentence_estimator)
    _handover.value = credit
    try:
        yield credit
    finally:
        _handover.value = None


def _take_handover() -> TokenCredit:
    value = getattr(_handover, "value", None)
    if value is None:
        raise MissingTokenPenaltyError(
            "adv_estimator='relate' needs the batch's token penalties, which only the RELATE trainer computes. "
            "Run through recipe.relate.main_relate (trainer.v1.trainer_mode=relate), or pass token_penalty= "
            "directly; plain verl cannot supply them."
        )
    _handover.value = None
    return value


def token_advantage(token_penalty: torch.Tensor, response_mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 7: ``alpha * r_token``, zero outside the response.

    Args:
        token_penalty: (bs, response_length) r_token, <= 0 on penalised tokens, 0 elsewhere.
        response_mask: (bs, response_length) 1 on response tokens.
        alpha: weight of token-level feedback relative to the sentence-level advantage.

    Returns:
        (bs, response_length) float tensor.
    """
    # response_mask may be an integer tensor (verl stores it as int64): never cast the penalty to it.
    dtype = token_penalty.dtype if token_penalty.is_floating_point() else torch.float32
    return alpha * token_penalty.to(dtype) * response_mask.to(dtype)


@register_adv_est(RELATE_ADV_ESTIMATOR)
def relate_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = 1e-6,
    norm_adv_by_std_in_grpo: bool = True,
    config: Any = None,
    token_penalty: torch.Tensor | None = None,
    alpha: float | None = None,
    sentence_estimator: str = "grpo_vectorized",
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9: group-normalised sentence advantage plus alpha-weighted token penalties.

    Args:
        token_level_rewards: (bs, response_length) sentence reward r_i on the last response
            token (verl's ``rm_scores``, after any KL-in-reward), zeros elsewhere.
        response_mask: (bs, response_length).
        index: (bs,) group id (verl's ``uid``): the G responses of one prompt.
        epsilon, norm_adv_by_std_in_grpo: as in verl's GRPO.
        config: verl's ``algorithm`` config (unused; accepted for the registry's signature).
        token_penalty: (bs, response_length) r_token of eq. 5; taken from the trainer's
            ``pending_token_penalty`` hand-over when not given.
        alpha: eq. 7's weight; with the hand-over it comes from there.
        sentence_estimator: which verl GRPO computes eq. 8.

    Returns:
        advantages, returns: (bs, response_length) each (equal, as in verl's GRPO).
    """
    credit = None
    if token_penalty is None:
        credit = _take_handover()
        token_penalty, alpha, sentence_estimator = credit.token_penalty, credit.alpha, credit.sentence_estimator
    if alpha is None:
        raise ValueError("relate_advantage: alpha is required when token_penalty is given directly")
    if token_penalty.shape != response_mask.shape:
        raise ValueError(f"token_penalty shape {tuple(token_penalty.shape)} != response_mask shape {tuple(response_mask.shape)}")
    if config is not None:  # verl passes custom estimators the algorithm config, not this flag
        norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo)
    sentence_fn = get_adv_estimator_fn(sentence_estimator)
    sentence_adv, _ = sentence_fn(
        token_level_rewards=token_level_rewards, response_mask=response_mask, index=index,
        epsilon=epsilon, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo, config=config,
    )
    # One fused op: A_sentence + alpha * r_token * mask (eq. 9); the mask may be int64 in verl.
    dtype = sentence_adv.dtype
    advantages = torch.addcmul(sentence_adv, token_penalty.to(dtype), response_mask.to(dtype), value=alpha)
    if credit is not None:  # trainer path: report how much of |A| came from token terms
        token_abs = float(token_advantage(token_penalty, response_mask, alpha).abs().sum())
        total = float(sentence_adv.abs().sum()) + token_abs
        credit.token_share = token_abs / total if total > 0 else 0.0
    return advantages, advantages
