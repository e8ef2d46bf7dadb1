"""recipe/relate/relate_core_algos.py: the relate advantage estimator (paper eq. 7-9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.protocol import DataProto

from recipe.relate.relate_core_algos import (
    MissingTokenPenaltyError,
    pending_token_penalty,
    relate_advantage,
)


def hand_batch():
    """Two groups of 3 responses (one with zero reward spread), right-padded to 4 tokens."""
    lengths = torch.tensor([4, 2, 3, 3, 1, 4])
    mask = (torch.arange(4)[None, :] < lengths[:, None]).float()
    scores = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.5, 0.5])  # group b: zero std
    rewards = torch.zeros(6, 4)
    rewards[torch.arange(6), lengths - 1] = scores
    index = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    penalty = torch.zeros(6, 4)
    penalty[0, 1] = -1.0  # a blacklisted token
    penalty[2, 0:2] = -0.5  # two tokens of a G_high n-gram
    penalty[1, 3] = -1.0  # beyond response 1's end (length 2): must be masked out
    return rewards, mask, index, penalty


def test_matches_hand_computed_eq_9():
    rewards, mask, index, penalty = hand_batch()
    adv, ret = relate_advantage(rewards, mask, index, token_penalty=penalty, alpha=0.5, sentence_estimator="grpo")
    # group a: mean 2, std (unbiased) 1 -> sentence advantages -1, 0, 1; group b: std 0 -> 0
    sentence = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]) / (1.0 + 1e-6)
    expected = sentence[:, None] * mask
    expected[0, 1] += 0.5 * -1.0
    expected[2, 0:2] += 0.5 * -0.5
    torch.testing.assert_close(adv, expected)
    assert torch.equal(adv, ret)
    assert adv[1, 3] == 0.0 and adv[4, 1:].abs().sum() == 0.0  # padding stays zero
    # verl keeps response_mask as int64: the fractional penalties must survive it
    adv_int, _ = relate_advantage(rewards, mask.long(), index, token_penalty=penalty, alpha=0.5, sentence_estimator="grpo")
    torch.testing.assert_close(adv_int, expected)


@pytest.mark.parametrize("sentence_estimator", ["grpo", "grpo_vectorized"])
@pytest.mark.parametrize("alpha,zero_penalty", [(0.0, False), (0.7, True)])
def test_equals_verl_grpo_exactly_without_token_terms(sentence_estimator, alpha, zero_penalty):
    torch.manual_seed(0)
    bs, T = 40, 16
    lengths = torch.randint(1, T + 1, (bs,))
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    rewards = torch.zeros(bs, T)
    rewards[torch.arange(bs), lengths - 1] = torch.randn(bs)
    index = np.array([f"g{i // 5}" for i in range(bs)], dtype=object)
    penalty = torch.zeros(bs, T) if zero_penalty else -torch.rand(bs, T)
    ours, _ = relate_advantage(rewards, mask, index, token_penalty=penalty, alpha=alpha, sentence_estimator=sentence_estimator)
    verl_fn = core_algos.get_adv_estimator_fn(sentence_estimator)
    theirs, _ = verl_fn(token_level_rewards=rewards, response_mask=mask, index=index)
    assert torch.equal(ours, theirs)


def _data(rewards, mask, index):
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask})
    data.non_tensor_batch["uid"] = index
    return data


def test_through_verl_compute_advantage_with_handover_and_norm_flag_from_config():
    rewards, mask, index, penalty = hand_batch()
    config = OmegaConf.create({"norm_adv_by_std_in_grpo": False})
    with pending_token_penalty(penalty, alpha=0.5, sentence_estimator="grpo") as credit:
        out = compute_advantage(_data(rewards, mask, index), adv_estimator="relate", config=config)
    expected, _ = relate_advantage(rewards, mask, index, token_penalty=penalty, alpha=0.5,
                                   sentence_estimator="grpo", norm_adv_by_std_in_grpo=False)
    torch.testing.assert_close(out.batch["advantages"], expected)
    assert expected[0, 0] == pytest.approx(-1.0)  # Dr.GRPO: mean-centred, not std-scaled
    # sum |A_sentence| = 1*4 tokens + 0*2 + 1*3 = 7; sum |alpha r_token| = 0.5 + 0.25 + 0.25 (padding excluded)
    assert credit.token_share == pytest.approx(1.0 / (7.0 + 1.0))


def test_plain_verl_without_token_penalties_fails_clearly():
    rewards, mask, index, _ = hand_batch()
    with pytest.raises(MissingTokenPenaltyError, match="trainer.v1.trainer_mode=relate"):
        compute_advantage(_data(rewards, mask, index), adv_estimator="relate", config=OmegaConf.create({}))


def test_handover_is_consumed_once_and_shape_checked():
    rewards, mask, index, penalty = hand_batch()
    with pending_token_penalty(penalty, alpha=1.0):
        relate_advantage(rewards, mask, index)
        with pytest.raises(MissingTokenPenaltyError):  # a second call must not reuse stale penalties
            relate_advantage(rewards, mask, index)
    with pending_token_penalty(penalty[:, :3], alpha=1.0), pytest.raises(ValueError, match="shape"):
        relate_advantage(rewards, mask, index)
    with pytest.raises(ValueError, match="sentence_estimator"):
        with pending_token_penalty(penalty, alpha=1.0, sentence_estimator="gae"):
            pass
