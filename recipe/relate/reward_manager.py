"""RELATE's sentence-level reward in verl's reward loop (one sample per call, streaming).

verl's reward-loop workers call ``run_single`` once per generated response; it hands the
response ids and the record to ``scoring.SentenceScorer.score_one`` — the same scoring as local
mode and ``python -m reward_fns.score``. Batch-level terms (n-gram diversity, token penalties)
need the whole batch and are added by the RELATE trainer in its advantage step. Heavy state
(encoders, CTCVR scorer, judge client) is built once per worker process in ``init_class``, which also
sets the worker's compute threads (``relate.reward_threads``).
"""

from __future__ import annotations

from typing import Any

from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from recipe.relate.relate_config import split_relate_section
from recipe.relate.scoring import SentenceScorer, record_from_ground_truth

RELATE_REWARD_MANAGER = "relate"


def use_threads(count: int) -> None:
    """Compute with ``count`` threads in this process: torch's intra-op pool (the CTCVR net, sentence-transformers
    encoders) and the BLAS / OpenMP pools numpy uses (the USE encoder). verl starts each reward-loop worker as a
    Ray actor without num_cpus (experimental/reward_loop/reward_loop.py:308,324-340), and Ray gives such an actor
    OMP_NUM_THREADS=1 (ray/_private/utils.py:256-271) before these pools exist; ``relate.reward_threads`` raises it."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(count)
    threadpool_limits(limits=count)


@register(RELATE_REWARD_MANAGER)
class RelateRewardManager(RewardManagerBase):
    """Sentence-level RELATE reward (paper eq. 2) for one response per call."""

    def __init__(self, config, tokenizer, compute_score=None, **kwargs: Any):
        # reward_router_address / reward_model_tokenizer: verl passes them; RELATE uses no reward model.
        super().__init__(config, tokenizer, compute_score)

    @classmethod
    def init_class(cls, config, tokenizer) -> None:
        if cls._class_initialized:
            return
        recipe, reward = split_relate_section(config.get("relate"))
        if recipe.reward_threads is not None:
            use_threads(recipe.reward_threads)
        cls.reward_config = reward
        cls.scorer = SentenceScorer(recipe, reward, tokenizer)
        cls._class_initialized = True

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1]  # multi-output agent loops: score the final output, as verl's managers do
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        record = record_from_ground_truth(item.non_tensor_batch["reward_model"]["ground_truth"],
                                          item.non_tensor_batch.get("extra_info", {}).get("index"))
        reward, extra = await self.scorer.score_one(record, response_ids[:valid_length].tolist(), self.loop)
        return {"reward_score": reward, "reward_extra_info": extra}
