"""Generate ads for an RL parquet with a Hugging Face model (batched, CPU or one GPU): the held-out
generations that ``relate_eval.evaluate`` scores (the demo, the CPU ablation, the testbed probe).

    python -m relate_eval.generate --model PATH --data VAL.parquet --n N --output GEN.jsonl
        [--temperature 1.0] [--top-p 1.0] [--max-new-tokens 128] [--batch-size 16]
        [--limit K] [--seed 0] [--dtype auto] [--device cuda|cpu] [--threads T]

Input: the verl RL parquet written by ``data_prep/build_dataset.py`` (columns ``prompt``: the
chat messages, ``reward_model.ground_truth``: the record), read by ``relate_common.rl_row``. Each prompt is rendered with the
model's chat template (generation prompt added) and sampled ``N`` times with
:func:`generate_responses` (below).

Output: JSONL, one row per (prompt, sample), in prompt order, which ``python -m reward_fns.score``
and ``python -m relate_eval.evaluate`` read directly:

* the record fields from ``reward_model.ground_truth`` (id, query, bidword, selling_points,
  language, landing_page, industry, and ``title`` / ``description`` = the record's REFERENCE ad);
* ``response``: the generated text, decoded as the reward sees it in training (special tokens
  such as the end-of-turn token dropped, nothing else stripped);
* ``sample`` (0..N-1), ``model`` (the --model path), ``seed``, ``temperature``, ``top_p``,
  ``n_tokens`` (generated tokens, stop token included) and ``finish_reason`` (``stop`` when the
  model ended its turn, ``length`` when it hit --max-new-tokens).

The same model, data, options and seed give the same file (sampling is seeded per batch, see
"Determinism"; a different --batch-size changes sampled, but not greedy, outputs).

Exit codes: 0 ok; 2 invalid input (the message names the file, the row and the field).

The library under the CLI (also imported by ``testbed.probe``). Contract::

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

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from relate_common.jsonio import write_jsonl
from relate_common.records import AdRecord, RecordError
from relate_common.rl_row import ground_truth, read_rl_parquet
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


# ---- the CLI --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m relate_eval.generate",
        description=__doc__.split("\n\n")[0] + ". Writes one JSONL row per (prompt, sample) that "
        "reward_fns.score and relate_eval.evaluate read.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hugging Face model folder (weights + tokenizer with a chat template)")
    p.add_argument("--data", required=True, help="verl RL parquet from data_prep/build_dataset.py (e.g. val.parquet)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--output", required=True, help="output JSONL path (written atomically)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=128, help="generation budget per response")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per generate() call")
    p.add_argument("--limit", type=int, default=None, help="use only the first K prompts of --data")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (results are reproducible given it)")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice); 1 is "
                   "often faster for small models on a busy machine")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


@dataclass(frozen=True)
class GenerateRun:
    """One generation job (the CLI's flags, typed; defaults as the CLI's)."""

    model: str  # Hugging Face model folder
    data: str  # verl RL parquet (data_prep/build_dataset.py)
    output: str  # JSONL written atomically
    n: int = 1  # samples per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128
    batch_size: int = 16
    limit: int | None = None  # the first K prompts only
    seed: int = 0
    dtype: str = "auto"
    device: str | None = None
    threads: int | None = None
    progress: bool = True


def output_rows(records: list[AdRecord], texts: list[list[str]], ids: list[list[list[int]]], stops: set[int],
                run: GenerateRun) -> list[dict[str, Any]]:
    """The JSONL rows (see the module docstring), prompt-major, sample-minor."""
    rows = []
    for record, sample_texts, sample_ids in zip(records, texts, ids):
        truth = ground_truth(record)
        for s, (text, tok) in enumerate(zip(sample_texts, sample_ids)):
            rows.append({
                **truth,
                "response": text,
                "sample": s,
                "model": run.model,
                "seed": run.seed,
                "temperature": run.temperature,
                "top_p": run.top_p,
                "n_tokens": len(tok),
                "finish_reason": "stop" if tok and tok[-1] in stops else "length",
            })
    return rows


def run(job: GenerateRun) -> int:
    """Generate and write ``job.output``; 0, or 2 with a message on stderr for invalid settings or input."""
    for name, ok in (("--n", job.n >= 1), ("--batch-size", job.batch_size >= 1), ("--max-new-tokens", job.max_new_tokens >= 1),
                     ("--top-p", 0 < job.top_p <= 1), ("--temperature", job.temperature >= 0),
                     ("--limit", job.limit is None or job.limit >= 1),
                     ("--threads", job.threads is None or job.threads >= 1)):
        if not ok:
            print(f"error: invalid {name}", file=sys.stderr)
            return 2
    if not Path(job.model).is_dir():
        print(f"error: --model {job.model}: not a model folder", file=sys.stderr)
        return 2
    try:
        prompts = read_rl_parquet(job.data, job.limit)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not prompts:
        print(f"error: {job.data}: no rows", file=sys.stderr)
        return 2

    from reward_fns.attribution import decode_batch_with_offsets

    if job.threads:
        torch.set_num_threads(job.threads)
    t0 = time.time()
    model, tokenizer = load_policy(job.model, dtype=job.dtype, device=job.device)
    t_load = time.time() - t0
    prompt_ids = render_prompts(tokenizer, [p.messages for p in prompts])
    t1 = time.time()
    ids = generate_responses(model, tokenizer, prompt_ids, job.n, temperature=job.temperature, top_p=job.top_p,
                             max_new_tokens=job.max_new_tokens, seed=job.seed, batch_size=job.batch_size,
                             progress=job.progress)
    t_gen = time.time() - t1
    flat = [row for per_prompt in ids for row in per_prompt]
    decoded = decode_batch_with_offsets(tokenizer, flat)
    texts, k = [], 0
    for per_prompt in ids:
        texts.append([decoded[k + s][0] for s in range(len(per_prompt))])
        k += len(per_prompt)
    stops = set(stop_token_ids(model, tokenizer))
    rows = output_rows([p.record for p in prompts], texts, ids, stops, job)
    write_jsonl(rows, job.output)
    n_tok = sum(r["n_tokens"] for r in rows)
    stopped = sum(r["finish_reason"] == "stop" for r in rows)
    print(f"model {job.model} on {next(model.parameters()).device} ({next(model.parameters()).dtype}), loaded in {t_load:.1f} s")
    print(f"generated {len(rows)} responses ({len(prompts)} prompts x {job.n}), {n_tok} tokens in {t_gen:.1f} s "
          f"({n_tok / max(t_gen, 1e-9):.1f} tok/s); {stopped} stopped, {len(rows) - stopped} hit --max-new-tokens")
    print(f"wrote {job.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    return run(GenerateRun(model=a.model, data=a.data, output=a.output, n=a.n, temperature=a.temperature,
                           top_p=a.top_p, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, limit=a.limit,
                           seed=a.seed, dtype=a.dtype, device=a.device, threads=a.threads,
                           progress=not a.no_progress))


if __name__ == "__main__":
    sys.exit(main())
