"""The CPU rollout's sampling (verl_cpu.sampling): vLLM's semantics as verl's agent loop expects
them, and the shared prompt prefix (each distinct prompt prefilled once) changing no sample and no
log-prob. On a random Llama with unit-scale weights, where attention and rotary positions matter."""

from __future__ import annotations

import random

import pytest
import torch

from verl_cpu.sampling import Request, SamplingParams, generate, max_new_tokens, sequence_log_probs

PAD = 0


def _requests(params: SamplingParams, budgets=(12, 12, 7)) -> list[Request]:
    """Three prompts of different lengths, each sent 3 times (as GRPO's n does), shuffled."""
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (9, 4, 13)]
    reqs = [Request(p, params, b) for p, b in zip(prompts, budgets) for _ in range(3)]
    random.Random(0).shuffle(reqs)
    return reqs


def _run(model, reqs, share, seed=5, eos=(999_999,)):
    torch.manual_seed(seed)
    return generate(model, reqs, list(eos), PAD, share_prompt_prefix=share)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_shared_prefix_changes_no_sample_and_no_log_prob(sharp_model, temperature):
    reqs = _requests(SamplingParams(temperature=temperature, top_p=0.9, logprobs=True))
    plain, shared = (_run(sharp_model, reqs, share) for share in (False, True))
    assert [r.token_ids for r in shared] == [r.token_ids for r in plain]
    for a, b in zip(plain, shared):
        torch.testing.assert_close(torch.tensor(b.log_probs), torch.tensor(a.log_probs), rtol=0, atol=1e-4)
    # each response is cut at its own budget (the random model never emits the stop id)
    assert [len(r.token_ids) for r in plain] == [q.max_tokens for q in reqs]


def test_log_probs_are_the_actors_at_the_sampling_temperature(sharp_model):
    """What verl's actor recomputes as old_log_prob: teacher-forced log-probs of the sampled tokens
    under the temperature-scaled distribution (before top-p)."""
    reqs = _requests(SamplingParams(temperature=1.0, top_p=0.8, logprobs=True))
    for req, res in zip(reqs, _run(sharp_model, reqs, share=True)):
        forced = sequence_log_probs(sharp_model, req.prompt_ids + res.token_ids)[len(req.prompt_ids) - 1:]
        torch.testing.assert_close(torch.tensor(res.log_probs), torch.tensor(forced), rtol=0, atol=1e-4)


def test_a_response_ends_with_its_first_stop_token(sharp_model):
    reqs = _requests(SamplingParams(temperature=0.0))
    free = _run(sharp_model, reqs, share=True)
    stop = free[0].token_ids[3]
    stopped = _run(sharp_model, reqs, share=True, eos=(stop,))
    for f, s in zip(free, stopped):
        cut = f.token_ids.index(stop) + 1 if stop in f.token_ids else len(f.token_ids)
        assert s.token_ids == f.token_ids[:cut]  # kept, as vLLM returns it
    assert stopped[0].token_ids[-1] == stop and len(stopped[0].token_ids) <= 4
    ignore = _run(sharp_model, [Request(r.prompt_ids, SamplingParams(temperature=0.0, ignore_eos=True), r.max_tokens)
                                for r in reqs], share=True, eos=(stop,))
    assert [r.token_ids for r in ignore] == [r.token_ids for r in free]


def test_budget_follows_vllms_rule():
    # no max_tokens: min(response_length, prompt_length + response_length - len(prompt))
    assert max_new_tokens({}, prompt_len=100, prompt_length=120, response_length=96, max_model_len=216) == 96
    assert max_new_tokens({}, prompt_len=150, prompt_length=120, response_length=96, max_model_len=512) == 66
    assert max_new_tokens({"max_tokens": 10}, 100, 120, 96, 216) == 10
    assert max_new_tokens({"max_tokens": 500}, 100, 120, 96, 216) == 116  # clamped to the context
    with pytest.raises(ValueError, match="no room"):
        max_new_tokens({}, 216, 120, 96, 216)


def test_unknown_sampling_parameters_are_refused():
    assert SamplingParams.from_request({"temperature": 0.5, "top_k": -1, "max_tokens": 4}).temperature == 0.5
    with pytest.raises(ValueError, match="min_p"):
        SamplingParams.from_request({"temperature": 1.0, "min_p": 0.1})
