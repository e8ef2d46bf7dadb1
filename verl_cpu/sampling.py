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


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, max_len), left-padded."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if len(s):
            ids[row, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[row, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def distinct_prompts(prompts: Sequence[Sequence[int]], pad_id: int,
                     device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each distinct prompt once, left-padded: (ids, mask, positions), each (u, P), and the
    gather index (b,) giving the row of each of the ``b`` prompts. Positions follow the mask
    (cumsum - 1), as ``generate`` numbers left-padded tokens."""
    rows: dict[tuple[int, ...], int] = {}
    index = [rows.setdefault(tuple(int(t) for t in p), len(rows)) for p in prompts]
    ids, mask = left_pad(list(rows), pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, torch.as_tensor(index, dtype=torch.long, device=device)


def shared_prefill(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
                   device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(input_ids, attention_mask, cache) for ``generate`` with each distinct prompt run once.

    GRPO sends each prompt G times. The distinct prompts but their last token go through the model
    once; their keys and values are copied, one row per sequence, into a preallocated
    ``StaticCache`` with room for the response, so ``generate`` only feeds the last prompt token
    and decodes. (The default growing cache copies the whole cache at every new token: on CPU that
    copying took about half of a 96-token decode with ~650-token prompts.) Every prompt needs at
    least 2 tokens. Shapes: ids and mask (b, P), the cache (b, P + max_new_tokens) per layer.
    """
    from transformers import StaticCache

    ids, mask, positions, index = distinct_prompts(prompts, pad_id, device)
    prefix = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                   use_cache=True, logits_to_keep=1).past_key_values
    cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + int(max_new_tokens))
    for layer_idx, layer in enumerate(prefix.layers):
        cache.update(layer.keys[index], layer.values[index], layer_idx)
    return ids[index], mask[index], cache


def generation_inputs(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, max_new_tokens: int,
                      share_prompt_prefix: bool, device: Any = "cpu") -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(input_ids, attention_mask, cache or None) for ``generate``: :func:`shared_prefill` when asked
    and every prompt has the 2 tokens it needs, else the plain left-padded batch."""
    if share_prompt_prefix and min(map(len, prompts)) > 1:
        return shared_prefill(model, prompts, pad_id, max_new_tokens, device)
    return (*left_pad(prompts, pad_id, device), None)


@torch.no_grad()
def generate(model: Any, requests: Sequence[Request], eos_ids: Sequence[int], pad_id: int,
             share_prompt_prefix: bool = True) -> list[Result]:
    """Sample every request (all with the same ``SamplingParams``) in one ``generate`` call.

    Shapes: the batch is left-padded to (B, P); Hugging Face returns (B, P + T) with T the longest
    budget; each response is cut at its own ``max_tokens`` and at its first EOS. With
    ``share_prompt_prefix`` each distinct prompt is prefilled once (:func:`shared_prefill`); the
    random draws are the same either way, so are the samples up to float rounding of the logits.
    """
    if not requests:
        return []
    params = requests[0].params
    if any(r.params != params for r in requests):
        raise ValueError("one generate call takes requests with identical sampling parameters")
    budget = max(r.max_tokens for r in requests)
    ids, mask, cache = generation_inputs(model, [r.prompt_ids for r in requests], pad_id, budget, share_prompt_prefix)
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
    out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **gen_kwargs)
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
