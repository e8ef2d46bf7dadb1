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

from recipe.relate.preflight import (GPU_REQUIREMENTS, THINKING_KEY, PreflightError, check_batch_sizes,
                                     check_gpu_requirements, check_installed_versions, check_judge_env, check_paths,
                                     check_registration, check_scorer_device, check_thinking, check_trainer_mode,
                                     policy_chat_template, public_version, read_requirements, run_preflight)
from tests.test_relate_run_scripts import JUDGE_ENV, SCRIPTS, _env

REPO = Path(__file__).resolve().parent.parent
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
            env = {**_env(NNODES=str(nnodes), ARGV_OUT=str(argv), **gpu_run_inputs), "PYTHON": str(fake)}
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

    for ranks in (1, 2):  # tests/test_verl_cpu_loop.py runs both
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
    from tests.helpers import record

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
    # verl's dataset renders with the same kwargs (rl_dataset.py:250-262), and so does recipe.relate.generate.
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **kwargs)
    assert tok.decode(ids["input_ids"] if hasattr(ids, "keys") else ids) == prompt
    from recipe.relate.generate import render_prompts

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


# ---- GPU requirements --------------------------------------------------------------------------------------


def _requirements_copy(tmp_path, replace: dict[str, str]) -> Path:
    lines = GPU_REQUIREMENTS.read_text().splitlines()
    for old, new in replace.items():
        assert old in lines, old
        lines[lines.index(old)] = new
    out = tmp_path / "requirements-gpu.txt"
    out.write_text("\n".join(lines) + "\n")
    return out


FLASH_ATTN_WHEEL = next(line for line in GPU_REQUIREMENTS.read_text().splitlines() if line.startswith("flash-attn @ "))


def test_gpu_requirements_are_pinned_and_agree_with_verls_metadata(tmp_path):
    assert check_gpu_requirements() == []
    text = GPU_REQUIREMENTS.read_text()
    for pin in ("torch==2.11.0", "vllm==0.24.0", "transformers==5.9.0", "verl==0.9.1", "einops==0.8.2"):
        assert f"\n{pin}\n" in text
    # flash-attn: verl's pin 2.8.3 as the prebuilt CUDA 13.0 / torch 2.11 / cp312 wheel (nothing to compile)
    assert FLASH_ATTN_WHEEL.endswith("/flash_attn-2.8.3%2Bcu130torch2.11-cp312-cp312-linux_x86_64.whl")
    unpinned = check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn"}))
    assert [(p.key.split(":")[0], p.value) for p in unpinned] == [("requirements-gpu.txt", "flash-attn")]
    assert "pin one exact version with ==" in str(unpinned[0])
    sdist = FLASH_ATTN_WHEEL.split(" @ ")[0] + " @ https://example.org/flash_attn-2.8.3.tar.gz"
    archive = check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: sdist}))
    assert [p.value for p in archive] == [sdist] and "must name a wheel" in str(archive[0])
    older = FLASH_ATTN_WHEEL.replace("cu130torch2.11", "cu130torch2.10")
    mismatch = [str(p) for p in check_gpu_requirements(_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: older}))]
    assert len(mismatch) == 1 and "built for torch 2.10, the set pins torch==2.11.0" in mismatch[0]
    newer_fa = FLASH_ATTN_WHEEL.replace("2.8.3", "2.8.4")
    assert "verl 0.9.1 pins flash-attn ==2.8.3" in str(check_gpu_requirements(
        _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: newer_fa}))[0])
    cpu_torch = check_gpu_requirements(_requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0"}))
    assert [p.value for p in cpu_torch][:1] == ["torch==2.13.0"]
    assert "verl 0.9.1 pins torch ==2.11.0 in extra(s)" in str(cpu_torch[0]) and "vllm" in str(cpu_torch[0])
    # a CUDA-tagged pin is its release: no problem from verl's metadata
    assert check_gpu_requirements(_requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.11.0+cu130"})) == []
    newer = [str(p) for p in check_gpu_requirements(_requirements_copy(tmp_path, {"transformers==5.9.0": "transformers==5.11.0"}))]
    assert len(newer) == 2 and "pins transformers ==5.9.0" in newer[0] and "requires transformers" in newer[1]
    ranged = check_gpu_requirements(_requirements_copy(tmp_path, {"numpy==2.3.5": "numpy>=2"}))
    assert [p.value for p in ranged] == ["numpy>=2"]
    with pytest.raises(PreflightError, match=r"requirements-gpu.txt:\d+='flash-attn'"):
        run_preflight(compose([]), requirements=_requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn"}))


def test_public_versions():
    assert public_version("2.11.0+cu130") == "2.11.0"
    assert public_version("2.8.3+cu130torch2.11") == "2.8.3"
    assert public_version("0.24.0") == "0.24.0"
    pins, problems = read_requirements(GPU_REQUIREMENTS)
    [fa] = [p for p in pins if p.name == "flash-attn"]
    assert problems == [] and (fa.version, fa.public) == ("2.8.3+cu130torch2.11", "2.8.3")


def test_installed_versions_are_checked_only_right_before_a_vllm_launch(paper):
    problems = check_installed_versions()
    installed = {p.value: str(p) for p in problems}
    assert "installed: not installed" in installed["vllm==0.24.0"]  # this CPU venv has no vLLM
    assert "installed: 2.13.0+cpu" in installed["torch==2.11.0"]
    assert "pip install -r requirements-gpu.txt && pip install --no-deps -e ." in installed["torch==2.11.0"]
    assert "verl==0.9.1" not in installed and "pandas==3.1.1" not in installed  # as pinned / not verl-pinned
    config = paper()
    assert problems_of(config) == {}  # DRY_RUN: static checks only
    assert set(problems_of(config, launching=True)) == {p.key for p in problems}


def test_installed_cuda_tagged_build_is_its_release(tmp_path):
    """This venv's torch reports 2.13.0+cpu, a build tag as a GPU machine's 2.11.0+cu130 is: a pin of the
    release accepts it, a pin of another release does not."""
    import importlib.metadata

    assert importlib.metadata.version("torch") == "2.13.0+cpu"
    same = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0"})
    assert "torch==2.13.0" not in {p.value for p in check_installed_versions(same)}
    tagged = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.13.0+cu130"})
    assert "torch==2.13.0+cu130" not in {p.value for p in check_installed_versions(tagged)}
    other = _requirements_copy(tmp_path, {"torch==2.11.0": "torch==2.12.0"})
    assert "torch==2.12.0" in {p.value for p in check_installed_versions(other)}


# ---- make check-gpu-deps: wheels only -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """A folder of real distributions built here with setuptools, offline: relate-probe-wheel 1.0 as a wheel,
    relate-probe-pure 1.0 (pure Python) and relate-probe-c 1.0 (a C extension) as source distributions only."""
    root = tmp_path_factory.mktemp("index")
    dist = root / "dist"
    for name, command in (("relate-probe-wheel", "bdist_wheel"), ("relate-probe-pure", "sdist"),
                          ("relate-probe-c", "sdist")):
        src = root / name
        src.mkdir()
        module = name.replace("-", "_")
        if name == "relate-probe-c":
            (src / f"{module}.c").write_text(
                "#include <Python.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"%s\", 0, -1, 0};\n"
                "PyMODINIT_FUNC PyInit_%s(void) { return PyModule_Create(&m); }\n" % (module, module))
            body = f"ext_modules=[Extension({module!r}, [{module + '.c'!r}])]"
        else:
            (src / f"{module}.py").write_text("VALUE = 1\n")
            body = f"py_modules=[{module!r}]"
        (src / "setup.py").write_text(f"from setuptools import Extension, setup\nsetup(name={name!r}, version='1.0', "
                                      f"{body})\n")
        subprocess.run([sys.executable, "setup.py", "-q", command, "-d", str(dist)], cwd=src, check=True,
                       capture_output=True, timeout=120)
    assert sorted(p.name for p in dist.iterdir()) == ["relate_probe_c-1.0.tar.gz", "relate_probe_pure-1.0.tar.gz",
                                                      "relate_probe_wheel-1.0-py3-none-any.whl"]
    return dist


def test_gpu_deps_refuses_what_would_be_compiled(local_index, tmp_path):
    import json

    from recipe.relate.preflight import check_report, resolve_gpu_set

    offline = ["--no-index", "--find-links", str(local_index)]
    ok = tmp_path / "ok.txt"
    ok.write_text("relate-probe-wheel==1.0\nrelate-probe-pure==1.0\n")
    problems, resolved, built = resolve_gpu_set(ok, tmp_path / "report.json", offline)
    assert problems == [] and resolved == {"relate-probe-wheel": "1.0", "relate-probe-pure": "1.0"}
    assert built == ["relate_probe_pure-1.0-py3-none-any.whl"]  # an sdist, but no compiler: accepted, and said
    compiled = tmp_path / "compiled.txt"
    compiled.write_text("relate-probe-wheel==1.0\nrelate-probe-c==1.0\n")
    problems, _, _ = resolve_gpu_set(compiled, None, offline)
    assert [(p.key, p.value) for p in problems] == [("compiled.txt:2", "relate-probe-c==1.0")]
    assert "compiled wheel (relate_probe_c-1.0-cp3" in str(problems[0])
    assert "needs a compiler" in str(problems[0]) and "prebuilt wheel" in str(problems[0])
    # A report made without --only-binary (pip builds the sdist's metadata) is refused by its file type.
    report = tmp_path / "sdist-report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-build-isolation",
                    "-q", "--report", str(report), *offline, "-r", str(compiled)], check=True, capture_output=True,
                   timeout=300)
    found, _ = check_report(json.loads(report.read_text()), compiled)
    assert [p.value for p in found] == ["relate-probe-c==1.0"]
    assert "relate_probe_c-1.0.tar.gz" in str(found[0]) and "needs a compiler" in str(found[0])


def test_gpu_deps_cli_names_flash_attn_from_the_index(tmp_path):
    """flash-attn 2.8.3 as the old line had it: the index holds only its sdist, so `make check-gpu-deps` fails and
    says what to do (asks the package index, as `make install` does)."""
    old = _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn==2.8.3"})
    only = tmp_path / "only" / "requirements-gpu.txt"
    only.parent.mkdir()
    only.write_text("flash-attn==2.8.3\neinops==0.8.2\n")
    proc = subprocess.run([sys.executable, "-m", "recipe.relate.preflight", "gpu-deps", str(only)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "requirements-gpu.txt:1='flash-attn==2.8.3': no wheel for CPython 3.12 on Linux x86_64" in proc.stderr
    assert "its build failed here" in proc.stderr
    assert "needs a compiler" in proc.stderr and "verl 0.9.1's install docs name the flash-attn 2.8.3 wheel" in proc.stderr
    assert check_gpu_requirements(old) == []  # pinned and agreeing with verl: only the resolve can see it


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
    renamed = paper("+relate.judge.api_key_env=MY_JUDGE_KEY")
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


def test_requirements_cli(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "recipe.relate.preflight", "requirements"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and "every line pinned" in ok.stdout, ok.stderr[-2000:]
    bad = _requirements_copy(tmp_path, {FLASH_ATTN_WHEEL: "flash-attn"})
    fail = subprocess.run([sys.executable, "-m", "recipe.relate.preflight", "requirements", str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert fail.returncode == 1 and "requirements-gpu.txt:" in fail.stderr and "'flash-attn'" in fail.stderr
