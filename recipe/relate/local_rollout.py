"""Batched local generation with Hugging Face transformers (no vLLM): the rollout of local mode.

Used by the local trainer (one process, CPU or one GPU) and by ``python -m recipe.relate.generate``.
Contract::

    model, tokenizer = load_policy(path)                       # eval mode, bf16 on CUDA, fp32 on CPU
    prompt_ids = render_prompts(tokenizer, messages_list)      # chat template + generation prompt
    out = generate_responses(model, tokenizer, prompt_ids, n, temperature=1.0, top_p=1.0,
                             max_new_tokens=128, seed=0)       # out[prompt][sample] -> token ids

Sampling semantics follow verl's rollout config (vLLM): only ``temperature`` and ``top_p`` shape
the distribution (no top-k, no repetition penalty, whatever the model's generation_config says);
``temperature == 0`` means greedy decoding.

Stop tokens: the tokenizer's EOS, the model's generation_config EOS id(s) and ``<|im_end|>`` when
the vocabulary has it (the ChatML turn terminator; the GGUF-converted SmolLM2 tokenizer declares
``<|im_start|>`` as its EOS, so relying on ``eos_token`` alone would never stop at the end of a
turn). A response that stopped ends with the stop token it produced; one that hit
``max_new_tokens`` has no stop token. Responses carry no padding.

Determinism: each batch of ``batch_size`` sequences is generated under a forked RNG seeded with
``seed`` and the batch index, so results depend only on (model, prompts, n, sampling parameters,
seed, batch_size) and the caller's global RNG state is left untouched. Greedy output does not
depend on ``batch_size`` (up to floating-point ties under different padding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from verl_cpu.sampling import generation_inputs

# Per-batch seeds: seed * _SEED_STRIDE + batch index, so that seeds 0 and 1 share no batch seed.
_SEED_STRIDE = 1_000_003
CHATML_END = "<|im_end|>"


def resolve_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 otherwise; else a torch dtype name (``float16`` ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return resolved


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_policy(path: str, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a Hugging Face folder; the model in eval mode on ``device``.

    The tokenizer is set to left padding (what batched decoder-only generation needs); when it has
    no pad token, generation pads with the first stop token (padding is masked and stripped anyway).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device))
    model.to(device)
    model.eval()
    return model, tokenizer


def render_prompts(tokenizer: Any, messages_list: Sequence[Sequence[dict]],
                   chat_template_kwargs: dict | None = None) -> list[list[int]]:
    """Token ids of each chat (list of ``{"role", "content"}``) with the assistant generation prompt.

    ``chat_template_kwargs``: verl's ``data.apply_chat_template_kwargs`` (e.g. ``enable_thinking``),
    passed to ``apply_chat_template`` as verl's rollout and dataset do."""
    extra = dict(chat_template_kwargs or {})
    for key in ("tokenize", "add_generation_prompt", "return_dict", "return_tensors"):
        extra.pop(key, None)
    out = []
    for messages in messages_list:
        ids = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=True,
                                            **extra)
        if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
            ids = ids["input_ids"]
        out.append([int(i) for i in ids])
    return out


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a response (see module docstring), in a stable order, no duplicates."""
    found: list[int] = []

    def add(value: Any) -> None:
        if value is None:
            return
        for v in value if isinstance(value, (list, tuple, set)) else [value]:
            if v is not None and int(v) >= 0 and int(v) not in found:
                found.append(int(v))

    add(tokenizer.eos_token_id)
    gen_cfg = getattr(model, "generation_config", None)
    add(getattr(gen_cfg, "eos_token_id", None))
    im_end = tokenizer.convert_tokens_to_ids(CHATML_END) if CHATML_END in tokenizer.get_vocab() else None
    add(im_end)
    if not found:
        raise ValueError("the tokenizer and model declare no EOS token and the vocabulary has no <|im_end|>")
    return found


def padding_id(model: Any, tokenizer: Any) -> int:
    """The tokenizer's pad token, else the first stop token (padding is masked and stripped anyway)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(stop_token_ids(model, tokenizer)[0])


def trim_response(ids: Sequence[int], stops: Sequence[int]) -> list[int]:
    """``ids`` up to and including the first stop token (all of ``ids`` when none occurs)."""
    stop_set = set(stops)
    out = []
    for t in ids:
        out.append(int(t))
        if int(t) in stop_set:
            break
    return out


@contextlib.contextmanager
def _seeded(seed: int, device: Any) -> Iterator[None]:
    """Fork the CPU (and current CUDA device's) RNG, seed it, restore it afterwards."""
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _generation_config(model: Any, *, temperature: float, top_p: float, max_new_tokens: int,
                       stops: Sequence[int], pad_id: int) -> Any:
    """A fresh GenerationConfig with only verl's sampling knobs (nothing inherited from the model)."""
    from transformers import GenerationConfig

    greedy = temperature <= 0
    kwargs: dict[str, Any] = dict(max_new_tokens=int(max_new_tokens), eos_token_id=list(stops), pad_token_id=pad_id,
                                  do_sample=not greedy)
    if greedy:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    bos = getattr(getattr(model, "generation_config", None), "bos_token_id", None)
    if bos is not None:
        kwargs["bos_token_id"] = bos
    return GenerationConfig(**kwargs)


@torch.inference_mode()
def generate_responses(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], n: int, *,
                       temperature: float, top_p: float, max_new_tokens: int, seed: int,
                       batch_size: int = 16, share_prompt_prefix: bool = True,
                       progress: bool = False) -> list[list[list[int]]]:
    """``n`` responses per prompt: ``out[prompt][sample]`` -> response token ids (see module docstring).

    The prompt-major list of ``len(prompt_ids) * n`` sequences is cut into batches of
    ``batch_size``; each batch is left-padded and decoded by ``model.generate``. With
    ``share_prompt_prefix`` (the default) each distinct prompt of a batch is prefilled once and the
    decode writes into a preallocated cache (``verl_cpu.sampling.shared_prefill``, also the CPU
    rollout's); without it ``generate`` runs
    the whole batch with its default cache. The RNG draws are the same either way, so the samples
    are too, up to floating-point rounding of the logits.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    for i, p in enumerate(prompt_ids):
        if not len(p):
            raise ValueError(f"prompt {i} is empty")
    stops = stop_token_ids(model, tokenizer)
    pad_id = padding_id(model, tokenizer)
    gen_cfg = _generation_config(model, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                 stops=stops, pad_id=pad_id)
    device = next(model.parameters()).device
    flat = [(p, s) for p in range(len(prompt_ids)) for s in range(n)]
    out: list[list[list[int]]] = [[[] for _ in range(n)] for _ in prompt_ids]
    batches = [flat[i:i + batch_size] for i in range(0, len(flat), batch_size)]
    bar = tqdm(total=len(flat), desc="generate", unit="seq", disable=not progress)
    for b, items in enumerate(batches):
        prompts = [prompt_ids[p] for p, _ in items]
        ids, mask, cache = generation_inputs(model, prompts, pad_id, max_new_tokens, share_prompt_prefix, device)
        with _seeded(seed * _SEED_STRIDE + b, device):
            seqs = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, generation_config=gen_cfg)
        new = seqs[:, ids.shape[1]:].tolist()
        for (p, s), row in zip(items, new):
            out[p][s] = trim_response(row, stops)
        bar.update(len(items))
    bar.close()
    return out
