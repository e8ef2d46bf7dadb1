"""examples/run_relate_qwen3_8b.sh and the ablation scripts: composed through Hydra, validated by
verl's validate_config and the RELATE preflight (DRY_RUN=1), the paper's setup, and the five ablations
differ only in the preset. The preflight's checks one by one: tests/test_preflight.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recipe.relate.main_relate import CONFIG_BEGIN, CONFIG_END

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "paper": "examples/run_relate_qwen3_8b.sh",
    "model1": "examples/ablation/run_model1.sh",
    "model2": "examples/ablation/run_model2.sh",
    "model3": "examples/ablation/run_model3.sh",
    "model4": "examples/ablation/run_model4.sh",
    "relate": "examples/ablation/run_relate.sh",
}


JUDGE_ENV = ("RELATE_JUDGE_BASE_URL", "RELATE_JUDGE_MODEL", "RELATE_JUDGE_API_KEY")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PRESET", "MODEL_PATH", "DATA_DIR", "CTCVR_MODEL_DIR", "CKPT_DIR", *JUDGE_ENV)}
    env.update(PYTHON=sys.executable, DRY_RUN="1", HF_HUB_OFFLINE="1", **extra)
    return env


OVERRIDE_ENV = {"MODEL_PATH": "/models/tiny", "DATA_DIR": "/data/x", "CTCVR_MODEL_DIR": "/m/ctcvr",
                "NNODES": "2", "NGPUS_PER_NODE": "4"}
# name -> (script, extra env, extra args); all run at once, each imports verl (~10 s).
RUNS = {name: (script, {}, []) for name, script in SCRIPTS.items()}
RUNS["overrides"] = (SCRIPTS["paper"], OVERRIDE_ENV, ["trainer.total_training_steps=7"])
RUNS["bad_key"] = (SCRIPTS["paper"], {}, ["+relate.credit.alpah=2"])
SECRET = "sk-test-0123456789-do-not-print"
JUDGE_VALUES = {"RELATE_JUDGE_BASE_URL": "http://judge.internal:8000/v1", "RELATE_JUDGE_API_KEY": SECRET}
RUNS["judge_env"] = (SCRIPTS["paper"], {**JUDGE_VALUES, "NNODES": "2", "DATA_DIR": "data/elsewhere"}, [])
RUNS["old_batch"] = (SCRIPTS["paper"], {"NNODES": "2"}, ["actor_rollout_ref.actor.ppo_mini_batch_size=72"])


def composed_config(stdout: str) -> dict:
    begin, end = stdout.index(CONFIG_BEGIN), stdout.index(CONFIG_END)
    return yaml.safe_load(stdout[begin + len(CONFIG_BEGIN):end])


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    procs = {name: subprocess.Popen(["bash", script, *args], cwd=REPO, env=_env(**env), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (script, env, args) in RUNS.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


@pytest.fixture(scope="module")
def composed(runs) -> dict[str, dict]:
    out = {}
    for name in SCRIPTS:
        run = runs[name]
        assert run.returncode == 0, f"{SCRIPTS[name]} failed:\n{run.stderr[-3000:]}"
        assert "config composed and validated, preflight passed" in run.stdout
        out[name] = composed_config(run.stdout)
    return out


def test_paper_setup(composed):
    cfg = composed["paper"]
    assert cfg["data"]["train_batch_size"] == 288 and cfg["actor_rollout_ref"]["rollout"]["n"] == 5
    assert cfg["data"]["train_batch_size"] * cfg["actor_rollout_ref"]["rollout"]["n"] == 1440
    assert cfg["actor_rollout_ref"]["model"]["path"] == "Qwen/Qwen3-8B"
    assert cfg["trainer"]["n_gpus_per_node"] == 8 and cfg["trainer"]["nnodes"] == 1
    actor = cfg["actor_rollout_ref"]["actor"]
    assert actor["use_kl_loss"] is True and actor["clip_ratio"] == 0.2
    assert actor["fsdp_config"]["reshard_after_forward"] is False  # ZeRO-2 equivalent
    assert cfg["algorithm"]["adv_estimator"] == "relate"
    assert cfg["trainer"]["v1"]["trainer_mode"] == "relate"
    assert cfg["reward"]["reward_manager"] == {**cfg["reward"]["reward_manager"], "source": "importlib",
                                               "name": "RelateRewardManager"}
    assert cfg["reward"]["reward_manager"]["module"]["path"] == "pkg://recipe.relate.reward_manager"
    assert "worker_process_setup_hook" not in cfg["ray_kwargs"]["ray_init"]["runtime_env"]
    assert cfg["data"]["apply_chat_template_kwargs"] == {"enable_thinking": False}
    assert cfg["relate"]["scorer_device"] == "cpu"
    # The script makes every path absolute, from the repository root.
    assert cfg["relate"]["preset"] == "relate" and cfg["relate"]["ctcvr_model_dir"] == str(REPO / "outputs/ctcvr_model")
    assert cfg["data"]["train_files"] == str(REPO / "data/relate/train.parquet")
    assert cfg["trainer"]["default_local_dir"] == str(REPO / "checkpoints/relate/relate")


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def test_ablation_configs_differ_only_in_the_preset(composed):
    flat = {name: _flatten(composed[name]) for name in ("model1", "model2", "model3", "model4", "relate")}
    base = flat["relate"]
    for name, cfg in flat.items():
        assert cfg.keys() == base.keys()
        differing = {k for k in base if cfg[k] != base[k]}
        assert cfg["relate.preset"] == name
        # Besides the preset, only values derived from it (experiment_name: ${relate.preset}, and
        # the paths and names built from experiment_name) may differ.
        derived = {k for k in differing - {"relate.preset"} if str(cfg[k]) == name.join(str(base[k]).rsplit("relate", 1))}
        assert "trainer.experiment_name" in derived or name == "relate"
        assert differing - derived == ({"relate.preset"} if name != "relate" else set()), name
    assert flat["relate"] == _flatten(composed["paper"])


def test_environment_overrides_reach_the_config(runs):
    proc = runs["overrides"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = composed_config(proc.stdout)
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/tiny"
    assert cfg["data"]["train_files"] == "/data/x/train.parquet" and cfg["data"]["val_files"] == "/data/x/val.parquet"
    assert cfg["relate"]["ctcvr_model_dir"] == "/m/ctcvr"
    assert (cfg["trainer"]["nnodes"], cfg["trainer"]["n_gpus_per_node"]) == (2, 4)
    assert cfg["trainer"]["total_training_steps"] == 7


def test_dry_run_prints_paths_and_forwards_judge_variables_with_the_key_masked(runs):
    proc = runs["judge_env"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    env_vars = composed_config(proc.stdout)["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env_vars == {"RELATE_JUDGE_BASE_URL": "http://judge.internal:8000/v1", "RELATE_JUDGE_API_KEY": "***"}
    assert ("judge variables forwarded to Ray workers (ray_kwargs.ray_init.runtime_env.env_vars): "
            "RELATE_JUDGE_BASE_URL, RELATE_JUDGE_API_KEY (value masked)") in proc.stdout
    # A relative DATA_DIR is resolved from the repository root and printed absolute.
    assert f"relate: path data.train_files={REPO / 'data/elsewhere/train.parquet'}" in proc.stdout
    assert f"relate: path trainer.default_local_dir={REPO / 'checkpoints/relate/relate'}" in proc.stdout
    assert "judge variables forwarded to Ray workers (ray_kwargs.ray_init.runtime_env.env_vars): none" in \
        runs["paper"].stdout


def test_old_batch_size_fails_the_preflight_on_two_nodes(runs):
    proc = runs["old_batch"]
    assert proc.returncode != 0
    assert "RELATE preflight found 1 problem(s)" in proc.stderr
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=72: a mini-batch of 72 x 5 = 360 responses does not split " \
           "over 16 data-parallel ranks" in proc.stderr


def test_bad_relate_key_fails_before_launch(runs):
    proc = runs["bad_key"]
    assert proc.returncode != 0
    assert "relate.credit.alpah: unknown key" in proc.stderr
