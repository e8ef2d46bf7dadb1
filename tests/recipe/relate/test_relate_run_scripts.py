"""examples/run_relate_qwen3_8b.sh and the ablation scripts: composed through Hydra, validated by
verl's validate_config and the RELATE preflight (DRY_RUN=1) on real inputs (tests/conftest.py
gpu_run_inputs: RL parquet, trained CTCVR model, an SFT checkpoint laid out as verl writes it), the
paper's setup, and the five ablations differ only in the preset; without inputs each missing path is
named and the run exits 2. examples/run_sft_qwen3_8b.sh and run_pipeline_qwen3_8b.sh under DRY_RUN=1
likewise. The preflight's checks one by one: tests/recipe/relate/test_preflight.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from recipe.relate.main_relate import CONFIG_BEGIN, CONFIG_END
from tests.fixtures import SCRIPTS, script_env

from tests.fixtures import REPO
SECRET = "sk-test-0123456789-do-not-print"
JUDGE_VALUES = {"RELATE_JUDGE_BASE_URL": "http://judge.internal:8000/v1", "RELATE_JUDGE_API_KEY": SECRET}
MISSING = {"DATA_DIR": "/nonexistent/relate-data", "CTCVR_MODEL_DIR": "/nonexistent/ctcvr",
           "SFT_RUN_DIR": "/nonexistent/sft"}


def script_runs(inputs: dict[str, str], tiny_model_dir) -> dict[str, tuple[str, dict, list]]:
    """name -> (script, env, extra args); all run at once, each imports verl (~10 s)."""
    runs = {name: (script, dict(inputs), []) for name, script in SCRIPTS.items()}
    runs["overrides"] = (SCRIPTS["paper"], {**inputs, "MODEL_PATH": str(tiny_model_dir), "NNODES": "2",
                                            "NGPUS_PER_NODE": "4", "REWARD_THREADS": "3",
                                            "REWARD_WORKERS_PER_NODE": "5"}, ["trainer.total_training_steps=7"])
    runs["bad_key"] = (SCRIPTS["paper"], dict(inputs), ["+relate.credit.alpah=2"])
    # DATA_DIR relative: taken from the repository root (the real dataset, reached from there)
    relative = os.path.relpath(inputs["DATA_DIR"], REPO)
    runs["judge_env"] = (SCRIPTS["paper"], {**inputs, **JUDGE_VALUES, "NNODES": "2", "DATA_DIR": relative}, [])
    runs["old_batch"] = (SCRIPTS["paper"], {**inputs, "NNODES": "2"}, ["actor_rollout_ref.actor.ppo_mini_batch_size=72"])
    runs["missing"] = (SCRIPTS["paper"], dict(MISSING), [])
    runs["missing_model1"] = (SCRIPTS["model1"], dict(MISSING), [])
    return runs


def composed_config(stdout: str) -> dict:
    begin, end = stdout.index(CONFIG_BEGIN), stdout.index(CONFIG_END)
    return yaml.safe_load(stdout[begin + len(CONFIG_BEGIN):end])


@pytest.fixture(scope="module")
def runs(gpu_run_inputs, tiny_model_dir) -> dict[str, subprocess.CompletedProcess]:
    procs = {name: subprocess.Popen(["bash", script, *args], cwd=REPO, env=script_env(**env), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (script, env, args) in script_runs(gpu_run_inputs, tiny_model_dir).items()}
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


def test_paper_setup(composed, gpu_run_inputs):
    cfg = composed["paper"]
    assert cfg["data"]["train_batch_size"] == 288 and cfg["actor_rollout_ref"]["rollout"]["n"] == 5
    assert cfg["data"]["train_batch_size"] * cfg["actor_rollout_ref"]["rollout"]["n"] == 1440
    # paper: one update of the whole step ("global batch 1440")
    assert cfg["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] == 288
    # RL starts from the newest SFT checkpoint verl wrote (latest_checkpointed_iteration.txt = 3)
    sft = Path(gpu_run_inputs["SFT_RUN_DIR"])
    assert cfg["actor_rollout_ref"]["model"]["path"] == str(sft / "checkpoints/global_step_3/huggingface")
    # validation sized for the paper's scale; checkpoints kept and a transformers folder saved
    assert (cfg["data"]["val_max_samples"], cfg["data"]["seed"]) == (512, 0)
    assert (cfg["trainer"]["test_freq"], cfg["trainer"]["val_before_train"]) == (25, True)
    assert cfg["trainer"]["max_actor_ckpt_to_keep"] == 1
    assert "hf_model" in cfg["actor_rollout_ref"]["actor"]["checkpoint"]["save_contents"]
    # log folders, the relevance cache and the reward workers from the script: absolute, sized from the node
    env_vars = cfg["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert set(cfg["trainer"]["logger"]) == {"console", "tensorboard", "file"}
    assert env_vars["TENSORBOARD_DIR"] == str(REPO / "logs/relate/relate/tensorboard")
    assert env_vars["VERL_FILE_LOGGER_PATH"] == str(REPO / "logs/relate/relate/metrics.jsonl")
    assert Path(cfg["relate"]["relevance"]["cache_dir"]).is_absolute()
    # (cores - 2 per GPU) / REWARD_THREADS workers on the one node (`nproc` counts the cores this process may use)
    assert cfg["relate"]["reward_threads"] == 1
    assert cfg["reward"]["num_workers"] == max(1, len(os.sched_getaffinity(0)) - 2 * 8)
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
    assert cfg["relate"]["preset"] == "relate" and cfg["relate"]["ctcvr_model_dir"] == gpu_run_inputs["CTCVR_MODEL_DIR"]
    assert cfg["data"]["train_files"] == str(Path(gpu_run_inputs["DATA_DIR"]) / "train.parquet")
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


def test_environment_overrides_reach_the_config(runs, gpu_run_inputs, tiny_model_dir):
    proc = runs["overrides"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = composed_config(proc.stdout)
    assert cfg["actor_rollout_ref"]["model"]["path"] == str(tiny_model_dir)
    data = Path(gpu_run_inputs["DATA_DIR"])
    assert cfg["data"]["train_files"] == str(data / "train.parquet") and cfg["data"]["val_files"] == str(data / "val.parquet")
    assert cfg["relate"]["ctcvr_model_dir"] == gpu_run_inputs["CTCVR_MODEL_DIR"]
    assert (cfg["trainer"]["nnodes"], cfg["trainer"]["n_gpus_per_node"]) == (2, 4)
    assert cfg["trainer"]["total_training_steps"] == 7
    # reward workers: REWARD_WORKERS_PER_NODE x NNODES (verl places them round-robin over the nodes)
    assert (cfg["reward"]["num_workers"], cfg["relate"]["reward_threads"]) == (10, 3)


def test_missing_inputs_are_each_named_and_exit_2(runs):
    proc = runs["missing"]
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "RELATE preflight found 4 problem(s)" in proc.stderr and "not launching (exit 2)" in proc.stderr
    for line in ("data.train_files='/nonexistent/relate-data/train.parquet': no such file",
                 "data.val_files='/nonexistent/relate-data/val.parquet': no such file",
                 "relate.ctcvr_model_dir='/nonexistent/ctcvr': the directory does not exist",
                 "actor_rollout_ref.model.path='/nonexistent/sft/checkpoints/global_step_N/huggingface': no such folder"):
        assert line in proc.stderr, line
    assert "no SFT checkpoint yet (/nonexistent/sft/checkpoints/latest_checkpointed_iteration.txt is missing)" in proc.stderr
    assert "Traceback" not in proc.stderr and CONFIG_BEGIN not in proc.stdout
    # Model 1 rewards no CTCVR: its model folder is not an input
    model1 = runs["missing_model1"]
    assert model1.returncode == 2 and "RELATE preflight found 3 problem(s)" in model1.stderr
    assert "relate.ctcvr_model_dir" not in model1.stderr


def test_dry_run_prints_paths_and_forwards_judge_variables_with_the_key_masked(runs, gpu_run_inputs):
    proc = runs["judge_env"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    env_vars = composed_config(proc.stdout)["ray_kwargs"]["ray_init"]["runtime_env"]["env_vars"]
    assert env_vars == {"RELATE_JUDGE_BASE_URL": "http://judge.internal:8000/v1", "RELATE_JUDGE_API_KEY": "***",
                        "TENSORBOARD_DIR": str(REPO / "logs/relate/relate/tensorboard"),
                        "VERL_FILE_LOGGER_PATH": str(REPO / "logs/relate/relate/metrics.jsonl")}
    assert ("judge variables forwarded to Ray workers (ray_kwargs.ray_init.runtime_env.env_vars): "
            "RELATE_JUDGE_BASE_URL, RELATE_JUDGE_API_KEY (value masked)") in proc.stdout
    # A relative DATA_DIR is resolved from the repository root and printed absolute.
    assert f"relate: path data.train_files={os.path.realpath(REPO / os.path.relpath(gpu_run_inputs['DATA_DIR'], REPO))}/train.parquet" \
        in proc.stdout
    assert f"relate: path ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR={REPO / 'logs/relate/relate/tensorboard'}" \
        in proc.stdout
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


# ---- the SFT script and the whole pipeline under DRY_RUN=1 -------------------------------------------------


@pytest.fixture(scope="module")
def sft_data(pipeline_dir, tmp_path_factory):
    """The real SFT parquet of data_prep/build_sft_dataset.py on the bundled records and pipeline_dir's logs."""
    from data_prep import build_sft_dataset

    out = tmp_path_factory.mktemp("sft_data")
    build_sft_dataset.main(["--logs", str(pipeline_dir / "logs.parquet"), "--output-dir", str(out)])
    assert (out / "train.parquet").is_file() and (out / "val.parquet").is_file()
    return out


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *args], cwd=REPO, env=script_env(**env), capture_output=True, text=True,
                          timeout=600)


def test_sft_script_dry_run(sft_data, tiny_model_dir, tmp_path):
    ok = _run("examples/run_sft_qwen3_8b.sh", {"SFT_DATA": str(sft_data), "MODEL_PATH": str(tiny_model_dir),
                                               "RUN_DIR": str(tmp_path / "sft")})
    assert ok.returncode == 0, ok.stderr[-3000:]
    cfg = composed_config(ok.stdout)
    assert cfg["model"]["path"] == str(tiny_model_dir) and cfg["data"]["train_files"] == str(sft_data / "train.parquet")
    assert cfg["trainer"]["default_local_dir"] == str(tmp_path / "sft" / "checkpoints")
    assert "hf_model" in cfg["checkpoint"]["save_contents"]  # global_step_N/huggingface, RELATE's starting policy
    assert f"relate: checkpoints {tmp_path / 'sft' / 'checkpoints'}/global_step_N/huggingface" in ok.stdout
    missing = _run("examples/run_sft_qwen3_8b.sh", {"SFT_DATA": str(tmp_path / "none"), "MODEL_PATH": str(tmp_path / "m")})
    assert missing.returncode == 2, missing.stderr[-3000:]
    for line in (f"data.train_files='{tmp_path / 'none' / 'train.parquet'}': no such file",
                 f"data.val_files='{tmp_path / 'none' / 'val.parquet'}': no such file",
                 f"model.path='{tmp_path / 'm'}': no such folder"):
        assert line in missing.stderr, line


def test_pipeline_dry_run(tmp_path, tiny_model_dir):
    """A fresh WORK folder: every step to run, the SFT and RELATE configs composed and preflighted with their
    inputs pending (written by earlier steps); without the records, the run names them and exits 2."""
    work = tmp_path / "work"
    ok = _run("examples/run_pipeline_qwen3_8b.sh", {"WORK": str(work), "BASE_MODEL": str(tiny_model_dir)})
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    for name in ("impression-logs", "rl-dataset", "ctcvr-tables", "sft-dataset", "ctcvr-scorer", "generate-sft",
                 "generate-relate", "evaluate"):
        assert f"pipeline: {name}: to run" in ok.stdout, name
    assert "pipeline: sft-train: to run; its DRY_RUN:" in ok.stdout
    assert "config composed, inputs present (relate.dry_run=true): not launching" in ok.stdout  # SFT
    assert "config composed and validated, preflight passed (relate.dry_run=true): not launching" in ok.stdout  # RELATE
    assert (f"relate: input actor_rollout_ref.model.path={work}/sft/checkpoints/global_step_N/huggingface: pending"
            in ok.stdout)
    assert f"relate: input relate.ctcvr_model_dir={work}/ctcvr_model: pending" in ok.stdout
    assert "every step's config and paths check out" in ok.stdout
    assert not work.exists()  # a dry run writes nothing
    bad = _run("examples/run_pipeline_qwen3_8b.sh", {"WORK": str(work), "RECORDS": str(tmp_path / "no.jsonl"),
                                                     "BASE_MODEL": str(tmp_path / "no_model")})
    assert bad.returncode == 2, bad.stdout[-3000:] + bad.stderr[-3000:]
    assert f"pipeline: RECORDS={tmp_path / 'no.jsonl'}: no such file" in bad.stderr
    assert f"pipeline: BASE_MODEL={tmp_path / 'no_model'}: not a transformers model folder" in bad.stderr
    assert f"model.path='{tmp_path / 'no_model'}': no such folder" in bad.stderr  # the SFT step's own check
