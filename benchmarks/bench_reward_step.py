"""Benchmark: the CPU cost of RELATE's reward for one paper-size step, and its wall time in verl's reward-loop
workers (issue 30: what a GPU node needs so that the reward never waits longer than generation).

    python benchmarks/bench_reward_step.py [--ctcvr-model DIR] [--workers W] [--threads T] [--json OUT]

The step: 288 prompts x G = 5 = 1,440 responses built from the bundled sample records
(benchmarks/bench_advantage.py ``realistic_batch``: real ads in the two-line format, shared template phrases,
blacklisted claims, a few degenerate repeats, SmolLM2's real tokenizer, cut at 256 tokens), scored with the
paper config (recipe/relate/config/relate_trainer.yaml, preset ``relate``: no judge configured, so
correctness is the offline claim check and risk_judge has no value) and a CTCVR model trained on the bundled
sample (``--ctcvr-model``; default: simulate 200k impressions, build the tables, train 5 epochs: ~1 min).

(a) per component, one thread (Ray's default in a reward-loop worker), CPU seconds for the 1,440 responses
    as verl's reward loop computes them: one sample per call (``score_samples`` with lists of one, as
    ``SentenceScorer.score_one`` calls it), after decoding each response with its token offsets; the
    CTCVR prediction in micro-batches of ``relate.scorer_max_batch_size`` (the worker's batcher), the
    reference ad's prediction once per record;
(b) the whole per-sample path, ``SentenceScorer.score_one`` awaited one sample after the other: the CPU
    seconds a step's reward costs, and per response;
(c) the batch credit step of the trainer's advantage (``scoring.token_credit`` -> ``reward_fns.batch_credit``:
    decode, G_high, eq. 4/5 penalties) on the whole batch, in the trainer process;
(d) wall time of the 1,440 responses through verl's own ``RewardLoopWorker.compute_score_batch`` (what
    ``RewardLoopManager`` runs per worker, reward_loop.py:345-353) in ``--workers`` processes started with
    OMP_NUM_THREADS=1 as Ray starts them, the paper config's ``relate.reward_threads = --threads`` applied by
    the reward manager, each worker given its 1/W of the batch (verl's agent loop picks a worker per sample
    at random, agent_loop.py:1025: the same share on average). The relevance cache is on (a fresh folder),
    as the GPU scripts set it. Worker start-up (verl import, encoders, CTCVR model) is reported apart.

Defaults: --workers and --threads as examples/run_relate_qwen3_8b.sh sizes them for this node (its cores
less 2 per GPU of an 8-GPU node, one thread each; at least 1 worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_advantage import clear_text_caches, generated_rows, realistic_batch  # noqa: E402

CONFIG_DIR = ROOT / "recipe" / "relate" / "config"
GPUS_PER_NODE = 8


def script_sizing(cores: int) -> tuple[int, int]:
    """(workers, threads) as examples/run_relate_qwen3_8b.sh sizes them on a node of ``cores`` cores."""
    threads = 1
    return max(1, (cores - 2 * GPUS_PER_NODE) // threads), threads


def paper_config(ctcvr_dir: Path, tokenizer_dir: Path, cache_dir: Path, threads: int):
    """The paper config (relate_trainer.yaml) with this machine's inputs: composed as main_relate composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="relate_trainer", overrides=[
            f"relate.ctcvr_model_dir={ctcvr_dir}", f"actor_rollout_ref.model.path={tokenizer_dir}",
            f"relate.relevance.cache_dir={cache_dir}", f"relate.reward_threads={threads}"])


def train_ctcvr(out: Path) -> Path:
    """The real pipeline on the bundled sample: simulated impressions -> CTCVR tables -> ctcvr_model.train."""
    from ctcvr_model import train as ctcvr_train
    from data_prep import build_ctcvr_table, simulate_logs

    with contextlib.redirect_stdout(io.StringIO()):
        simulate_logs.main(["--output", str(out / "logs.parquet"), "--impressions", "200000", "--aggregate",
                            "--seed", "0"])
        build_ctcvr_table.main(["--logs", str(out / "logs.parquet"), "--output-dir", str(out / "tables")])
        ctcvr_train.main(["--table", str(out / "tables" / "train.parquet"), "--val", str(out / "tables" / "val.parquet"),
                          "--output-dir", str(out / "ctcvr_model"), "--epochs", "5", "--quiet", "--device", "cpu"])
    return out / "ctcvr_model"


def cpu_wall(fn):
    """(result, CPU seconds of this process, wall seconds) of ``fn()``."""
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - t


# ---- (a), (b), (c): one process, one thread ---------------------------------------------------------------------


def components(config, tokenizer, records, rows) -> dict[str, float]:
    """(a): CPU seconds of each sentence-level component over the step, one sample per call."""
    import numpy as np
    from relate_common.ad_format import parse_ad
    from reward_fns import decode_with_offsets
    from reward_fns.compose import REWARD_COMPONENT_REGISTRY, BATCH_LEVEL_COMPONENTS, ComponentInputs
    from reward_fns.ctcvr import reference_ad, scorer_item

    from recipe.relate.relate_config import split_relate_section
    from recipe.relate.scoring import SentenceScorer, record_from_ground_truth

    recipe, reward = split_relate_section(config.relate)
    scorer = SentenceScorer(recipe, reward, tokenizer)
    recs = [record_from_ground_truth(r, i) for i, r in enumerate(records)]
    out: dict[str, float] = {}
    decoded, out["decode (token offsets)"], _ = cpu_wall(lambda: [decode_with_offsets(tokenizer, r) for r in rows])
    texts, offsets = [d[0] for d in decoded], [d[1] for d in decoded]
    parsed, out["parse_ad"], _ = cpu_wall(lambda: [parse_ad(t) for t in texts])
    size = recipe.scorer_max_batch_size

    def ctcvr():
        items = [scorer_item(r, p.title, p.description) for r, p in zip(recs, parsed)]
        pred = np.concatenate([scorer.ctcvr.score(items[i:i + size])[1] for i in range(0, len(items), size)])
        firsts = {r.id: r for r in recs}
        refs = [scorer_item(r, *reference_ad(r)) for r in firsts.values() if reference_ad(r)]
        ref = np.concatenate([scorer.ctcvr.score(refs[i:i + size])[1] for i in range(0, len(refs), size)])
        return pred, ref

    (pred, _), out["CTCVR prediction (net + its encoder)"], _ = cpu_wall(ctcvr)
    wanted = set(reward.sentence_components()) | {"risk_blacklist"}
    for name, fn in REWARD_COMPONENT_REGISTRY.items():
        if name not in wanted or name in BATCH_LEVEL_COMPONENTS:
            continue

        def one_by_one(fn=fn):
            for i in range(len(recs)):
                x = ComponentInputs([recs[i]], [texts[i]], [parsed[i]], scorer.context, {name}, [offsets[i]],
                                    [float(pred[i])], [0.01], None)
                fn(x)

        if name == "relevance":  # the encoders are loaded on first use: not a step's cost
            fn(ComponentInputs([recs[0]], [texts[0]], [parsed[0]], scorer.context, {name}, [offsets[0]], [0.0], [0.0], None))
        _, out[name], _ = cpu_wall(one_by_one)
    return out


def score_one_path(config, tokenizer, records, rows) -> tuple[float, float]:
    """(b): CPU and wall seconds of SentenceScorer.score_one over the step, one sample after the other."""
    from recipe.relate.relate_config import split_relate_section
    from recipe.relate.scoring import SentenceScorer, record_from_ground_truth

    recipe, reward = split_relate_section(config.relate)
    scorer = SentenceScorer(recipe, reward, tokenizer)
    recs = [record_from_ground_truth(r, i) for i, r in enumerate(records)]

    async def run():
        loop = asyncio.get_running_loop()
        await scorer.score_one(recs[0], rows[0], loop)  # warm: encoders loaded, batcher started
        clear_text_caches()
        c, t = time.process_time(), time.perf_counter()
        for r, ids in zip(recs, rows):
            await scorer.score_one(r, ids, loop)
        return time.process_time() - c, time.perf_counter() - t

    return asyncio.run(run())


def credit_step(config, tokenizer, records, groups, rows, mask) -> tuple[float, float]:
    """(c): CPU and wall seconds of scoring.token_credit on the whole batch (the trainer's call)."""
    from recipe.relate.relate_config import split_relate_section
    from recipe.relate.scoring import token_credit

    _, reward = split_relate_section(config.relate)
    clear_text_caches()
    _, cpu, wall = cpu_wall(lambda: token_credit(tokenizer, rows, list(groups), records, reward, response_mask=mask))
    return cpu, wall


# ---- (d): verl's RewardLoopWorker in W processes ------------------------------------------------------------------


def data_proto(records, ids, mask):
    """The DataProto verl's reward loop scores: responses, attention_mask (its response columns are the ones
    run_single reads), the record as reward_model.ground_truth, extra_info.index."""
    import numpy as np
    import torch
    from verl import DataProto

    return DataProto.from_dict(
        tensors={"responses": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask.astype("int64"))},
        non_tensors={"reward_model": np.array([{"ground_truth": r} for r in records], dtype=object),
                     "extra_info": np.array([{"index": i} for i in range(len(records))], dtype=object)})


def _worker(config_yaml: str, chunk, ready, start, results) -> None:
    """One reward-loop worker process: verl's RewardLoopWorker on the paper config, then its chunk."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config = OmegaConf.create(config_yaml)
    # One event loop for the worker's life, as a Ray async actor has: verl's worker and reward manager keep the
    # loop current at construction (RewardLoopWorker.__init__, RewardManagerBase.__init__) and run on it.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    t = time.perf_counter()
    worker = RewardLoopWorker(config)
    worker.reward_manager.init_class(config, worker.input_tokenizer)  # what its first call would do
    loop.run_until_complete(worker.compute_score_batch(chunk[:1]))  # warm: encoders loaded, batcher started
    import torch

    startup = time.perf_counter() - t
    ready.wait()
    start.wait()
    c, t = time.process_time(), time.perf_counter()
    out = loop.run_until_complete(worker.compute_score_batch(chunk))
    results.put({"startup_s": startup, "cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - t,
                 "n": len(out), "torch_threads": torch.get_num_threads(), "pid": os.getpid()})


def reward_workers(config, records, ids, mask, workers: int) -> dict:
    """(d): W worker processes, each OMP_NUM_THREADS=1 at start as Ray's actors (ray/_private/utils.py:256-271)."""
    from omegaconf import OmegaConf

    ctx = mp.get_context("spawn")
    data = data_proto(records, ids, mask)
    chunks = data.chunk(workers) if len(data) % workers == 0 else [data[i::workers] for i in range(workers)]
    ready, start, results = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1), ctx.Queue()
    yaml = OmegaConf.to_yaml(config, resolve=True)
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        procs = [ctx.Process(target=_worker, args=(yaml, chunk, ready, start, results)) for chunk in chunks]
        for p in procs:
            p.start()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    ready.wait(timeout=900)
    t = time.perf_counter()
    start.wait()
    got = [results.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join(timeout=60)
    return {"workers": workers, "wall_s": wall, "per_worker": got, "responses": sum(g["n"] for g in got)}


def main(argv: list[str] | None = None) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    default_workers, default_threads = script_sizing(cores)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ctcvr-model", default=None, help="a ctcvr_model folder (default: train one on the bundled sample)")
    p.add_argument("--workers", type=int, default=default_workers, help="reward-loop worker processes for (d)")
    p.add_argument("--threads", type=int, default=default_threads, help="relate.reward_threads of each worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-workers", action="store_true", help="only (a)-(c)")
    p.add_argument("--workers-only", action="store_true", help="only (d)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    from relate_common.assets import smollm2_tokenizer_dir

    from recipe.relate.reward_manager import use_threads

    # (a)-(c) on one thread, torch's and BLAS's, as a reward worker Ray started (OMP_NUM_THREADS=1): BLAS
    # threads left at the core count spin on the small per-sample products and inflate the CPU time.
    use_threads(1)
    records, groups, ids, mask, tok = realistic_batch(args.seed)
    rows = generated_rows(ids, mask)
    fig: dict = {"responses": len(rows), "cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        ctcvr = Path(args.ctcvr_model) if args.ctcvr_model else train_ctcvr(tmp)
        fig["ctcvr_model"] = str(ctcvr) if args.ctcvr_model else f"trained here in {time.perf_counter() - t:.0f} s"
        # A fresh relevance cache for each part: a step's response texts are new (its prompts' fields repeat).
        print(f"one step: {fig['responses']} responses (288 prompts x G=5), {cores} cores, CTCVR model "
              f"{fig['ctcvr_model']}", flush=True)
        config = paper_config(ctcvr, smollm2_tokenizer_dir(), tmp / "relevance-cache-a", args.threads)
        fig["a_component_cpu_s"] = {} if args.workers_only else components(config, tok, records, rows)
        if not args.workers_only:
            print("(a) CPU seconds, one sample per call, one thread (reward components by their registry name):")
            for name, s in fig["a_component_cpu_s"].items():
                print(f"    {name:34s} {s:7.2f} s  ({1000 * s / len(rows):6.2f} ms/response)", flush=True)
            config = paper_config(ctcvr, smollm2_tokenizer_dir(), tmp / "relevance-cache-b", args.threads)
            fig["b_score_one_cpu_s"], fig["b_score_one_wall_s"] = score_one_path(config, tok, records, rows)
            fig["b_cpu_ms_per_response"] = 1000 * fig["b_score_one_cpu_s"] / len(rows)
            print(f"(b) SentenceScorer.score_one, one sample after the other (CTCVR batches of 1): "
                  f"{fig['b_score_one_cpu_s']:.1f} CPU s ({fig['b_cpu_ms_per_response']:.1f} ms/response), "
                  f"{fig['b_score_one_wall_s']:.1f} s wall", flush=True)
            fig["c_batch_credit_cpu_s"], fig["c_batch_credit_wall_s"] = credit_step(config, tok, records, groups, rows,
                                                                                    mask)
            print(f"(c) batch credit (scoring.token_credit, trainer): {fig['c_batch_credit_cpu_s']:.2f} CPU s, "
                  f"{fig['c_batch_credit_wall_s']:.2f} s wall", flush=True)
        if not args.skip_workers:
            config = paper_config(ctcvr, smollm2_tokenizer_dir(), tmp / "relevance-cache-d", args.threads)
            fig["d"] = reward_workers(config, records, ids, mask, args.workers)
            fig["d"]["threads"] = args.threads
    if "d" in fig:
        d = fig["d"]
        per = d["per_worker"]
        print(f"(d) verl RewardLoopWorker.compute_score_batch, {d['workers']} worker(s) x {d['threads']} thread(s): "
              f"{d['responses']} responses in {d['wall_s']:.1f} s wall (workers' CPU {sum(w['cpu_s'] for w in per):.1f} s; "
              f"start-up {max(w['startup_s'] for w in per):.0f} s, not per step; torch threads "
              f"{sorted({w['torch_threads'] for w in per})})")
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=1) + "\n", encoding="utf-8")
    return fig


if __name__ == "__main__":
    main()
