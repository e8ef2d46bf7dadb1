"""RELATE's sentence-level reward in verl's reward loop (one sample per call, streaming).

verl's reward-loop workers call ``run_single`` once per generated response. It decodes the
response with character offsets, asks the CTCVR scorer (micro-batched across concurrent calls)
for the response and the record's reference ad, optionally awaits the LLM judge, and runs the
preset's sentence-level components through ``reward_fns.score_samples`` — the same code path as
``python -m reward_fns.score``. Batch-level terms (n-gram diversity, token penalties) need the
whole batch and are added by the RELATE trainer in its advantage step.

Heavy state (encoders, CTCVR scorer, judge client) is built once per worker process in
``init_class``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from relate_common.ad_format import parse_ad
from relate_common.records import AdRecord, parse_record
from reward_fns import RewardContext, decode_with_offsets, score_samples
from reward_fns.judge import JudgeRequest

from recipe.relate.relate_config import split_relate_section

RELATE_REWARD_MANAGER = "relate"


def record_from_ground_truth(ground_truth: Any, index: Any = None) -> AdRecord:
    """The ``AdRecord`` that ``data_prep.build_dataset`` stored in ``reward_model.ground_truth``."""
    if not hasattr(ground_truth, "keys"):
        raise TypeError(
            f"reward_model.ground_truth of sample {index} is {type(ground_truth).__name__}, expected the record "
            "mapping written by data_prep/build_dataset.py"
        )
    raw = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in dict(ground_truth).items()}
    return parse_record(raw, source="reward_model.ground_truth", row=index if isinstance(index, int) else 0)


def scorer_item(record: AdRecord, title: str, description: str) -> dict[str, Any]:
    """What ``ctcvr_model``'s scorer reads for one (query, ad) pair."""
    return {"query": record.query, "bidword": record.bidword, "selling_points": record.selling_points,
            "title": title, "description": description}


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
        cls.recipe_config, cls.reward_config = recipe, reward
        cls.context = RewardContext.build(reward, tokenizer=tokenizer)
        cls.scorer = None
        if "ctcvr" in reward.weights:
            from ctcvr_model.scorer import CTCVRScorer

            cls.scorer = CTCVRScorer.shared(recipe.ctcvr_model_dir).batcher(
                max_batch_size=recipe.scorer_max_batch_size, max_wait_ms=recipe.scorer_max_wait_ms
            )
        cls.reference_ctcvr: dict[str, float] = {}  # record id -> predicted CTCVR of its reference ad
        cls._class_initialized = True

    async def _predicted_ctcvr(self, record: AdRecord, title: str, description: str) -> tuple[float, float | None]:
        """(response pCTCVR, reference-ad pCTCVR or None when the record has no reference ad)."""
        _, pred = await self.scorer.score_one(scorer_item(record, title, description))
        ref = self.reference_ctcvr.get(record.id)
        if ref is None and record.title and record.description:
            _, ref = await self.scorer.score_one(scorer_item(record, record.title, record.description))
            self.reference_ctcvr[record.id] = ref
        return pred, ref

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1]  # multi-output agent loops: score the final output, as verl's managers do
        response_ids = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        ids = response_ids[:valid_length].tolist()
        record = record_from_ground_truth(item.non_tensor_batch["reward_model"]["ground_truth"],
                                          item.non_tensor_batch.get("extra_info", {}).get("index"))
        text, offsets = await self.loop.run_in_executor(None, decode_with_offsets, self.tokenizer, ids)

        cfg, ctx = self.reward_config, self.context
        parsed = parse_ad(text)
        predicted = reference = None
        if self.scorer is not None:
            predicted, reference = await self._predicted_ctcvr(record, parsed.title, parsed.description)
        verdicts = None
        if ctx.judge is not None and (cfg.correctness.use_judge or cfg.risk.use_judge):
            verdicts = [await ctx.judge.ajudge(JudgeRequest.from_record(record, parsed))]

        score = await self.loop.run_in_executor(None, lambda: score_samples(
            [record], [text], ctx, offsets=[offsets],
            predicted_ctcvr=None if predicted is None else [predicted],
            reference_ctcvr=None if predicted is None else [reference],
            verdicts=verdicts,
        )[0])
        extra = score.extra_info()
        extra["predicted_ctcvr"] = math.nan if predicted is None else float(predicted)
        return {"reward_score": score.sentence_reward, "reward_extra_info": extra}
