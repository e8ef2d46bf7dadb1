"""Generate ads for an RL parquet with a local Hugging Face model (batched, CPU or one GPU).

    python -m recipe.relate.generate --model PATH --data VAL.parquet --n N --output GEN.jsonl
        [--temperature 1.0] [--top-p 1.0] [--max-new-tokens 128] [--batch-size 16]
        [--limit K] [--seed 0] [--dtype auto] [--device cuda|cpu] [--threads T]

Input: the verl RL parquet written by ``data_prep/build_dataset.py`` (columns ``prompt``: the
chat messages, ``reward_model.ground_truth``: the record). Each prompt is rendered with the
model's chat template (generation prompt added) and sampled ``N`` times with
``recipe.relate.local_rollout.generate_responses``.

Output: JSONL, one row per (prompt, sample), in prompt order, which ``python -m reward_fns.score``
and ``python -m recipe.relate.evaluate`` read directly:

* the record fields from ``reward_model.ground_truth`` (id, query, bidword, selling_points,
  language, landing_page, industry, and ``title`` / ``description`` = the record's REFERENCE ad);
* ``response``: the generated text, decoded as the reward sees it in training (special tokens
  such as the end-of-turn token dropped, nothing else stripped);
* ``sample`` (0..N-1), ``model`` (the --model path), ``seed``, ``temperature``, ``top_p``,
  ``n_tokens`` (generated tokens, stop token included) and ``finish_reason`` (``stop`` when the
  model ended its turn, ``length`` when it hit --max-new-tokens).

The same model, data, options and seed give the same file (sampling is seeded per batch; see
``local_rollout``; a different --batch-size changes sampled, but not greedy, outputs).

Exit codes: 0 ok; 2 invalid input (the message names the file, the row and the field).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from relate_common.jsonio import write_jsonl
from relate_common.records import AdRecord, RecordError, parse_record

GROUND_TRUTH_FIELDS = ("id", "query", "bidword", "selling_points", "language", "landing_page", "industry", "title", "description")


def build_parser() -> argparse.ArgumentParser:
    """The CLI (see the module docstring)."""
    p = argparse.ArgumentParser(
        prog="python -m recipe.relate.generate",
        description=__doc__.split("\n\n")[0] + ". Writes one JSONL row per (prompt, sample) that "
        "reward_fns.score and recipe.relate.evaluate read.",
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


def _messages(value: Any, source: str, row: int) -> list[dict[str, str]]:
    """The chat messages of one parquet row, validated."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise RecordError(source, row, "prompt", f"expected a list of chat messages, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not hasattr(m, "get") or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError(source, row, "prompt", f"message {i} needs string 'role' and 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    if not out:
        raise RecordError(source, row, "prompt", "no messages")
    return out


def read_prompts(path: str, limit: int | None = None) -> list[tuple[list[dict[str, str]], AdRecord]]:
    """(chat messages, record) per row of a verl RL parquet; RecordError names the bad row/field."""
    import pyarrow.parquet as pq

    source = str(path)
    if not Path(path).is_file():
        raise RecordError(source, 0, None, "file not found")
    try:
        table = pq.read_table(path)
    except Exception as e:  # not a parquet file
        raise RecordError(source, 0, None, f"cannot read parquet: {type(e).__name__}: {e}") from e
    for column in ("prompt", "reward_model"):
        if column not in table.column_names:
            raise RecordError(source, 0, column, "missing column (expected the RL parquet of data_prep/build_dataset.py)")
    if limit is not None:
        table = table.slice(0, max(0, limit))
    rows = table.select(["prompt", "reward_model"]).to_pylist()
    out = []
    for row_no, row in enumerate(rows, start=1):
        messages = _messages(row["prompt"], source, row_no)
        truth = (row["reward_model"] or {}).get("ground_truth")
        if not isinstance(truth, dict):
            raise RecordError(source, row_no, "reward_model.ground_truth", "missing or not a record mapping")
        try:
            record = parse_record(truth, source=source, row=row_no)
        except RecordError as e:
            raise RecordError(source, row_no, f"reward_model.ground_truth.{e.field}", e.reason) from None
        out.append((messages, record))
    return out


def output_rows(records: list[AdRecord], texts: list[list[str]], ids: list[list[list[int]]], stops: set[int],
                model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The JSONL rows (see the module docstring), prompt-major, sample-minor."""
    rows = []
    for record, sample_texts, sample_ids in zip(records, texts, ids):
        truth = {name: getattr(record, name) for name in GROUND_TRUTH_FIELDS}
        for s, (text, tok) in enumerate(zip(sample_texts, sample_ids)):
            rows.append({
                **truth,
                "response": text,
                "sample": s,
                "model": model,
                "seed": args.seed,
                "temperature": args.temperature,
                "top_p": args.top_p,
                "n_tokens": len(tok),
                "finish_reason": "stop" if tok and tok[-1] in stops else "length",
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, ok in (("--n", args.n >= 1), ("--batch-size", args.batch_size >= 1), ("--max-new-tokens", args.max_new_tokens >= 1),
                     ("--top-p", 0 < args.top_p <= 1), ("--temperature", args.temperature >= 0),
                     ("--limit", args.limit is None or args.limit >= 1),
                     ("--threads", args.threads is None or args.threads >= 1)):
        if not ok:
            print(f"error: invalid {name}", file=sys.stderr)
            return 2
    if not Path(args.model).is_dir():
        print(f"error: --model {args.model}: not a model folder", file=sys.stderr)
        return 2
    try:
        prompts = read_prompts(args.data, args.limit)
    except RecordError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not prompts:
        print(f"error: {args.data}: no rows", file=sys.stderr)
        return 2

    from reward_fns.attribution import decode_batch_with_offsets

    from recipe.relate.local_rollout import generate_responses, load_policy, render_prompts, stop_token_ids

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, tokenizer = load_policy(args.model, dtype=args.dtype, device=args.device)
    t_load = time.time() - t0
    prompt_ids = render_prompts(tokenizer, [m for m, _ in prompts])
    t1 = time.time()
    ids = generate_responses(model, tokenizer, prompt_ids, args.n, temperature=args.temperature, top_p=args.top_p,
                             max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                             progress=not args.no_progress)
    t_gen = time.time() - t1
    flat = [row for per_prompt in ids for row in per_prompt]
    decoded = decode_batch_with_offsets(tokenizer, flat)
    texts, k = [], 0
    for per_prompt in ids:
        texts.append([decoded[k + s][0] for s in range(len(per_prompt))])
        k += len(per_prompt)
    stops = set(stop_token_ids(model, tokenizer))
    rows = output_rows([r for _, r in prompts], texts, ids, stops, args.model, args)
    write_jsonl(rows, args.output)
    n_tok = sum(r["n_tokens"] for r in rows)
    stopped = sum(r["finish_reason"] == "stop" for r in rows)
    print(f"model {args.model} on {next(model.parameters()).device} ({next(model.parameters()).dtype}), loaded in {t_load:.1f} s")
    print(f"generated {len(rows)} responses ({len(prompts)} prompts x {args.n}), {n_tok} tokens in {t_gen:.1f} s "
          f"({n_tok / max(t_gen, 1e-9):.1f} tok/s); {stopped} stopped, {len(rows) - stopped} hit --max-new-tokens")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
