"""RelateRewardManager through verl's own loader, on a DataProto built with the real tokenizer from
a parquet row produced by data_prep and read by verl's RLHFDataset."""

from __future__ import annotations

import math

import pytest

from relate_common.ad_format import render_ad
from tests.fixtures import data_proto, relate_config

from tests.fixtures import REPO


@pytest.fixture(scope="module")
def rows(pipeline_dir, tokenizer):
    """Items of verl's RLHFDataset over our val.parquet."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create({"max_prompt_length": 4096, "filter_overlong_prompts": False,
                               "cache_dir": str(pipeline_dir / "verl-cache")})
    dataset = RLHFDataset(str(pipeline_dir / "dataset" / "val.parquet"), tokenizer, config)
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="module")
def manager(pipeline_dir, tokenizer_dir, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    from recipe.relate.reward_manager import RelateRewardManager

    RelateRewardManager._class_initialized = False  # fresh class state for this config
    mgr = load_reward_manager(relate_config("relate", tokenizer_dir, pipeline_dir / "ctcvr_model"), tokenizer)
    assert type(mgr) is RelateRewardManager
    return mgr


def run(mgr, data):
    return mgr.loop.run_until_complete(mgr.run_single(data))


def test_run_single_matches_the_reward_fns_code_path(manager, rows, tokenizer, pipeline_dir):
    from ctcvr_model.scorer import CTCVRScorer
    from relate_common.ad_format import parse_ad
    from reward_fns import RewardContext, decode_with_offsets, score_samples

    from recipe.relate.scoring import record_from_ground_truth
    from reward_fns.ctcvr import scorer_item

    item = rows[0]
    record = record_from_ground_truth(item["reward_model"]["ground_truth"])
    text = render_ad(record.title, record.description, record.language)
    out = run(manager, data_proto(item, text, tokenizer))

    # Independently: the same text scored by reward_fns with the scorer's batch API.
    scorer = CTCVRScorer.load(pipeline_dir / "ctcvr_model", device="cpu")
    parsed = parse_ad(text)
    _, (pred, ref) = scorer.score([scorer_item(record, parsed.title, parsed.description),
                                   scorer_item(record, record.title, record.description)])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    decoded, offsets = decode_with_offsets(tokenizer, ids)
    assert decoded == text
    expected = score_samples([record], [text], RewardContext.build(manager.reward_config, tokenizer=tokenizer),
                             offsets=[offsets], predicted_ctcvr=[pred], reference_ctcvr=[ref])[0]
    assert out["reward_score"] == pytest.approx(expected.sentence_reward, abs=1e-6)
    extra = out["reward_extra_info"]
    assert all(isinstance(v, float) for v in extra.values())  # verl stacks them with np.array
    assert extra["reward_ctcvr"] == pytest.approx(0.5, abs=1e-6)  # the reference ad against itself
    assert extra["predicted_ctcvr"] == pytest.approx(pred, rel=1e-6)
    assert extra["reward_format"] == 1.0 and extra["reward_length"] > 0
    assert math.isnan(extra["reward_diversity"])  # batch-level: the trainer's job


def test_concurrent_calls_agree_with_sequential_ones(manager, rows, tokenizer):
    import asyncio

    from recipe.relate.scoring import record_from_ground_truth

    datas = []
    for item in rows[:8]:
        rec = record_from_ground_truth(item["reward_model"]["ground_truth"])
        datas.append(data_proto(item, render_ad(rec.title, rec.description, rec.language), tokenizer))
    sequential = [run(manager, d)["reward_score"] for d in datas]
    concurrent = manager.loop.run_until_complete(asyncio.gather(*(manager.run_single(d) for d in datas)))
    # equal up to the encoder's float noise across batch compositions (~1e-7 relative)
    assert [c["reward_score"] for c in concurrent] == pytest.approx(sequential, abs=1e-5)


def test_blacklisted_and_malformed_responses_score_lower(manager, rows, tokenizer):
    from recipe.relate.scoring import record_from_ground_truth

    item = next(r for r in rows if r["reward_model"]["ground_truth"]["language"] == "en")
    rec = record_from_ground_truth(item["reward_model"]["ground_truth"])
    clean = run(manager, data_proto(item, render_ad(rec.title, rec.description, "en"), tokenizer))
    risky = run(manager, data_proto(item, render_ad("The Best " + rec.title, rec.description + " Guaranteed results.", "en"), tokenizer))
    broken = run(manager, data_proto(item, "Sure! Here is an ad: " + rec.title, tokenizer))
    empty = run(manager, data_proto(item, "", tokenizer))
    assert risky["reward_extra_info"]["compliant"] == 0.0 and clean["reward_extra_info"]["compliant"] == 1.0
    assert risky["reward_extra_info"]["reward_risk_blacklist"] < 1.0
    assert broken["reward_score"] < clean["reward_score"] and empty["reward_score"] < clean["reward_score"]
    assert broken["reward_extra_info"]["reward_format"] < 1.0


def test_presets_with_ctcvr_need_a_model_dir(tokenizer_dir, tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    from recipe.relate.reward_manager import RelateRewardManager

    RelateRewardManager._class_initialized = False
    try:
        with pytest.raises(ValueError, match="relate.ctcvr_model_dir"):
            load_reward_manager(relate_config("model2", tokenizer_dir, prepare=False), tokenizer)
    finally:
        RelateRewardManager._class_initialized = False


def test_log_components_all_logs_every_component_and_keeps_the_preset_reward(pipeline_dir, rows, tokenizer_dir,
                                                                             tokenizer):
    """Model 1 rewards structure only; with relate.log_components=all (the CPU ablation's Figure 3) its
    samples also log CTCVR and semantic quality, and the reward stays length + format."""
    from verl.trainer.ppo.reward import load_reward_manager

    from recipe.relate.reward_manager import RelateRewardManager
    from recipe.relate.scoring import record_from_ground_truth

    item = rows[0]
    rec = record_from_ground_truth(item["reward_model"]["ground_truth"])
    data = data_proto(item, render_ad(rec.title, rec.description, rec.language), tokenizer)
    outs = {}
    try:
        for mode in ("active", "all"):
            RelateRewardManager._class_initialized = False
            mgr = load_reward_manager(relate_config("model1", tokenizer_dir, pipeline_dir / "ctcvr_model",
                                              extra=(f"relate.log_components={mode}",)), tokenizer)
            outs[mode] = run(mgr, data)
    finally:
        RelateRewardManager._class_initialized = False
    active, full = outs["active"]["reward_extra_info"], outs["all"]["reward_extra_info"]
    for c in ("ctcvr", "relevance", "correctness", "risk_blacklist"):
        assert math.isnan(active[f"reward_{c}"]) and math.isfinite(full[f"reward_{c}"]), c
    assert full["reward_ctcvr"] == pytest.approx(0.5, abs=1e-6)  # the reference ad against itself
    assert outs["all"]["reward_score"] == outs["active"]["reward_score"] == pytest.approx(
        full["reward_length"] + full["reward_format"])
    with pytest.raises(ValueError, match="log_components"):
        load_reward_manager(relate_config("model1", tokenizer_dir, extra=("relate.log_components=all",), prepare=False),
                            tokenizer)
    RelateRewardManager._class_initialized = False


def test_reward_threads_set_the_workers_compute_threads(tokenizer_dir):
    """relate.reward_threads in a process started as Ray starts a reward-loop worker (OMP_NUM_THREADS=1,
    ray/_private/utils.py:256-271): init_class raises torch's and the BLAS pools' threads to it."""
    import json
    import os
    import subprocess
    import sys

    probe = f'''
import json, torch, threadpoolctl
from hydra import compose, initialize_config_dir
from recipe.relate.reward_manager import RelateRewardManager
from transformers import AutoTokenizer
before = [torch.get_num_threads(), sorted({{p["num_threads"] for p in threadpoolctl.threadpool_info()}})]
with initialize_config_dir(config_dir="{REPO / 'recipe/relate/config'}", version_base=None):
    config = compose(config_name="relate_trainer", overrides=["relate.preset=model1", "relate.reward_threads=3"])
RelateRewardManager.init_class(config, AutoTokenizer.from_pretrained("{tokenizer_dir}"))
print(json.dumps({{"before": before, "after": [torch.get_num_threads(),
                  sorted({{p["num_threads"] for p in threadpoolctl.threadpool_info()}})]}}))
'''
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == [1, [1]] and got["after"] == [3, [3]]
