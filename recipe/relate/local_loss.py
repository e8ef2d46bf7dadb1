"""The actor loss of local mode, assembled from verl's own pieces (no second implementation).

verl 0.9.1's engine path computes the PPO actor loss in ``verl.workers.utils.losses.ppo_loss``:
the policy loss registered under ``actor.policy_loss.loss_mode`` (``vanilla``: the clipped
objective of eq. 6), minus ``entropy_coeff`` times the aggregated entropy, plus ``kl_loss_coef``
times the aggregated KL estimator (``kl_penalty`` with ``kl_loss_type``, low_var_kl by default),
every term aggregated by ``agg_loss`` with ``loss_agg_mode`` over the global mini-batch
(``global_batch_info``: token count and sequence count of the whole mini-batch, so that the
micro-batch losses sum to the mini-batch loss). That function reads a TensorDict in verl's
no-padding layout; ``actor_loss`` below is the same computation on padded ``(bs, response_length)``
tensors, calling the same ``core_algos`` functions in the same order.

Log-probabilities and entropies come from ``verl.utils.torch_functional`` on logits divided by the
rollout temperature, as verl's actor does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty
from verl.utils import torch_functional as verl_F


@dataclass
class LossTerms:
    """One micro-batch's loss and its parts (scalars; ``loss`` keeps its graph)."""

    loss: torch.Tensor  # what backward() is called on
    pg_loss: float
    kl_loss: float | None  # None when actor.use_kl_loss is off
    entropy_loss: float | None  # None when no entropy was given
    pg_metrics: dict[str, float]  # actor/pg_clipfrac, actor/ppo_kl, actor/pg_clipfrac_lower (vanilla)


def actor_config(actor_section: Any, rollout_n: int) -> Any:
    """verl's ``ActorConfig`` dataclass (FSDPActorConfig for strategy fsdp) from the Hydra
    ``actor_rollout_ref.actor`` section, with ``rollout_n`` filled in as verl's worker does.

    The policy loss functions read ``clip_ratio``, ``clip_ratio_low``, ``clip_ratio_high``,
    ``clip_ratio_c``, ``policy_loss`` and ``global_batch_info`` from it; building the real
    dataclass also runs verl's own validation of the section.
    """
    from omegaconf import OmegaConf, open_dict
    from verl.utils.config import omega_conf_to_dataclass

    section = OmegaConf.create(OmegaConf.to_container(actor_section, resolve=True))
    with open_dict(section):
        section.rollout_n = int(rollout_n)
    return omega_conf_to_dataclass(section)


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                    with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probability of ``labels`` (and the entropy) under ``logits / temperature``.

    Args:
        logits: (bs, response_length, vocab) logits that predict each response token.
        labels: (bs, response_length) response token ids.
        temperature: the rollout temperature (> 0); verl scales logits by it before log-probs.
        with_entropy: also return the per-token entropy of the scaled distribution.

    Returns:
        log_probs: (bs, response_length) float32; entropy: (bs, response_length) float32 or None.
    """
    logits = logits.float() / float(temperature)
    log_probs = verl_F.logprobs_from_logits(logits, labels)
    entropy = verl_F.entropy_from_logits(logits) if with_entropy else None
    return log_probs, entropy


def actor_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    config: Any,
    *,
    ref_log_prob: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
) -> LossTerms:
    """verl's PPO actor loss of one micro-batch (``verl.workers.utils.losses.ppo_loss``).

    Args:
        log_prob: (bs, response_length) current policy log-probs (with grad).
        old_log_prob: (bs, response_length) log-probs of the policy that generated the batch.
        advantages: (bs, response_length) A(i, t) of eq. 9.
        response_mask: (bs, response_length) 1 on response tokens.
        config: verl ``ActorConfig`` (see :func:`actor_config`): loss_agg_mode, policy_loss,
            clip ratios, use_kl_loss, kl_loss_coef, kl_loss_type, entropy_coeff, loss_scale_factor.
        ref_log_prob: (bs, response_length) reference-policy log-probs; required with use_kl_loss.
        entropy: (bs, response_length) per-token entropy (with grad) when entropy_coeff != 0.
        batch_num_tokens: response tokens in the whole mini-batch (token-mean normalisation);
            None: this micro-batch is the mini-batch.
        global_batch_size: sequences in the whole mini-batch (seq-mean modes); None: likewise.

    Returns:
        :class:`LossTerms`. Summed over the micro-batches of a mini-batch, ``loss`` is the
        mini-batch loss, exactly as verl's engine accumulates it.
    """
    mask = response_mask.to(torch.bool)
    # Global batch info for agg_loss, as ppo_loss sets it (dp_size 1: one process).
    config.global_batch_info["dp_size"] = 1
    config.global_batch_info["batch_num_tokens"] = batch_num_tokens
    config.global_batch_info["global_batch_size"] = global_batch_size
    config.global_batch_info["loss_scale_factor"] = config.loss_scale_factor

    loss_mode = config.policy_loss.get("loss_mode", "vanilla")
    policy_loss_fn = get_policy_loss_fn(loss_mode)
    pg_loss, pg_metrics = policy_loss_fn(old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages,
                                         response_mask=mask, loss_agg_mode=config.loss_agg_mode, config=config,
                                         rollout_is_weights=None)
    policy_loss = pg_loss
    entropy_value = None
    if entropy is not None:
        entropy_loss = agg_loss(loss_mat=entropy, loss_mask=mask, loss_agg_mode=config.loss_agg_mode,
                                **config.global_batch_info)
        policy_loss = policy_loss - config.entropy_coeff * entropy_loss
        entropy_value = float(entropy_loss.detach())
    kl_value = None
    if config.use_kl_loss:
        if ref_log_prob is None:
            raise ValueError("actor.use_kl_loss is on but no reference log-probs were given")
        kld = kl_penalty(logprob=log_prob, ref_logprob=ref_log_prob, kl_penalty=config.kl_loss_type)
        kl_loss = agg_loss(loss_mat=kld, loss_mask=mask, loss_agg_mode=config.loss_agg_mode,
                           **config.global_batch_info)
        policy_loss = policy_loss + kl_loss * config.kl_loss_coef
        kl_value = float(kl_loss.detach())
    return LossTerms(loss=policy_loss, pg_loss=float(pg_loss.detach()), kl_loss=kl_value, entropy_loss=entropy_value,
                     pg_metrics={k: float(v) for k, v in pg_metrics.items()})
