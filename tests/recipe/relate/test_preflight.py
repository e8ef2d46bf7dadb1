"""recipe/relate/preflight.py: every check passes on what the run scripts compose (1 and 2 nodes) and on
the CPU backend, and fails, naming the key and the value, when the problem it guards is reintroduced.

Configs are composed in-process with Hydra's compose API from the exact overrides each run script
passes (the scripts run under a stand-in interpreter that records its argv: bash only, no verl import).
"""

from __future__ import annotations

import copy
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipe.relate.preflight import (THINKING_KEY, PreflightError, check_batch_sizes, check_judge_env, check_paths,
                                     check_registration, check_scorer_device, check_thinking, check_trainer_mode,
                                     policy_chat_template, run_preflight)
from relate_tools.gpu_requirements import check_installed_versions
from tests.fixtures import JUDGE_ENV, SCRIPTS, script_env

from tests.fixtures import REPO
CONFIG_DIR = REPO / "recipe/relate/config"
TRL_WHEEL = Path(sys.prefix) / "wheels" / "trl-1.10.0-py3-none-any.whl"
SECRET = "sk-preflight-test-secret-value"
# The values relate_trainer.yaml had before the batch arithmetic was fixed.
OLD_BATCH = {
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 16,
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 16,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 72,
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 8,
}


@pytest.fixture(autouse=True)
def _no_judge_env(monkeypatch):
    for name in JUDGE_ENV:
        monkeypatch.delenv(name, raising=False)


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name="relate_trainer", overrides=list(overrides))


def problems_of(config, **kwargs) -> dict[str, object]:
    """{key: value} of every problem the preflight reports (empty when it passes)."""
    try:
        run_preflight(config, **kwargs)
    except PreflightError as e:
        return {p.key: p.value for p in e.problems}
    return {}


@pytest.fixture(scope="module")
def script_args(tmp_path_factory, gpu_run_inputs) -> dict[tuple[str, int], list[str]]:
    """(script, NNODES) -> the Hydra overrides the script hands to main_relate under DRY_RUN=1, on the real
    inputs of tests/conftest.py gpu_run_inputs (data, CTCVR model, the SFT checkpoint as MODEL_PATH)."""
    d = tmp_path_factory.mktemp("argv")
    fake = d / "python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n')
    fake.chmod(0o755)
    out = {}
    for name, script in SCRIPTS.items():
        for nnodes in (1, 2):
            argv = d / f"{name}-{nnodes}"
            env = {**script_env(NNODES=str(nnodes), ARGV_OUT=str(argv), **gpu_run_inputs), "PYTHON": str(fake)}
            subprocess.run(["bash", script], cwd=REPO, env=env, check=True, timeout=60)
            args = argv.read_bytes().decode().split("\0")[:-1]
            assert args[:2] == ["-m", "recipe.relate.main_relate"], args
            out[(name, nnodes)] = args[2:]
    return out


@pytest.fixture(scope="module")
def paper(script_args):
    return lambda *extra, nnodes=1: compose([*script_args[("paper", nnodes)], *extra])


# ---- every script, 1 and 2 nodes ----------------------------------------------------------------------


@pytest.mark.parametrize("nnodes", [1, 2])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_every_run_script_passes_the_preflight(script_args, name, nnodes):
    from recipe.relate.main_relate import prepare_config

    config = compose(script_args[(name, nnodes)])
    assert (config.trainer.nnodes, config.trainer.n_gpus_per_node) == (nnodes, 8)
    assert config.data.train_batch_size * config.actor_rollout_ref.rollout.n == 1440
    prepare_config(config)  # the preflight, then verl's validate_config


@pytest.mark.parametrize("nnodes", [1, 2])
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_every_run_script_fails_with_the_old_batch_sizes(script_args, name, nnodes):
    config = compose([*script_args[(name, nnodes)], *(f"{k}={v}" for k, v in OLD_BATCH.items())])
    found = problems_of(config)
    expected = {"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 16,  # 180 or 90 rows per rank
                "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 16}
    if nnodes == 1:
        expected["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"] = 8  # 360 / 8 = 45 rows per rank
    else:
        expected["actor_rollout_ref.actor.ppo_mini_batch_size"] = 72  # 360 responses over 16 ranks
    assert found == expected


@pytest.mark.parametrize("key, nnodes, message", [
    ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", 1,
     "1440 responses per step = 180 rows per rank on 8 data-parallel ranks (1 node(s) x 8): 180 is not a multiple of 16"),
    ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", 2, "90 is not a multiple of 16"),
    ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", 1,
     "a mini-batch of 1440 responses is 180 rows per rank on 8 data-parallel ranks; 180 is not a multiple of 8"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size", 2,
     "a mini-batch of 72 x 5 = 360 responses does not split over 16 data-parallel ranks"),
])
def test_each_old_batch_size_alone_is_named_with_its_arithmetic(paper, key, nnodes, message):
    config = paper(f"{key}={OLD_BATCH[key]}", nnodes=nnodes)
    problems = check_batch_sizes(config)
    assert [p.key for p in problems] == [key] and problems[0].value == OLD_BATCH[key]
    assert message in str(problems[0])
    with pytest.raises(PreflightError, match=f"{key}={OLD_BATCH[key]}: "):
        run_preflight(config)


def test_mini_batch_that_does_not_divide_the_step_is_named(paper):
    problems = check_batch_sizes(paper("actor_rollout_ref.actor.ppo_mini_batch_size=80"))
    assert problems[0].key == "actor_rollout_ref.actor.ppo_mini_batch_size" and problems[0].value == 80
    assert "1440 responses per step are not a multiple of 400" in str(problems[0])
    assert "pads every step with 160 no-op samples" in str(problems[0])
    # ... and the padded 1600 rows are 200 per rank, which the log-prob micro-batches of 15 do not divide.
    assert {p.key: p.value for p in problems[1:]} == {"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": 15,
                                                      "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 15}
    assert "(padded to 1600) = 200 rows per rank" in str(problems[1])


def test_dynamic_batch_sizes_through_verls_token_packing(paper):
    dynamic = ["actor_rollout_ref.actor.use_dynamic_bsz=true", "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true",
               "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true"]
    budgets = ["actor_rollout_ref.actor.ppo_max_token_len_per_gpu=8192",
               "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=16384",
               "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=16384"]
    assert check_batch_sizes(paper(*dynamic, *budgets, nnodes=2)) == []
    small = check_batch_sizes(paper(*dynamic, *budgets[1:], "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=1000"))
    assert [(p.key, p.value) for p in small] == [("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", 1000)]
    assert "below one full sequence of 1280 tokens" in str(small[0])
    # verl's default makes rollout.log_prob_use_dynamic_bsz follow the actor; set apart, engine_workers.py:616 asserts.
    mixed = check_batch_sizes(paper(*dynamic, *budgets, "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=false"))
    assert ("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", False) in [(p.key, p.value) for p in mixed]


def test_cpu_backend_passes(tiny_model_dir, pipeline_dir):
    from recipe.relate.main_relate import prepare_config

    for ranks in (1, 2):  # tests/verl_cpu/test_verl_cpu_loop.py runs both
        config = compose(["backend=cpu", f"actor_rollout_ref.model.path={tiny_model_dir}",
                          f"relate.ctcvr_model_dir={pipeline_dir / 'ctcvr_model'}", f"trainer.n_gpus_per_node={ranks}",
                          f"data.train_files={pipeline_dir / 'dataset' / 'train.parquet'}",
                          f"data.val_files={pipeline_dir / 'dataset' / 'val.parquet'}"])
        assert config.trainer.device == "cpu" and config.actor_rollout_ref.rollout.name == "hf"
        prepare_config(config, launching=True)  # no vLLM rollout: no installed-version check


# ---- registration ----------------------------------------------------------------------------------------


def test_reintroduced_setup_hook_and_registry_source_fail(paper):
    assert check_registration(paper()) == []
    hook = "recipe.relate.registration.register_all"
    found = problems_of(paper(f"+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={hook}"))
    assert found == {"ray_kwargs.ray_init.runtime_env.worker_process_setup_hook": hook}
    found = problems_of(paper("reward.reward_manager.source=register", "reward.reward_manager.name=relate"))
    assert found == {"reward.reward_manager.source": "register"}
    bad = check_registration(paper("reward.reward_manager.module.path=pkg://recipe.relate.no_such_module"))
    assert [p.key for p in bad] == ["reward.reward_manager.module.path"]
    wrong = check_registration(paper("reward.reward_manager.name=SentenceScorer",
                                     "reward.reward_manager.module.path=pkg://recipe.relate.scoring"))
    assert [(p.key, p.value) for p in wrong] == [("reward.reward_manager.name", "SentenceScorer")]


# ---- Qwen3 thinking --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3_template() -> str:
    """The real Qwen3 chat template, read out of trl 1.10.0's wheel (downloaded by make, never installed)."""
    if not TRL_WHEEL.is_file():
        pytest.fail(f"{TRL_WHEEL} is missing: run `make install` (it downloads the wheel as data, not installed: "
                    f"{sys.executable} -m pip download -q --no-deps trl==1.10.0 -d {TRL_WHEEL.parent})")
    with zipfile.ZipFile(TRL_WHEEL) as z:
        return z.read("trl/chat_templates/qwen3.jinja").decode("utf-8")


@pytest.fixture(scope="module")
def qwen3_tokenizer_dir(tiny_model_dir, qwen3_template, tmp_path_factory):
    """A local model folder (the tiny random Llama; SmolLM2's vocabulary, ChatML tokens) carrying the Qwen3 chat
    template: a policy folder as the preflight's input check wants one (config.json and weights)."""
    import shutil

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = qwen3_template
    out = tmp_path_factory.mktemp("qwen3_template_tokenizer") / "model"
    shutil.copytree(tiny_model_dir, out)
    tok.save_pretrained(out)
    return out


def test_qwen3_prompt_through_verls_rollout_path_has_no_open_thinking_block(paper, qwen3_tokenizer_dir):
    from transformers import AutoTokenizer
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from data_prep.prompts import build_messages
    from relate_common.records import parse_record
    from tests.fixtures import record

    tok = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir)
    messages = build_messages(parse_record(record()))
    kwargs = OmegaConf.to_container(paper().data.apply_chat_template_kwargs)
    assert kwargs == {"enable_thinking": False}

    def render(chat_template_kwargs):
        # What verl's agent loop builds the rollout prompt with (agent_loop.py:248-254), Qwen3 family.
        builder = create_continuous_token_builder(tok, hf_model_type="qwen3", chat_template_kwargs=chat_template_kwargs)
        return tok.decode(builder.build_initial_tokens(messages))

    prompt = render(kwargs)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # empty, closed: answer directly
    assert prompt.count("<think>") == 1 == prompt.count("</think>")
    unset = render({})
    assert unset.endswith("<|im_start|>assistant\n") and "<think>" not in unset  # the model would open one
    # verl's dataset renders with the same kwargs (rl_dataset.py:250-262), and so does relate_eval.generate.
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
    assert tok.decode(ids["input_ids"] if hasattr(ids, "keys") else ids) == prompt
    from relate_eval.generate import render_prompts

    assert tok.decode(render_prompts(tok, [messages], kwargs)[0]) == prompt


def test_thinking_check_reads_the_template(paper, qwen3_tokenizer_dir, tokenizer_dir):
    local = f"actor_rollout_ref.model.path={qwen3_tokenizer_dir}"
    template, where = policy_chat_template(paper(local))
    assert "enable_thinking" in template and where == str(qwen3_tokenizer_dir)
    assert check_thinking(paper(local)) == []
    for override, value in ((f"~{THINKING_KEY}", None), (f"{THINKING_KEY}=true", True)):
        found = problems_of(paper(local, override))
        assert found == {THINKING_KEY: value}, override
        assert "takes enable_thinking" in str(check_thinking(paper(local, override))[0])
    # Qwen/Qwen3-8B is not in the local cache: the name decides.
    hub = "actor_rollout_ref.model.path=Qwen/Qwen3-8B"
    assert policy_chat_template(paper(hub))[0] is None
    assert problems_of(paper(hub, f"~{THINKING_KEY}")) == {THINKING_KEY: None}
    assert "is a Qwen3 model" in str(check_thinking(paper(hub, f"~{THINKING_KEY}"))[0])
    # SmolLM2's template has no thinking switch: nothing to require.
    assert check_thinking(paper(f"actor_rollout_ref.model.path={tokenizer_dir}", f"~{THINKING_KEY}")) == []


# ---- inputs ---------------------------------------------------------------------------------------------------


def test_every_missing_input_is_named(paper, tmp_path, tokenizer_dir):
    from recipe.relate.preflight import check_inputs, pending_inputs

    assert check_inputs(paper()) == []  # the real inputs of gpu_run_inputs
    gone = [f"data.train_files={tmp_path / 'd' / 'train.parquet'}", f"data.val_files={tmp_path / 'd' / 'val.parquet'}",
            f"relate.ctcvr_model_dir={tmp_path / 'ctcvr'}", f"actor_rollout_ref.model.path={tmp_path / 'policy'}"]
    found = problems_of(paper(*gone))
    assert found == {"data.train_files": str(tmp_path / "d" / "train.parquet"),
                     "data.val_files": str(tmp_path / "d" / "val.parquet"),
                     "relate.ctcvr_model_dir": str(tmp_path / "ctcvr"),
                     "actor_rollout_ref.model.path": str(tmp_path / "policy")}
    # a folder that is no CTCVR model, a model folder without config.json (SmolLM2's tokenizer folder)
    (tmp_path / "ctcvr").mkdir()
    bad = {p.key: str(p) for p in check_inputs(paper(f"relate.ctcvr_model_dir={tmp_path / 'ctcvr'}",
                                                     f"actor_rollout_ref.model.path={tokenizer_dir}"))}
    assert "missing file config.json: not a trained CTCVR model" in bad["relate.ctcvr_model_dir"]
    assert "not a transformers model folder: no config.json" in bad["actor_rollout_ref.model.path"]
    # Model 1 rewards no CTCVR; a hub name is the run's to fetch
    assert [p.key for p in check_inputs(paper("relate.preset=model1", f"relate.ctcvr_model_dir={tmp_path / 'x'}",
                                              "actor_rollout_ref.model.path=Qwen/Qwen3-8B"))] == []
    # pending (dry run only): an earlier pipeline step writes it
    pending = [f"++relate.pending_inputs=['{tmp_path / 'd'}','{tmp_path / 'policy'}']"]
    assert [p.key for p in check_inputs(paper(*gone, *pending, "relate.dry_run=true"))] == ["relate.ctcvr_model_dir"]
    assert [k for k, _ in pending_inputs(paper(*gone, *pending, "relate.dry_run=true"))] == [
        "data.train_files", "data.val_files", "actor_rollout_ref.model.path"]
    assert len(check_inputs(paper(*gone, *pending, "relate.dry_run=false"))) == 4  # a launch needs them all


def test_validation_never_exceeds_val_max_samples(paper, pipeline_dir, tiny_model_dir, tmp_path):
    """verl's own dataset builder on a val file of 640 prompts (the real val split repeated): the paper config
    validates on data.val_max_samples of them, the same ones at every launch (data.seed), in one batch of at most
    that many (trainer_base.py:718-725,752-754)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer
    from verl.trainer.ppo.utils import create_rl_dataset

    config = paper()
    cap = config.data.val_max_samples
    assert cap == 512 and config.data.val_batch_size is None
    val = pq.read_table(pipeline_dir / "dataset" / "val.parquet")
    big = pa.concat_tables([val] * (-(-(cap + 128) // val.num_rows)))
    assert big.num_rows > cap
    pq.write_table(big, tmp_path / "val.parquet")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    def build():
        return create_rl_dataset(str(tmp_path / "val.parquet"), config.data, tok, None, is_train=False,
                                 max_samples=config.data.get("val_max_samples", -1))

    first, again = build(), build()
    batch = config.data.val_batch_size or len(first)  # verl's val dataloader batch size
    assert len(first) <= cap and batch <= cap and len(first) > cap - 64  # (a few over max_prompt_length dropped)
    ids = lambda ds: [ds.dataframe[i]["extra_info"]["index"] for i in range(len(ds))]  # noqa: E731
    assert ids(first) == ids(again)


# ---- trainer semantics -----------------------------------------------------------------------------------


def test_trainer_mode_must_resolve_to_sync(paper):
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    assert check_trainer_mode(paper()) == []  # RelateTrainer: property answering "sync"

    class WithoutProperty(PPOTrainerSync):
        pass

    class ReadOnlyProperty(PPOTrainerSync):
        trainer_mode = property(lambda self: "sync")

    names = {"preflight_test_plain": WithoutProperty, "preflight_test_readonly": ReadOnlyProperty}
    try:
        for name, cls in names.items():
            register_trainer(name)(cls)
        plain = check_trainer_mode(paper("trainer.v1.trainer_mode=preflight_test_plain"))
        assert [(p.key, p.value) for p in plain] == [("trainer.v1.trainer_mode", "preflight_test_plain")]
        assert "resolves to 'preflight_test_plain', not 'sync'" in str(plain[0])
        with pytest.raises(PreflightError, match="trainer.v1.trainer_mode='preflight_test_plain'"):
            run_preflight(paper("trainer.v1.trainer_mode=preflight_test_plain"))
        assert "without a setter" in str(check_trainer_mode(paper("trainer.v1.trainer_mode=preflight_test_readonly"))[0])
    finally:
        for name in names:
            TRAINER_REGISTRY.pop(name, None)
    not_sync = check_trainer_mode(paper("trainer.v1.trainer_mode=colocate_async"))  # verl's own async trainer
    assert "not a PPOTrainerSync subclass" in str(not_sync[0])
    assert "Unknown trainer" in str(check_trainer_mode(paper("trainer.v1.trainer_mode=nope"))[0])


def test_the_preflight_checks_the_gpu_requirements(tmp_path):
    """Check 5 (relate_tools.gpu_requirements) is part of every run's preflight."""
    from relate_tools.gpu_requirements import GPU_REQUIREMENTS

    unpinned = tmp_path / "requirements-gpu.txt"
    unpinned.write_text("\n".join("flash-attn" if line.startswith("flash-attn @ ") else line
                                   for line in GPU_REQUIREMENTS.read_text().splitlines()) + "\n")
    with pytest.raises(PreflightError, match=r"requirements-gpu.txt:\d+='flash-attn'"):
        run_preflight(compose([]), requirements=unpinned)


def test_installed_versions_are_checked_only_right_before_a_vllm_launch(paper):
    problems = check_installed_versions()
    installed = {p.value: str(p) for p in problems}
    assert "installed: not installed" in installed["vllm==0.24.0"]  # this CPU venv has no vLLM
    assert "installed: 2.13.0+cpu" in installed["torch==2.11.0"]
    assert "pip install -r requirements-gpu.txt && pip install --no-deps -e . --config-settings editable_mode=compat" in installed["torch==2.11.0"]
    assert "verl==0.9.1" not in installed and "pandas==3.1.1" not in installed  # as pinned / not verl-pinned
    config = paper()
    assert problems_of(config) == {}  # DRY_RUN: static checks only
    assert set(problems_of(config, launching=True)) == {p.key for p in problems}


# ---- scorer device -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_ctcvr_dir(tmp_path_factory):
    """A real CTCVR model (ctcvr_model.train, small) over the sentence-transformers MiniLM encoder."""
    from ctcvr_model import train as train_cmd
    from ctcvr_model.synthetic import make_table

    d = tmp_path_factory.mktemp("ctcvr_minilm")
    make_table(300, seed=0, split="train").to_parquet(d / "train.parquet")
    make_table(120, seed=1, split="val").to_parquet(d / "val.parquet")
    train_cmd.main(["--table", str(d / "train.parquet"), "--val", str(d / "val.parquet"), "--output-dir", str(d / "model"),
                    "--encoder", "minilm", "--models", "esmm", "--epochs", "1", "--device", "cpu", "--quiet"])
    return d / "model"


def _reward_path_scorer(config, tokenizer):
    """The scorer verl's reward loop builds: RelateRewardManager.init_class (fresh class state)."""
    from recipe.relate.reward_manager import RelateRewardManager

    class Fresh(RelateRewardManager):
        _class_initialized = False

    Fresh.init_class(config, tokenizer)
    return Fresh.scorer


def test_reward_path_scorer_is_on_cpu_even_where_cuda_is_visible(paper, minilm_ctcvr_dir, tokenizer, monkeypatch):
    import torch

    from ctcvr_model.scorer import CTCVRScorer

    config = paper(f"relate.ctcvr_model_dir={minilm_ctcvr_dir}")
    assert config.relate.scorer_device == "cpu"
    # A reward-loop worker reserves no GPU; where CUDA is still visible to it, torch's own default would be
    # cuda:0, a trainer rank's GPU. This machine has no CUDA, so say it is there.
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        scorer = _reward_path_scorer(config, tokenizer)
    assert scorer.device == "cpu" and scorer.context.encoders.device == "cpu"
    assert scorer.ctcvr.device == torch.device("cpu")
    assert {p.device.type for p in scorer.ctcvr.net.parameters()} == {"cpu"}
    assert scorer.ctcvr.encoder.model.device.type == "cpu"  # its sentence-transformers encoder too
    assert CTCVRScorer._shared[(str(minilm_ctcvr_dir.resolve()), "cpu", "")] is scorer.ctcvr
    _, pred = scorer.ctcvr.score([{"query": "plumber", "bidword": "plumber", "selling_points": ["fast"],
                                   "title": "Plumber", "description": "Fast plumbers."}])
    assert 0.0 < float(pred[0]) < 1.0


def test_scorer_device_override_is_honoured(paper, minilm_ctcvr_dir, tokenizer):
    import torch

    config = paper(f"relate.ctcvr_model_dir={minilm_ctcvr_dir}", "relate.scorer_device=cuda")
    if torch.cuda.is_available():
        assert _reward_path_scorer(config, tokenizer).ctcvr.device.type == "cuda"
    else:  # the request reaches torch, which has no CUDA here
        with pytest.raises(Exception, match="Torch not compiled with CUDA enabled|NVIDIA driver"):
            _reward_path_scorer(config, tokenizer)


def test_cuda_scorer_device_fails_the_preflight(paper):
    assert check_scorer_device(paper()) == []
    for device in ("cuda", "cuda:1"):
        assert problems_of(paper(f"relate.scorer_device={device}")) == {"relate.scorer_device": device}
    assert "reserve no GPU" in str(check_scorer_device(paper("relate.scorer_device=cuda"))[0])
    with pytest.raises(ValueError, match="relate.scorer_device must be"):
        check_scorer_device(paper("relate.scorer_device=gpu0"))


def test_reward_workers_reserve_no_gpu_in_this_verl():
    """REWARD_WORKER_GPUS = 0 is read off verl 0.9.1; revisit the check if verl starts reserving GPUs."""
    import inspect

    from ray.actor import ActorClass
    from verl.experimental.reward_loop.reward_loop import RewardLoopManager, RewardLoopWorker

    assert not isinstance(RewardLoopWorker, ActorClass)  # a plain class: Ray's defaults, num_gpus=0
    source = inspect.getsource(RewardLoopManager._init_reward_loop_workers) + inspect.getsource(RewardLoopManager.__init__)
    assert "ray.remote(RewardLoopWorker)" in source and "num_gpus" not in source


# ---- multi-node paths, judge variables ------------------------------------------------------------------------


def test_relative_paths_fail_on_several_nodes(paper):
    assert check_paths(paper(nnodes=2)) == []
    relative = ["data.train_files=data/relate/train.parquet", "relate.ctcvr_model_dir=outputs/ctcvr_model",
                "trainer.default_local_dir=checkpoints/x"]
    found = problems_of(paper(*relative, nnodes=2))
    assert found == {"data.train_files": "data/relate/train.parquet", "relate.ctcvr_model_dir": "outputs/ctcvr_model",
                     "trainer.default_local_dir": "checkpoints/x"}
    listed = check_paths(paper("data.val_files=[/abs/a.parquet,rel/b.parquet]", nnodes=2))
    assert [(p.key, p.value) for p in listed] == [("data.val_files", ["/abs/a.parquet", "rel/b.parquet"])]
    assert check_paths(paper("data.train_files='hdfs://cluster/train.parquet'", nnodes=2)) == []
    assert check_paths(paper(*relative, nnodes=1)) == []  # one node: the launch directory (documented)


def test_judge_variables_set_here_must_be_forwarded(paper, monkeypatch):
    from recipe.relate.main_relate import dry_run_report, forward_judge_env, masked_config

    environ = {"RELATE_JUDGE_BASE_URL": "http://judge:8000/v1", "RELATE_JUDGE_API_KEY": SECRET}
    config = paper()
    found = {p.key for p in check_judge_env(config, environ)}
    assert found == {"ray_kwargs.ray_init.runtime_env.env_vars.RELATE_JUDGE_BASE_URL",
                     "ray_kwargs.ray_init.runtime_env.env_vars.RELATE_JUDGE_API_KEY"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert set(problems_of(paper())) == found  # run_preflight reads os.environ
    assert forward_judge_env(config, environ) == ["RELATE_JUDGE_BASE_URL", "RELATE_JUDGE_API_KEY"]
    assert check_judge_env(config, environ) == []
    env_vars = dict(config.ray_kwargs.ray_init.runtime_env.env_vars)  # beside the script's log folders
    assert {k: v for k, v in env_vars.items() if k not in ("TENSORBOARD_DIR", "VERL_FILE_LOGGER_PATH")} == environ
    assert masked_config(config).ray_kwargs.ray_init.runtime_env.env_vars.RELATE_JUDGE_API_KEY == "***"
    assert SECRET not in OmegaConf.to_yaml(masked_config(config)) and SECRET not in dry_run_report(config)
    # Names come from relate.judge.*_env.
    renamed = paper("relate.judge.api_key_env=MY_JUDGE_KEY")  # every relate: key exists now (relate_defaults): no +
    assert [p.key for p in check_judge_env(renamed, {"MY_JUDGE_KEY": "x"})] == \
        ["ray_kwargs.ray_init.runtime_env.env_vars.MY_JUDGE_KEY"]


def test_launch_starts_ray_as_verl_would_and_never_prints_the_key(paper, monkeypatch, capsys):
    import ray
    import verl.trainer.main_ppo as main_ppo

    from recipe.relate import main_relate

    monkeypatch.setenv("RELATE_JUDGE_BASE_URL", "http://judge:8000/v1")
    monkeypatch.setenv("RELATE_JUDGE_API_KEY", SECRET)
    config = main_relate.prepare_config(paper(nnodes=2))
    inits, runs = [], []

    class Stop(Exception):
        pass

    def record_init(**kwargs):
        inits.append(kwargs)
        raise Stop

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", record_init)
    with pytest.raises(Stop):
        main_ppo.run_ppo(copy.deepcopy(config), task_runner_class=None)  # verl's own launch path
    assert SECRET in capsys.readouterr().out  # verl prints its ray.init arguments as they are
    verl_kwargs = inits.pop()
    assert verl_kwargs["runtime_env"]["env_vars"]["RELATE_JUDGE_API_KEY"] == SECRET

    monkeypatch.setattr(ray, "init", lambda **kwargs: inits.append(kwargs))
    monkeypatch.setattr(main_ppo, "run_ppo", lambda cfg, task_runner_class: runs.append((cfg, task_runner_class)))
    main_relate.launch(config)
    assert inits == [verl_kwargs]  # the same ray.init verl would make, real key included
    out = capsys.readouterr().out
    assert SECRET not in out and "'RELATE_JUDGE_API_KEY': '***'" in out
    (handed, runner), = runs
    assert handed.ray_kwargs.ray_init.runtime_env.env_vars.RELATE_JUDGE_API_KEY == "***"  # what verl's TaskRunner prints
    assert SECRET not in OmegaConf.to_yaml(handed)
    from recipe.relate.registration import RelateTaskRunnerActor

    assert runner is RelateTaskRunnerActor


def test_preflight_collects_every_problem_into_one_error(paper):
    config = paper("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16", "relate.scorer_device=cuda",
                   f"~{THINKING_KEY}", "trainer.default_local_dir=ckpt", "actor_rollout_ref.model.path=Qwen/Qwen3-8B",
                   nnodes=2)
    with pytest.raises(PreflightError) as e:
        run_preflight(config)
    text = str(e.value)
    assert text.startswith("RELATE preflight found 4 problem(s):")
    for key in ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16", "relate.scorer_device='cuda'",
                f"{THINKING_KEY}=None", "trainer.default_local_dir='ckpt'"):
        assert key in text
