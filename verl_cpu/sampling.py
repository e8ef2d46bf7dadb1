"""Token-in, token-out sampling with a Hugging Face causal LM (the CPU rollout's engine).

Pure functions over a model and a list of requests; the Ray server in ``verl_cpu.rollout``
batches verl's concurrent ``generate`` calls into them. Semantics follow verl's vLLM server
(``verl/workers/rollout/vllm_rollout/vllm_async_server.py:587-720``):

* ``max_tokens`` defaults to ``min(response_length, prompt_length + response_length - len(prompt))``
  and is clamped to the model's context;
* ``temperature == 0`` is greedy; ``top_k <= 0`` and ``top_p >= 1`` disable those filters
  (Hugging Face's own defaults, e.g. ``top_k=50``, are never applied);
* the response ends with the first end-of-sequence token, which is kept (as vLLM returns it);
* log-probs, when asked for, are those of the sampled tokens under the temperature-scaled
  distribution before top-k/top-p, which is what verl's actor recomputes
  (``old_log_prob``), so ``training/rollout_probs_diff_*`` compare like with like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    """The subset of verl's per-request sampling parameters a Hugging Face model can honour."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    logprobs: bool = False
    ignore_eos: bool = False

    @classmethod
    def from_request(cls, params: dict[str, Any]) -> "SamplingParams":
        """From the dict verl's agent loop sends (``agent_loop.py:590-607``); unknown keys are errors."""
        known = {"temperature", "top_p", "top_k", "repetition_penalty", "logprobs", "ignore_eos"}
        unknown = sorted(set(params) - known - {"max_tokens", "max_new_tokens"})
        if unknown:
            raise ValueError(f"the CPU rollout (verl_cpu) does not implement sampling parameters {unknown}")
        kwargs = {k: params[k] for k in known if k in params and params[k] is not None}
        kwargs["logprobs"] = bool(kwargs.get("logprobs", False))
        return cls(**kwargs)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int


@dataclass
class Result:
    token_ids: list[int]
    log_probs: list[float] | None = None
    stop_reason: str = "completed"
    extra: dict[str, Any] = field(default_factory=dict)


def max_new_tokens(sampling_params: dict[str, Any], prompt_len: int, prompt_length: int, response_length: int,
                   max_model_len: int) -> int:
    """verl's rule for the response budget of one request (``vllm_async_server.py:593-617``)."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"prompt of {prompt_len} tokens leaves no room to generate within max_model_len={max_model_len}")
    if "max_tokens" in sampling_params:
        budget = int(sampling_params["max_tokens"])
    elif "max_new_tokens" in sampling_params:
        budget = int(sampling_params["max_new_tokens"])
    else:
        budget = min(response_length, prompt_length + response_length - prompt_len)
    return max(1, min(budget, room))


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def generate(model: Any, requests: Sequence[Request], eos_ids: Sequence[int], pad_id: int) -> list[Result]:
    """Sample every request (all with the same ``SamplingParams``) in one ``generate`` call.

    Shapes: the batch is left-padded to (B, P); Hugging Face returns (B, P + T) with T the longest
    budget; each response is cut at its own ``max_tokens`` and at its first EOS.
    """
    if not requests:
        return []
    params = requests[0].params
    if any(r.params != params for r in requests):
        raise ValueError("one generate call takes requests with identical sampling parameters")
    ids, mask = _left_pad([r.prompt_ids for r in requests], pad_id)
    budget = max(r.max_tokens for r in requests)
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=budget, min_new_tokens=budget if params.ignore_eos else 0,
        do_sample=not params.greedy, num_beams=1, pad_token_id=pad_id,
        eos_token_id=None if params.ignore_eos else list(eos_ids),
        return_dict_in_generate=True, output_logits=params.logprobs,
        repetition_penalty=params.repetition_penalty,
    )
    if params.greedy:
        gen_kwargs.update(temperature=None, top_k=None, top_p=None)
    else:
        gen_kwargs.update(temperature=params.temperature, top_k=params.top_k if params.top_k > 0 else 0,
                          top_p=params.top_p if params.top_p < 1.0 else 1.0)
    out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    new = out.sequences[:, ids.shape[1]:]
    logp = None
    if params.logprobs:
        logits = torch.stack(out.logits, dim=1).float()  # (B, T, V), raw model logits
        if not params.greedy:
            logits = logits / params.temperature
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new[:, : logits.shape[1]].unsqueeze(-1)).squeeze(-1)
    eos = set(eos_ids)
    results = []
    for i, r in enumerate(requests):
        row = new[i, : r.max_tokens].tolist()
        if not params.ignore_eos:
            cut = next((t + 1 for t, tok in enumerate(row) if tok in eos), len(row))
            row = row[:cut]
        results.append(Result(token_ids=row, log_probs=None if logp is None else logp[i, : len(row)].tolist()))
    return results


@torch.no_grad()
def sequence_log_probs(model: Any, token_ids: Sequence[int]) -> list[float]:
    """Teacher-forced log-probabilities of ``token_ids[1:]`` under ``model`` (temperature 1).

    Shapes: one unpadded sequence (1, S) in, S - 1 floats out.
    """
    ids = torch.as_tensor([list(token_ids)], dtype=torch.long)
    logits = model(input_ids=ids).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1).tolist()
