"""The RELATE trainer: verl's v1 sync trainer plus RELATE's batch-level credit assignment.

Only ``_compute_advantage`` changes. Before verl's own advantage step it reads the generated
``responses`` (and each sample's record) from TransferQueue, decodes them with character
offsets, and computes through ``reward_fns.batch_credit`` the batch n-gram statistics (G_high,
eq. 4) and blacklist spans mapped to tokens (eq. 5). Then, depending on the preset:

* sentence-level diversity (Models 3-4): the eq. 4 penalty is added to each response's sentence
  reward (``rm_scores`` on its last token, written back to TransferQueue), so verl's score
  metrics and GRPO see the same r_i;
* token level (RELATE): the r_token matrix is handed to the ``relate`` estimator, which returns
  A = A_sentence + alpha * r_token (eq. 7-9).

verl's KL-in-reward, rollout correction and write-back of the advantages are untouched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

from relate_common import metric_names
from relate_common.rl_row import ground_truths

from recipe.relate.relate_config import split_relate_section
from recipe.relate.relate_core_algos import RELATE_ADV_ESTIMATOR, pending_token_penalty
from recipe.relate.scoring import token_credit

RELATE_TRAINER = "relate"
_FIELDS = ["uid", "responses", "response_mask", "rm_scores", "reward_model", "extra_fields"]


def component_means(extra_fields: list[Any]) -> dict[str, float]:
    """Batch mean of every ``reward_*`` value the reward manager returned (NaN = not computed)."""
    values: dict[str, list[float]] = defaultdict(list)
    for extra in extra_fields:
        info = extra.get("reward_extra_info", {}) if isinstance(extra, dict) else {}
        for key, value in info.items():
            if key.startswith(metric_names.EXTRA_INFO_PREFIX) and value is not None and not math.isnan(float(value)):
                values[key[len(metric_names.EXTRA_INFO_PREFIX):]].append(float(value))
    return {metric_names.reward_metric(k): float(np.mean(v)) for k, v in sorted(values.items())}


def add_at_last_token(scores: torch.Tensor, lengths: torch.Tensor, delta: np.ndarray) -> torch.Tensor:
    """``scores`` (bs, L) with ``delta`` (bs,) added on each response's last token."""
    out = scores.clone()
    rows = torch.arange(out.size(0))
    out[rows, lengths - 1] += torch.as_tensor(delta, dtype=out.dtype)
    return out


# The mode verl's v1 trainer compares with: "sync" selects the synchronous replay buffer
# (trainer_base.py:153), the full generation batch (:731), no TransferQueue dump in checkpoints
# (:1004) and no persisted / re-issued prompts (:1499, :902-912); any other name gets the async
# behaviour, whatever the class.
SYNC_MODE = "sync"


@register_trainer(RELATE_TRAINER)
class RelateTrainer(PPOTrainerSync):
    """verl's sync trainer with RELATE's batch-level rewards and token-level credit assignment."""

    @property
    def trainer_mode(self) -> str:
        """Always ``"sync"``: RELATE is on-policy GRPO (paper eq. 6), whatever the registered name."""
        return SYNC_MODE

    @trainer_mode.setter
    def trainer_mode(self, name: str) -> None:
        # PPOTrainer.__init__ assigns config.trainer.v1.trainer_mode (trainer_base.py:129).
        self.registered_mode = name

    def __init__(self, config):
        # Parsed first: verl's __init__ builds the replay buffer (trainer_base.py:131), which reads it.
        self.recipe_config, self.reward_config = split_relate_section(config.get("relate"))
        super().__init__(config)
        if config.algorithm.adv_estimator != RELATE_ADV_ESTIMATOR:
            raise ValueError(
                f"trainer.v1.trainer_mode=relate needs algorithm.adv_estimator=relate, got "
                f"{config.algorithm.adv_estimator!r} (the RELATE trainer computes token penalties for that estimator)"
            )

    def _build_replay_buffer(self):
        # verl's ReplayBuffer sleeps poll_interval (default 2.0 s) between TransferQueue polls while it
        # waits for the batch (replay_buffer.py:144,409); the trainer builds it without passing one
        # (trainer_base.py:153-183), and a custom_sampler loses the batch-size arguments, so verl's
        # config cannot set it: relate.replay_poll_interval_s does (null: verl's default).
        buffer = super()._build_replay_buffer()
        interval = self.recipe_config.replay_poll_interval_s
        if interval is not None:
            buffer.poll_interval = float(interval)
        return buffer

    def relate_credit(self, batch) -> tuple[Any, dict[str, Any]]:
        """Batch credit (``reward_fns.BatchCredit``) of the responses in ``batch`` and what it read."""
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=_FIELDS)
        lengths = data["responses"].offsets().diff()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        responses = data["responses"].to_padded_tensor(padding=pad)
        mask = data["response_mask"].to_padded_tensor(padding=0).bool()
        ids = [responses[i, : lengths[i]].tolist() for i in range(len(lengths))]
        records = ground_truths(list(data["reward_model"]))
        # Non-tensor fields come back as a list-like whose type depends on the TQ backend; list()
        # normalises them (as verl does for raw_prompt).
        uids = list(data["uid"])
        credit = token_credit(self.tokenizer, ids, uids, records, self.reward_config, response_mask=mask.numpy())
        read = {"lengths": lengths, "response_mask": data["response_mask"], "rm_scores": data["rm_scores"],
                "extra_fields": list(data["extra_fields"]) if "extra_fields" in data.keys() else [],
                "width": responses.size(1)}
        return credit, read

    def _compute_advantage(self, batch, metrics: dict):
        credit, read = self.relate_credit(batch)
        lengths = read["lengths"]
        if np.any(credit.sentence_diversity != 0):  # Models 3-4: eq. 4 joins the sentence reward
            rm = read["rm_scores"].to_padded_tensor(padding=0.0)
            rm = add_at_last_token(rm, lengths, credit.sentence_diversity)
            nested = torch.nested.as_nested_tensor([rm[i, : lengths[i]] for i in range(len(lengths))], layout=torch.jagged)
            tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                            fields=TensorDict({"rm_scores": nested}, batch_size=len(batch.keys)))
        penalty = torch.zeros(len(lengths), read["width"], dtype=torch.float32)
        width = min(read["width"], credit.token_penalty.shape[1])
        penalty[:, :width] = torch.from_numpy(np.ascontiguousarray(credit.token_penalty[:, :width], dtype=np.float32))
        with pending_token_penalty(penalty, self.reward_config.credit.alpha, self.recipe_config.sentence_estimator) as handover:
            batch = super()._compute_advantage(batch, metrics)
        metrics.update(self.relate_metrics(credit, handover.token_share, read["extra_fields"]))
        return batch

    @staticmethod
    def relate_metrics(credit, token_share: float | None, extra_fields: list[Any]) -> dict[str, float]:
        """Training metrics verl does not log: components, |G_high|, penalised tokens, token share."""
        out = component_means(extra_fields)
        out[metric_names.G_HIGH_SIZE] = float(len(credit.stats.high_freq_ngrams))
        out[metric_names.DIVERSITY_SCORE_MEAN] = float(np.mean(credit.stats.diversity_score))
        out[metric_names.DIVERSITY_PENALTY_MEAN] = float(np.mean(credit.diversity_penalty))
        out[metric_names.PENALISED_TOKENS_BLACKLIST] = float(credit.blacklist_mask.sum(axis=1).mean())
        out[metric_names.PENALISED_TOKENS_DIVERSITY] = float(credit.stats.token_mask.sum(axis=1).mean())
        out[metric_names.TOKEN_ADVANTAGE_SHARE] = float(token_share or 0.0)
        return out
