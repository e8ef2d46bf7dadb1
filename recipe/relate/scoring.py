"""The two RELATE scoring steps of the verl run (no second implementation anywhere).

* ``SentenceScorer``: the sentence-level reward of responses given as token ids (decode with
  offsets, CTCVR prediction for the response and the record's reference ad, optional LLM judge,
  ``reward_fns.score_samples``). verl's reward manager calls ``score_one`` once per sample
  (asynchronously, CTCVR micro-batched across concurrent calls).
* ``token_credit``: the batch-level step (``reward_fns.batch_credit``) on generated token ids:
  G_high statistics, sentence-level diversity for Models 3-4, r_token for RELATE.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from relate_common.ad_format import parse_ad
from relate_common.records import AdRecord
from relate_common.rl_row import parse_ground_truth
from reward_fns import (BatchCredit, RewardConfig, RewardContext, batch_credit, decode_batch_with_offsets,
                        decode_with_offsets, score_samples)
from reward_fns.judge import JudgeRequest
from reward_fns.ctcvr import reference_ad, reference_of, references_to_score, scorer_item

from recipe.relate.relate_config import RecipeConfig


def record_from_ground_truth(ground_truth: Any, index: Any = None) -> AdRecord:
    """The ``AdRecord`` that ``data_prep.build_dataset`` stored in ``reward_model.ground_truth``
    of sample ``index`` (``relate_common.rl_row.parse_ground_truth``)."""
    return parse_ground_truth(ground_truth, row=index if isinstance(index, int) else 0)


class SentenceScorer:
    """Sentence-level RELATE reward (paper eq. 2); heavy state is built once."""

    def __init__(self, recipe: RecipeConfig, reward: RewardConfig, tokenizer: Any):
        self.recipe, self.reward, self.tokenizer = recipe, reward, tokenizer
        # recipe.scorer_device (default cpu): verl's reward-loop workers reserve no GPU, and torch's own
        # default there would be cuda:0, a trainer rank's GPU (recipe/relate/preflight.py).
        self.device = recipe.scorer_device
        self.context = RewardContext.build(reward, tokenizer=tokenizer, encoder_device=self.device)
        self.ctcvr = None
        self._batcher = None
        if "ctcvr" in reward.weights or recipe.log_components == "all":
            from ctcvr_model.scorer import CTCVRScorer

            self.ctcvr = CTCVRScorer.shared(recipe.ctcvr_model_dir, device=self.device)
        self.reference_ctcvr: dict[str, float] = {}  # record id -> pCTCVR of its reference ad
        self.uses_judge = self.context.judge is not None and (reward.correctness.use_judge or reward.risk.use_judge)

    # ---- shared tail ------------------------------------------------------------------------
    def finish(self, records: Sequence[AdRecord], texts: Sequence[str], offsets: Sequence[np.ndarray],
               predicted: Sequence[float] | None, reference: Sequence[float | None] | None,
               verdicts: Sequence[Any] | None) -> list[tuple[float, dict[str, float]]]:
        """(sentence reward, scalar extra info) per response, via ``reward_fns.score_samples``."""
        scores = score_samples(records, texts, self.context, offsets=offsets, predicted_ctcvr=predicted,
                               reference_ctcvr=reference, verdicts=verdicts, compute=self.recipe.log_components)
        out = []
        for i, s in enumerate(scores):
            extra = s.extra_info()
            extra["predicted_ctcvr"] = math.nan if predicted is None else float(predicted[i])
            out.append((s.sentence_reward, extra))
        return out

    # ---- one sample, asynchronously (verl's reward loop) ------------------------------------
    async def score_one(self, record: AdRecord, response_ids: Sequence[int], loop) -> tuple[float, dict[str, float]]:
        text, offsets = await loop.run_in_executor(None, decode_with_offsets, self.tokenizer, list(response_ids))
        parsed = parse_ad(text)
        predicted = reference = None
        if self.ctcvr is not None:
            if self._batcher is None:
                self._batcher = self.ctcvr.batcher(max_batch_size=self.recipe.scorer_max_batch_size,
                                                   max_wait_ms=self.recipe.scorer_max_wait_ms)
            _, pred = await self._batcher.score_one(scorer_item(record, parsed.title, parsed.description))
            # reward_fns.ctcvr's one reference rule, one sample at a time through the micro-batcher
            for rid, rec in references_to_score([record], [False], self.reference_ctcvr).items():
                self.reference_ctcvr[rid] = float((await self._batcher.score_one(scorer_item(rec, *reference_ad(rec))))[1])
            ref = reference_of(record, pred, False, self.reference_ctcvr, self.reward.ctcvr)
            predicted, reference = [pred], [ref]
        verdicts = [await self.context.judge.ajudge(JudgeRequest.from_record(record, parsed))] if self.uses_judge else None
        result = await loop.run_in_executor(
            None, lambda: self.finish([record], [text], [offsets], predicted, reference, verdicts))
        return result[0]


def token_credit(tokenizer: Any, response_ids: Sequence[Sequence[int]], group_ids: Sequence[Hashable],
                 records: Sequence[AdRecord | Mapping[str, Any]], reward: RewardConfig,
                 response_mask: np.ndarray | None = None) -> BatchCredit:
    """``reward_fns.batch_credit`` on generated token ids (decoded here with character offsets).

    response_ids: B ragged id lists; group_ids: (B,) prompt id of each response (verl's uid);
    response_mask: (B, L) valid tokens, L >= the longest response.
    """
    ids = [list(r) for r in response_ids]
    decoded = decode_batch_with_offsets(tokenizer, ids)
    texts, offsets = [t for t, _ in decoded], [o for _, o in decoded]
    records = [record_from_ground_truth(r, i) for i, r in enumerate(records)]
    return batch_credit(texts, ids, offsets, list(group_ids), records, reward, response_mask=response_mask)
