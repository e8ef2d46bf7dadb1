"""Benchmark: the model passes of one local-mode step, with and without shared prompt prefixes.

    python benchmarks/bench_local_step.py                      # SmolLM2, the demo's step: 4 prompts x G=4, 96 tokens
    python benchmarks/bench_local_step.py --model /path/to/hf_model --prompts 2 --n 4 --max-new-tokens 32

One RELATE step of ``make demo`` spends its time in three model passes over 4 prompts x G=4
responses: the rollout (HF generate), the no-grad log-probs (old policy, and again for the KL
reference) and the forward + backward of the update. Each prompt of the demo's data is ~300-650
SmolLM2 tokens and each response <= 96, so most of that work recomputes the same prompt G times.
``local.share_prompt_prefix`` (default true) runs each distinct prompt once per pass, and decodes
into a preallocated cache instead of the growing one that ``generate`` copies at every token.

For each layout this script times the three passes on the same prompts (the first train rows of
the bundled records' RL dataset, Chinese and English, as the demo reads them), with the trainer's
own functions and micro-batch sizes from ``relate_local.yaml``, and prints the times and the ratio
shared / plain of each pass and of their sum (old log-probs counted twice, as the step also runs
the reference). It also checks that the two layouts give the same samples and log-probs to float
rounding, and exits 1 when they do not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="smollm2 (default) or a Hugging Face causal-LM folder")
    p.add_argument("--prompts", type=int, default=4, help="distinct prompts per step (demo: 4)")
    p.add_argument("--n", type=int, default=4, help="responses per prompt, G (demo: 4)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="response budget (demo: 96)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from data_prep import build_dataset
    from recipe.relate.local_rollout import generate_responses, load_policy, padding_id, render_prompts
    from recipe.relate.local_trainer import (
        chunks,
        compose_config,
        pack_sequences,
        pack_shared,
        read_rl_rows,
        response_log_probs,
    )
    from relate_common.assets import smollm2_model_dir

    cfg = compose_config([])
    lp_micro = int(cfg.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu)
    update_micro = int(cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu)
    path = str(smollm2_model_dir()) if args.model == "smollm2" else args.model
    model, tok = load_policy(path, dtype="float32", device="cpu")
    pad_id = padding_id(model, tok)
    with tempfile.TemporaryDirectory() as tmp:
        build_dataset.main(["--output-dir", tmp])
        rows = read_rl_rows(str(Path(tmp) / "train.parquet"), "prompt", args.prompts)
    prompt_ids = render_prompts(tok, [m for _, m in rows])
    print(f"model {path}; {len(prompt_ids)} prompts of {[len(q) for q in prompt_ids]} tokens x G={args.n}, "
          f"{args.max_new_tokens} new tokens; log-prob micro-batch {lp_micro}, update micro-batch {update_micro}; "
          f"torch threads {torch.get_num_threads()}")

    times: dict[bool, dict[str, float]] = {}
    outputs: dict[bool, tuple] = {}
    for share in (False, True):
        t = time.perf_counter()
        generated = generate_responses(model, tok, prompt_ids, args.n, temperature=1.0, top_p=1.0,
                                       max_new_tokens=args.max_new_tokens, seed=args.seed, share_prompt_prefix=share)
        t_gen = time.perf_counter() - t
        prompts = [q for q in prompt_ids for _ in range(args.n)]
        responses = [r for group in generated for r in group]
        pack = pack_shared if share else pack_sequences
        t = time.perf_counter()
        log_probs = []
        with torch.no_grad():
            for idx in chunks(range(len(prompts)), lp_micro):
                packed = pack([prompts[i] for i in idx], [responses[i] for i in idx], pad_id)
                lp, _ = response_log_probs(model, packed, 1.0, with_entropy=True)
                log_probs.extend(row[mask.bool()] for row, mask in zip(lp, packed.response_mask))
        t_lp = time.perf_counter() - t
        model.train()
        t = time.perf_counter()
        for idx in chunks(range(len(prompts)), update_micro):  # prompt-major: one group per micro-batch at G=4
            packed = pack([prompts[i] for i in idx], [responses[i] for i in idx], pad_id)
            lp, _ = response_log_probs(model, packed, 1.0)
            (lp * packed.response_mask).sum().backward()
        t_update = time.perf_counter() - t
        model.zero_grad(set_to_none=True)
        model.eval()
        times[share] = {"generate": t_gen, "log-probs (old; ref costs the same)": t_lp, "forward+backward": t_update,
                        "step's model passes": t_gen + 2 * t_lp + t_update}
        outputs[share] = (generated, log_probs)
        print(f"share_prompt_prefix={str(share).lower():5s} " + ", ".join(f"{k} {v:.1f} s" for k, v in times[share].items()))

    print(f"\n{'pass':40s} {'plain s':>9s} {'shared s':>9s} {'shared/plain':>13s}")
    for key in times[False]:
        a, b = times[False][key], times[True][key]
        print(f"{key:40s} {a:9.1f} {b:9.1f} {b / a:13.2f}")
    same_samples = outputs[False][0] == outputs[True][0]
    diff = max(float((a - b).abs().max()) for a, b in zip(outputs[False][1], outputs[True][1])) if same_samples else float("nan")
    print(f"\nsame samples: {same_samples}; max |log-prob plain - shared|: {diff:.2e}")
    return 0 if same_samples and diff < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
