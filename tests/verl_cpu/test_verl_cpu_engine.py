"""The CPU engine's response-window scoring (verl_cpu.response_window) against verl's own dense path.

Both run the body of verl's ``FSDPEngineWithLMHead.forward_step`` (``prepare_model_inputs``, the
model, ``prepare_model_outputs``; transformer_impl.py:1549-1568, less the move to the accelerator)
on the same micro-batch, built the way verl
builds it (``left_right_2_no_padding`` of a rollout batch: prompts left-padded, responses
right-padded), with prompts and responses of different lengths on a random Llama where attention
and rotary positions matter. What verl's RL path reads (the response window, through verl's own
``no_padding_2_padding`` and ``response_from_nested``) must be the same, gradients included.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import NonTensorData, NonTensorStack, TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.config.engine import FSDPEngineConfig
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding, response_from_nested

from verl_cpu.engine import CPUFSDPEngineWithLMHead

PAD = 0
PROMPT_LENS = (9, 3, 14, 6)
RESPONSE_LENS = (5, 11, 1, 8)


def engine(cls, model):
    """The engine's forward path on ``model`` without FSDP (what forward_step reads of ``self``)."""
    eng = object.__new__(cls)
    eng.module, eng.engine_config = model, FSDPEngineConfig(strategy="fsdp2")
    eng.pad_to_length, eng.use_ulysses_sp, eng._autocast_dtype = False, False, torch.float32
    return eng


def rollout_batch(nested_text: bool) -> TensorDict:
    """A rollout batch as verl's agent loop hands it over, then verl's conversion to no-padding.
    ``nested_text``: prompts/responses nested, as the v1 trainer's TransferQueue holds them."""
    g = torch.Generator().manual_seed(3)
    width_p, width_r = max(PROMPT_LENS), max(RESPONSE_LENS)
    prompts = torch.full((len(PROMPT_LENS), width_p), PAD)
    responses = torch.full((len(PROMPT_LENS), width_r), PAD)
    mask = torch.zeros(len(PROMPT_LENS), width_p + width_r, dtype=torch.int64)
    for i, (p, r) in enumerate(zip(PROMPT_LENS, RESPONSE_LENS)):
        prompts[i, width_p - p:] = torch.randint(5, 2000, (p,), generator=g)
        responses[i, :r] = torch.randint(5, 2000, (r,), generator=g)
        mask[i, width_p - p:width_p + r] = 1
    batch = TensorDict({"prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], 1),
                        "attention_mask": mask, "response_mask": mask[:, width_p:],
                        "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}, batch_size=len(PROMPT_LENS))
    batch = left_right_2_no_padding(batch)
    # every text batch of verl's agent loop carries one empty dict of multi-modal inputs per row
    batch["multi_modal_inputs"] = NonTensorStack(*[NonTensorData({}) for _ in PROMPT_LENS])
    if nested_text:
        batch["prompts"] = torch.nested.as_nested_tensor([prompts[i, width_p - p:] for i, p in enumerate(PROMPT_LENS)],
                                                         layout=torch.jagged)
        batch["responses"] = torch.nested.as_nested_tensor([responses[i, :r] for i, r in enumerate(RESPONSE_LENS)],
                                                           layout=torch.jagged)
        batch["response_mask"] = torch.nested.as_nested_tensor(
            [torch.ones(r, dtype=torch.int64) for r in RESPONSE_LENS], layout=torch.jagged)
        del batch["attention_mask"]
    tu.assign_non_tensor(batch, use_remove_padding=False, calculate_entropy=True, pad_token_id=PAD)
    return batch


def response_part(values, batch: TensorDict, nested_text: bool) -> torch.Tensor:
    if nested_text:
        return torch.cat(response_from_nested(values, batch["response_mask"]).unbind())
    return no_padding_2_padding(values, batch)[batch["response_mask"].bool()]


def forward(cls, model, batch) -> dict:
    """forward_step's body (transformer_impl.py:1552-1568) on the host: the engine's model outputs."""
    eng = engine(cls, model)
    inputs, args = eng.prepare_model_inputs(batch)
    return eng.prepare_model_outputs(model(**inputs, use_cache=False), args, batch, None)


def scored(cls, model, batch, nested_text):
    """(log-probs, entropies, gradient of a weighted log-prob sum) over the response tokens."""
    model.zero_grad()
    out = forward(cls, model, batch)
    log_probs = response_part(out["log_probs"], batch, nested_text)
    weights = torch.linspace(-1.0, 2.0, log_probs.numel())
    (log_probs * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return log_probs.detach(), response_part(out["entropy"], batch, nested_text).detach(), grads


@pytest.mark.parametrize("temperature", [1.0, 0.7, "per_row"])
@pytest.mark.parametrize("nested_text", [False, True], ids=["padded_text", "nested_text"])
def test_response_window_equals_verls_dense_path(sharp_model, temperature, nested_text):
    batch = rollout_batch(nested_text)
    if temperature == "per_row":
        batch["temperature"] = torch.tensor([0.6, 1.0, 1.3, 0.9])
    else:
        tu.assign_non_tensor(batch, temperature=temperature)
    ours, theirs = scored(CPUFSDPEngineWithLMHead, sharp_model, batch, nested_text), scored(
        FSDPEngineWithLMHead, sharp_model, batch, nested_text)
    assert ours[0].numel() == sum(RESPONSE_LENS)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=2e-5)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=2e-5)
    for name, grad in theirs[2].items():
        torch.testing.assert_close(ours[2][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_lm_head_computes_the_response_columns_only(sharp_model):
    batch = rollout_batch(nested_text=True)
    tu.assign_non_tensor(batch, temperature=1.0)
    seen = []
    hook = sharp_model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        with torch.no_grad():
            ours, theirs = (forward(cls, sharp_model, batch) for cls in (CPUFSDPEngineWithLMHead, FSDPEngineWithLMHead))
    finally:
        hook.remove()
    rows, width = len(PROMPT_LENS), max(p + r for p, r in zip(PROMPT_LENS, RESPONSE_LENS))
    assert seen == [(rows, max(RESPONSE_LENS) + 1, 64), (rows, width, 64)]
    for key in ("log_probs", "entropy"):
        torch.testing.assert_close(response_part(ours[key], batch, True), response_part(theirs[key], batch, True),
                                   rtol=0, atol=2e-5)


def test_a_batch_without_responses_takes_verls_path(sharp_model):
    """An SFT batch reads every position (loss_mask): verl's own full-sequence outputs."""
    batch = rollout_batch(nested_text=True)
    del batch["responses"], batch["prompts"]
    tu.assign_non_tensor(batch, temperature=1.0)
    with torch.no_grad():
        ours, theirs = (forward(cls, sharp_model, batch)["log_probs"] for cls in (CPUFSDPEngineWithLMHead, FSDPEngineWithLMHead))
    torch.testing.assert_close(ours.values(), theirs.values(), rtol=0, atol=0)
    assert ours.values().numel() == sum(PROMPT_LENS) + sum(RESPONSE_LENS)
