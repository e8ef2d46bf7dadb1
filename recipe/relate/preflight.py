"""Preflight: what would make a composed RELATE config fail (or silently train the wrong thing) on
the GPU cluster, checked before anything is launched, on any machine (no GPU, no Ray).

``main_relate.prepare_config`` calls :func:`run_preflight` for every run (``relate.dry_run=true``
included, and the CPU backend ``backend=cpu``). Every check returns :class:`Problem` s naming the
config key (or requirements line) and its value; all of them are collected and raised together as
one :class:`PreflightError`. Where verl has the code that would fail, the check runs that code
(cited file:line are verl 0.9.1, ``site-packages/verl``):

1. batch arithmetic: verl's ``_get_required_batch_multiple``, ``tu.make_iterator`` and
   ``prepare_micro_batches`` on a batch of the per-rank size the configured world size gives;
2. registration: no Ray ``worker_process_setup_hook``; the reward manager through
   ``source: importlib`` and verl's ``resolve_reward_manager_cls``;
3. Qwen3 thinking: a chat template that takes ``enable_thinking`` needs
   ``data.apply_chat_template_kwargs.enable_thinking: false``;
4. trainer semantics: the class in verl's ``TRAINER_REGISTRY`` is a ``PPOTrainerSync`` whose
   ``trainer_mode`` resolves to ``"sync"``;
5. GPU requirements: ``requirements-gpu.txt`` fully pinned and in agreement with verl's extras
   metadata (and, right before a real vLLM launch, with what is installed);
6. the reward workers' scorer device (``relate.scorer_device``) against the GPUs they reserve;
7. multi-node: absolute data / model / checkpoint / cache paths and log folders (TENSORBOARD_DIR,
   VERL_FILE_LOGGER_PATH in the Ray workers' environment); judge endpoint variables forwarded to
   the Ray workers;
8. inputs: every data file, the CTCVR model folder and a local policy folder present (each missing
   one named: ``main_relate`` exits 2).

``python -m recipe.relate.preflight requirements [FILE]`` runs check 5 alone;
``python -m recipe.relate.preflight gpu-deps [FILE]`` (``make check-gpu-deps``) resolves the set with pip for
the GPU machine, wheels only, and fails naming any package that would have to be compiled;
``python -m recipe.relate.preflight gpu-report REPORT.json [FILE]`` checks a report of
``pip install --dry-run --report`` made elsewhere.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GPU_REQUIREMENTS = REPO / "requirements-gpu.txt"
THINKING_KEY = "data.apply_chat_template_kwargs.enable_thinking"
# verl starts reward-loop workers as `ray.remote(RewardLoopWorker)` with only a name and a node
# affinity in .options() (experimental/reward_loop/reward_loop.py:308,324-340): they reserve no GPU.
REWARD_WORKER_GPUS = 0


@dataclass(frozen=True)
class Problem:
    key: str  # config key (dotted) or "requirements-gpu.txt:LINE"
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.key}={self.value!r}: {self.message}"


class PreflightError(ValueError):
    """Every problem found, one per line, each naming its key and value."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"RELATE preflight found {len(self.problems)} problem(s):\n{lines}")


def _get(config: Any, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        try:
            node = node.get(part, None) if hasattr(node, "get") else getattr(node, part, None)
        except Exception:  # an unresolvable interpolation reads as missing here
            return default
    return default if node is None else node


def world_size(config: Any) -> int:
    return int(config.trainer.nnodes) * int(config.trainer.n_gpus_per_node)


# ---- 1. batch arithmetic ---------------------------------------------------------------------------


def _synthetic_batch(rows: int, seq_len: int):
    """A TensorDict of ``rows`` full-length sequences: the shape verl's micro-batching looks at."""
    import torch
    from tensordict import TensorDict

    return TensorDict({"input_ids": torch.zeros(rows, seq_len, dtype=torch.long),
                       "attention_mask": torch.ones(rows, seq_len, dtype=torch.long)}, batch_size=[rows])


def _split_micro(rows_or_td: Any, *, dynamic: bool, micro: Any, max_token_len: Any, sp_size: int, seq_len: int):
    """verl's own ``prepare_micro_batches`` (workers/engine/utils.py:92-131) on one rank's rows, with the
    non-tensor keys the engine worker injects (engine_workers.py:352-362 train, :406-415 infer) and
    the engine adds (fsdp/transformer_impl.py:726). Returns the number of micro-batches."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    td = _synthetic_batch(rows_or_td, seq_len) if isinstance(rows_or_td, int) else rows_or_td
    tu.assign_non_tensor(td, use_dynamic_bsz=bool(dynamic), micro_batch_size_per_gpu=micro,
                         max_token_len_per_gpu=max_token_len, sp_size=sp_size)
    micro_batches, _ = prepare_micro_batches(data=td)
    return len(micro_batches)


def check_batch_sizes(config: Any) -> list[Problem]:
    """Per-rank batch arithmetic of one step on ``trainer.nnodes x trainer.n_gpus_per_node`` ranks."""
    problems: list[Problem] = []
    arr = config.actor_rollout_ref
    actor, rollout, ref = arr.actor, arr.rollout, arr.ref
    if actor.strategy not in ("fsdp", "fsdp2"):
        return problems  # the data-parallel size below is the FSDP engine's
    n_ranks = world_size(config)
    sp = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
    if n_ranks % sp:
        return [Problem("actor_rollout_ref.actor.ulysses_sequence_parallel_size", sp,
                        f"does not divide the {n_ranks} ranks (trainer.nnodes x trainer.n_gpus_per_node)")]
    # FSDPEngine.get_data_parallel_size: world_size // ulysses_sequence_parallel_size (fsdp/transformer_impl.py:651-652)
    dp = n_ranks // sp
    n = int(rollout.n)
    seq_len = int(config.data.max_prompt_length) + int(config.data.max_response_length)

    # Rows of one step: train_batch_size / parameter_sync_step prompts x n (trainer_base.py:130,533-539).
    mode = resolved_trainer_mode(config)[0] or config.trainer.v1.trainer_mode
    sync_step = int(config.trainer.v1.get(mode, {}).get("parameter_sync_step", 1))
    prompts = int(config.data.train_batch_size)
    if prompts % sync_step:
        problems.append(Problem("data.train_batch_size", prompts,
                                f"not divisible by trainer.v1.{mode}.parameter_sync_step={sync_step} (trainer_base.py:535)"))
        return problems
    rows = prompts // sync_step * n
    # _balance_batch pads the batch to verl's required multiple with no-op samples
    # (trainer_base.py:1589-1606,1620-1622; padding_utils.py:165-186), then dispatch splits it evenly.
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    warmup = int(config.trainer.get("critic_warmup", 0) or 0)
    trainer_view = SimpleNamespace(use_critic=need_critic(config), config=config, global_steps=max(1, warmup))
    multiple = PPOTrainer._get_required_batch_multiple(trainer_view, dp)
    padded = math.ceil(rows / multiple) * multiple
    per_rank = padded // dp
    if padded != rows:
        problems.append(Problem("actor_rollout_ref.actor.ppo_mini_batch_size", int(actor.ppo_mini_batch_size),
                                f"{rows} responses per step are not a multiple of {multiple} (the lcm of {dp} data-parallel "
                                f"ranks and a mini-batch of {actor.ppo_mini_batch_size} x {n}): verl pads every step with "
                                f"{padded - rows} no-op samples (trainer_base.py:1589-1606,1620-1622)"))
    where = (f"{prompts} prompts x rollout.n={n} = {rows} responses per step"
             + (f" (padded to {padded})" if padded != rows else "")
             + f" = {per_rank} rows per rank on {dp} data-parallel ranks ({config.trainer.nnodes} node(s) x "
               f"{config.trainer.n_gpus_per_node})")

    actor_dynamic = bool(actor.use_dynamic_bsz)
    if actor_dynamic != bool(rollout.get("log_prob_use_dynamic_bsz", False)):
        problems.append(Problem("actor_rollout_ref.rollout.log_prob_use_dynamic_bsz", rollout.get("log_prob_use_dynamic_bsz"),
                                f"must equal actor_rollout_ref.actor.use_dynamic_bsz={actor_dynamic} "
                                "(engine_workers.py:616)"))

    def log_prob(section: str, dynamic: bool, micro_key: str, token_key: str, cfg: Any) -> None:
        micro, tokens = cfg.get(micro_key), cfg.get(token_key)
        key = f"actor_rollout_ref.{section}.{token_key if dynamic else micro_key}"
        value = tokens if dynamic else micro
        if value is None:
            problems.append(Problem(key, None, "must be set (engine_workers.py:632-637)"))
            return
        try:
            _split_micro(per_rank, dynamic=dynamic, micro=micro, max_token_len=tokens, sp_size=sp, seq_len=seq_len)
        except AssertionError as e:
            what = (f"a budget below one full sequence of {seq_len} tokens (data.max_prompt_length + "
                    "data.max_response_length; seqlen_balancing.py:384-386)") if dynamic else \
                   f"{per_rank} is not a multiple of {micro} (workers/engine/utils.py:124-127)"
            problems.append(Problem(key, value, f"log-prob pass of {where}: {what} [{e}]"))

    log_prob("rollout", actor_dynamic, "log_prob_micro_batch_size_per_gpu", "log_prob_max_token_len_per_gpu", rollout)
    if need_reference_policy(config):
        # The ref worker reads ref.log_prob_* (engine_workers.py:546-552,580-584).
        log_prob("ref", bool(ref.get("log_prob_use_dynamic_bsz", False)), "log_prob_micro_batch_size_per_gpu",
                 "log_prob_max_token_len_per_gpu", ref)

    # Actor update: mini-batch of ppo_mini_batch_size x n responses (trainer_base.py:1829-1852), split
    # over the data-parallel ranks (engine_workers.py:263-270), iterated (:273-279) and micro-batched.
    mini = int(actor.ppo_mini_batch_size) * n
    if mini % dp:
        problems.append(Problem("actor_rollout_ref.actor.ppo_mini_batch_size", int(actor.ppo_mini_batch_size),
                                f"a mini-batch of {actor.ppo_mini_batch_size} x {n} = {mini} responses does not split "
                                f"over {dp} data-parallel ranks (engine_workers.py:267-269); use a multiple of "
                                f"{dp // math.gcd(dp, n)} prompts"))
        return problems
    per_gpu = mini // dp
    from verl.utils import tensordict_utils as tu

    try:
        iterator = tu.make_iterator(_synthetic_batch(per_rank, seq_len), mini_batch_size=per_gpu,
                                    epochs=int(actor.ppo_epochs), seed=int(actor.get("data_loader_seed") or 42),
                                    dataloader_kwargs={"shuffle": bool(actor.shuffle)})
        first = next(iter(iterator))
    except AssertionError as e:
        problems.append(Problem("actor_rollout_ref.actor.ppo_mini_batch_size", int(actor.ppo_mini_batch_size),
                                f"{where}: not a whole number of mini-batches of {per_gpu} rows per rank "
                                f"(utils/tensordict_utils.py:588) [{e}]"))
        return problems
    micro, tokens = actor.get("ppo_micro_batch_size_per_gpu"), actor.get("ppo_max_token_len_per_gpu")
    key = "actor_rollout_ref.actor." + ("ppo_max_token_len_per_gpu" if actor_dynamic else "ppo_micro_batch_size_per_gpu")
    value = tokens if actor_dynamic else micro
    if value is None:
        problems.append(Problem(key, None, "must be set (engine_workers.py:632-637)"))
        return problems
    try:
        _split_micro(first, dynamic=actor_dynamic, micro=micro, max_token_len=tokens, sp_size=sp, seq_len=seq_len)
    except AssertionError as e:
        what = f"a budget below one full sequence of {seq_len} tokens" if actor_dynamic else \
            f"{per_gpu} is not a multiple of {micro} (workers/engine/utils.py:124-127)"
        problems.append(Problem(key, value, f"actor update: a mini-batch of {mini} responses is {per_gpu} rows per "
                                            f"rank on {dp} data-parallel ranks; {what} [{e}]"))
    return problems


# ---- 2. registration -------------------------------------------------------------------------------


def check_registration(config: Any) -> list[Problem]:
    problems: list[Problem] = []
    hook = _get(config, "ray_kwargs.ray_init.runtime_env.worker_process_setup_hook")
    if hook is not None:
        problems.append(Problem(
            "ray_kwargs.ray_init.runtime_env.worker_process_setup_hook", hook,
            "must be absent: Ray runs it in every worker, GPU ranks included, before CUDA_VISIBLE_DEVICES is set, "
            "and RELATE needs none (recipe/relate/registration.py)"))
    rm = config.reward.reward_manager
    if rm.source != "importlib":
        problems.append(Problem(
            "reward.reward_manager.source", rm.source,
            f"must be 'importlib' with module.path pkg://recipe.relate.reward_manager: with source={rm.source!r} "
            f"the reward-loop workers look {rm.name!r} up in a registry that nothing of ours fills in their "
            "processes (verl/trainer/ppo/reward.py:89-106)"))
        return problems
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    try:
        cls = resolve_reward_manager_cls(config)  # verl's own loader, as each reward-loop worker runs it
    except Exception as e:
        problems.append(Problem("reward.reward_manager.module.path", _get(config, "reward.reward_manager.module.path"),
                                f"verl cannot load {rm.name!r} from it: {type(e).__name__}: {e}"))
        return problems
    if not (isinstance(cls, type) and issubclass(cls, RewardManagerBase)):
        problems.append(Problem("reward.reward_manager.name", rm.name, f"resolves to {cls!r}, not a RewardManagerBase subclass"))
    return problems


# ---- 3. chat template / thinking ---------------------------------------------------------------------


def _template_from_folder(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, list):  # named templates: the "default" one is what apply_chat_template uses
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        return template
    return None


def policy_chat_template(config: Any) -> tuple[str | None, str]:
    """(chat template, where it came from) of the policy, from local files only (None if not found)."""
    model = config.actor_rollout_ref.model
    custom = model.get("custom_chat_template")
    if custom:  # replaces the tokenizer's template (workers/config/model.py:173-177)
        return str(custom), "actor_rollout_ref.model.custom_chat_template"
    path = str(model.get("tokenizer_path") or model.path)  # workers/config/model.py:153-154
    if Path(path).is_dir():
        return _template_from_folder(Path(path)), path
    if re.fullmatch(r"[\w.-]+/[\w.-]+", path):  # a hub name: only what is already in the local cache
        try:
            from huggingface_hub import try_to_load_from_cache

            for name in ("chat_template.jinja", "tokenizer_config.json"):
                hit = try_to_load_from_cache(path, name)
                if isinstance(hit, str):
                    return _template_from_folder(Path(hit).parent), f"{path} (local cache)"
        except Exception:
            pass
    return None, path


def template_takes(template: str, variable: str) -> bool:
    """Whether a Jinja chat template reads ``variable`` (a kwarg of apply_chat_template)."""
    try:
        import jinja2
        from jinja2 import meta

        return variable in meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except Exception:  # a tag plain Jinja does not know: fall back to the name
        return re.search(rf"\b{re.escape(variable)}\b", template) is not None


def check_thinking(config: Any) -> list[Problem]:
    template, where = policy_chat_template(config)
    path = str(config.actor_rollout_ref.model.path)
    if template is not None:
        needs = template_takes(template, "enable_thinking")
        why = f"the policy's chat template ({where}) takes enable_thinking"
    else:
        needs = re.search(r"qwen-?3", path, re.IGNORECASE) is not None
        why = f"the policy {path!r} is a Qwen3 model (its template could not be read locally)"
    kwargs = _get(config, "data.apply_chat_template_kwargs") or {}
    value = kwargs.get("enable_thinking") if hasattr(kwargs, "get") else None
    if needs and value is not False:
        return [Problem(THINKING_KEY, value,
                        f"{why}; unless it is false the generation prompt ends at '<|im_start|>assistant\\n' and "
                        "Qwen3 opens a <think> block that eats max_response_length before the ad. verl passes "
                        "data.apply_chat_template_kwargs to apply_chat_template in the rollout "
                        "(experimental/agent_loop/agent_loop.py:242,251) and the dataset (utils/dataset/rl_dataset.py:120)")]
    return []


# ---- 4. trainer semantics ----------------------------------------------------------------------------


def resolved_trainer_mode(config: Any) -> tuple[str | None, str | None]:
    """(the trainer_mode an instance of the registered class reports, problem text or None)."""
    from verl.trainer.ppo.v1.trainer_base import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    name = config.trainer.v1.trainer_mode
    try:
        cls = get_trainer_cls(name)
    except ValueError as e:
        return None, str(e)
    if not issubclass(cls, PPOTrainerSync):
        return None, f"registered class {cls.__module__}.{cls.__qualname__} is not a PPOTrainerSync subclass"
    attr = inspect.getattr_static(cls, "trainer_mode", None)
    if attr is None or not hasattr(attr, "__get__"):
        # PPOTrainer.__init__ assigns config.trainer.v1.trainer_mode itself (trainer_base.py:129).
        return name, None
    if isinstance(attr, property) and attr.fset is None:
        return None, (f"{cls.__qualname__}.trainer_mode is a property without a setter: PPOTrainer.__init__ "
                      "assigns it (trainer_base.py:129)")
    try:
        return attr.__get__(object.__new__(cls), cls), None  # the property, without running __init__
    except Exception as e:
        return None, f"{cls.__qualname__}.trainer_mode cannot be evaluated before __init__: {type(e).__name__}: {e}"


def check_trainer_mode(config: Any) -> list[Problem]:
    # Importing it registers trainer "relate", so the check stands alone; SYNC_MODE is the literal
    # verl's v1 trainer branches on.
    from recipe.relate.relate_trainer import SYNC_MODE

    name = config.trainer.v1.trainer_mode
    mode, error = resolved_trainer_mode(config)
    if error:
        return [Problem("trainer.v1.trainer_mode", name, error)]
    if mode != SYNC_MODE:
        return [Problem("trainer.v1.trainer_mode", name,
                        f"the trainer's trainer_mode resolves to {mode!r}, not {SYNC_MODE!r}: verl's v1 trainer then uses "
                        "the async replay buffer, generation batch, checkpoint contents and resume (trainer_base.py:"
                        "153,731,912,1004,1499); RELATE is on-policy (define a trainer_mode property returning 'sync')")]
    return []


# ---- 5. GPU requirements -----------------------------------------------------------------------------

# The Python the GPU set is resolved for when no direct wheel line names one: verl 0.9.1's documented GPU
# environment is CPython 3.12 on Linux x86_64 (its install docs' uv environment and its flash-attn wheel).
GPU_PYTHON = "3.12"
# The GPU machine: Linux x86_64 with glibc >= 2.31 (Ubuntu 20.04 and later, RHEL 9): vllm 0.24.0's llguidance
# 1.7 ships manylinux_2_31 wheels only, torch 2.11.0 and vllm manylinux_2_28. pip takes a --platform literally
# (no older manylinux tags implied), so every tag such a machine accepts is listed; the direct flash-attn wheel
# carries the plain linux_x86_64 tag.
GPU_GLIBC_MINOR = 31
GPU_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(GPU_GLIBC_MINOR, 4, -1)),
                 "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")
GPU_INSTALL = "pip install -r requirements-gpu.txt && pip install --no-deps -e ."


@dataclass(frozen=True)
class Pin:
    line_no: int
    line: str
    name: str  # canonical
    version: str | None  # None: not pinned with == (nor by a wheel file name)
    url: str | None = None  # a direct wheel: `name @ https://.../name-VERSION-TAGS.whl`

    @property
    def public(self) -> str | None:
        """The public version (PEP 440, without a local tag such as +cu130): what verl's metadata pins."""
        return public_version(self.version) if self.version is not None else None


def public_version(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11.0``: CUDA-tagged builds are the release their metadata names."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(version).public
    except InvalidVersion:
        return version


def wheel_file(url: str) -> tuple[str, str, frozenset] | None:
    """(canonical name, version, tags) of the wheel a URL points at, None for anything else (an sdist)."""
    from urllib.parse import unquote, urlsplit

    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not filename.endswith(".whl"):
        return None
    try:
        name, version, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    return str(name), str(version), frozenset(tags)


def read_requirements(path: Path) -> tuple[list[Pin], list[Problem]]:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    pins, problems = [], []
    for i, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        key = f"{Path(path).name}:{i}"
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            problems.append(Problem(key, line, f"not a pinned requirement ({e})"))
            continue
        name = canonicalize_name(req.name)
        if req.url:
            wheel = wheel_file(req.url)
            if wheel is None or wheel[0] != name or req.specifier:
                problems.append(Problem(key, line, "a direct URL must name a wheel of this package (NAME @ https://.../"
                                                   "NAME-VERSION-TAGS.whl): a source archive would need a compiler"))
                pins.append(Pin(i, line, name, None, req.url))
                continue
            pins.append(Pin(i, line, name, wheel[1], req.url))
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            problems.append(Problem(key, line, "every line must pin one exact version with == (NAME==X.Y.Z)"))
            pins.append(Pin(i, line, name, None))
            continue
        pins.append(Pin(i, line, name, specs[0].version))
    return pins, problems


def verl_metadata() -> tuple[str, dict[str, dict[str, set[str]]], dict[str, Any]]:
    """(verl's version, {package: {pinned version: extras pinning it}}, {package: base SpecifierSet})."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    pins: dict[str, dict[str, set[str]]] = {}
    base: dict[str, SpecifierSet] = {}
    for text in importlib.metadata.requires("verl") or []:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(req.marker or ""))
        if extra is None:
            base[name] = base.get(name, SpecifierSet()) & req.specifier
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator == "==":
            pins.setdefault(name, {}).setdefault(specs[0].version, set()).add(extra.group(1) if extra else "(base)")
    return importlib.metadata.version("verl"), pins, base


def _build_tag(version: str) -> tuple[int | None, str | None]:
    """(CUDA major, torch major.minor) a prebuilt wheel's local tag names: ``2.8.3+cu130torch2.11`` -> (13, "2.11"),
    ``+cu12torch2.11`` -> (12, "2.11"); (None, None) without such a tag."""
    m = re.search(r"\+cu(\d+)torch(\d+\.\d+)", version)
    if m is None:
        return None, None
    digits = m.group(1)
    return int(digits[:-1] if len(digits) >= 3 else digits), m.group(2)


def check_gpu_requirements(path: Path | str = GPU_REQUIREMENTS) -> list[Problem]:
    """Static: every line pinned (== or a direct wheel), public versions agreeing with verl's own metadata, and
    a prebuilt wheel built for the pinned torch."""
    path = Path(path)
    if not path.is_file():
        return [Problem("requirements-gpu.txt", str(path), "file not found")]
    pins, problems = read_requirements(path)
    verl_version, verl_pins, verl_base = verl_metadata()
    torch_pin = next((p.public for p in pins if p.name == "torch" and p.version), None)
    for pin in pins:
        if pin.version is None:
            continue
        key = f"{path.name}:{pin.line_no}"
        if pin.name == "verl" and pin.public != verl_version:
            problems.append(Problem(key, pin.line, f"the verl whose metadata this is checked against is {verl_version}"))
        pinned = verl_pins.get(pin.name, {})
        if pinned and pin.public not in pinned:
            said = "; ".join(f"=={v} in extra(s) {', '.join(sorted(e))}" for v, e in sorted(pinned.items()))
            problems.append(Problem(key, pin.line, f"verl {verl_version} pins {pin.name} {said}"))
        spec = verl_base.get(pin.name)
        if spec is not None and str(spec) and not spec.contains(pin.public, prereleases=True):
            problems.append(Problem(key, pin.line, f"verl {verl_version} requires {pin.name}{spec}"))
        if pin.url is not None:
            _, built_for = _build_tag(pin.version)
            if torch_pin is not None and built_for is not None and not torch_pin.startswith(built_for + "."):
                problems.append(Problem(key, pin.line, f"the wheel is built for torch {built_for}, the set pins torch=="
                                                       f"{torch_pin}: its compiled kernels would not load"))
    return problems


def check_installed_versions(path: Path | str = GPU_REQUIREMENTS) -> list[Problem]:
    """Installed versions of verl and of every package verl pins, against requirements-gpu.txt.

    Public versions are compared: a CUDA build of torch reports ``2.11.0+cu130`` and a prebuilt flash-attn
    wheel ``2.8.3+cu130torch2.11``; both are the release verl pins."""
    pins, _ = read_requirements(Path(path))
    _, verl_pins, _ = verl_metadata()
    problems = []
    for pin in pins:
        if pin.version is None or not (pin.name == "verl" or pin.name in verl_pins):
            continue
        try:
            installed = importlib.metadata.version(pin.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or public_version(installed) != pin.public:
            problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line,
                                    f"installed: {installed or 'not installed'} ({GPU_INSTALL})"))
    return problems


def _torch_cuda_major(metadata: Mapping[str, Any]) -> int | None:
    """The CUDA major a resolved torch wheel is built for, from its requirements (cuda-toolkit==13.0.2,
    nvidia-*-cu13)."""
    for text in metadata.get("requires_dist") or []:
        m = re.match(r"cuda-toolkit\S*==(\d+)\.", text) or re.match(r"nvidia-[\w-]+-cu(\d+)\b", text)
        if m:
            return int(m.group(1))
    return None


def check_report(report: Mapping[str, Any], path: Path | str = GPU_REQUIREMENTS) -> tuple[list[Problem], dict[str, str]]:
    """A ``pip install --dry-run --report`` of ``path``: every pin resolved to its (public) version, and every
    distribution a wheel (a source distribution may need a compiler at install)."""
    from packaging.utils import canonicalize_name

    items = report.get("install", [])
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    pins, problems = read_requirements(Path(path))
    for pin in pins:
        if pin.version is not None and pin.url is None and public_version(resolved.get(pin.name) or "") != pin.public:
            problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line, f"resolved to {resolved.get(pin.name)}"))
    for item in items:
        url = (item.get("download_info") or {}).get("url", "")
        if wheel_file(url) is None:
            name, version = item["metadata"]["name"], item["metadata"]["version"]
            problems.append(Problem(f"{Path(path).name}", f"{name}=={version}", f"resolves to a source distribution "
                                    f"({url.rsplit('/', 1)[-1]}): installing it needs a compiler; {_NO_COMPILER}"))
    torch = next((i["metadata"] for i in items if canonicalize_name(i["metadata"]["name"]) == "torch"), None)
    cuda = _torch_cuda_major(torch) if torch else None
    for pin in pins:
        if pin.url is not None and pin.version is not None and cuda is not None:
            built_cuda, _ = _build_tag(pin.version)
            if built_cuda is not None and built_cuda != cuda:
                problems.append(Problem(f"{Path(path).name}:{pin.line_no}", pin.line,
                                        f"the wheel is built for CUDA {built_cuda}, torch {torch['version']} for CUDA {cuda}"))
    return problems, resolved


_NO_COMPILER = ("pin a version that has a wheel for this Python and platform, or give a prebuilt wheel as "
                "`NAME @ https://.../NAME-VERSION-TAGS.whl` (verl 0.9.1's install docs name the flash-attn 2.8.3 "
                "wheel for CUDA 13.0 / torch 2.11 / cp312), or install the compiler and build prerequisites first "
                "and say so in the README")


def gpu_target(pins: Iterable[Pin]) -> str:
    """The Python (X.Y) the set is for: the CPython tag of its direct wheels (cp312 -> 3.12), else GPU_PYTHON."""
    found = set()
    for pin in pins:
        wheel = wheel_file(pin.url) if pin.url else None
        found |= {t.interpreter for t in (wheel[2] if wheel else ()) if re.fullmatch(r"cp\d{3,}", t.interpreter)}
    if len(found) == 1:
        digits = found.pop()[2:]
        return f"{digits[0]}.{digits[1:]}"
    return GPU_PYTHON


def _pure_python_wheel(spec: str, out: Path, pip_args: Iterable[str], timeout: float) -> tuple[bool, str]:
    """Build ``spec`` from its source distribution here (``pip wheel --no-deps --no-binary :all:``): (True, wheel
    name) when the build gives a pure-Python wheel (``py3-none-any``: no compiler involved), else (False, why)."""
    import subprocess

    before = set(out.glob("*.whl"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", ":all:",
                           "--no-build-isolation", "--quiet", "-w", str(out), *pip_args, spec],
                          capture_output=True, text=True, timeout=timeout)
    built = sorted(set(out.glob("*.whl")) - before)
    if proc.returncode != 0 or not built:
        return False, "its build failed here: " + " | ".join(proc.stderr.strip().splitlines()[-3:])
    wheel = wheel_file(built[0].name)
    if wheel is None or any(t.abi != "none" or t.platform != "any" for t in wheel[2]):
        built[0].unlink()
        return False, f"its build gives a compiled wheel ({built[0].name})"
    return True, built[0].name


def resolve_gpu_set(path: Path | str = GPU_REQUIREMENTS, report_path: Path | str | None = None,
                    pip_args: Iterable[str] = (), python_version: str | None = None,
                    timeout: float = 1800) -> tuple[list[Problem], dict[str, str], list[str]]:
    """pip's resolver over the GPU set for the GPU machine (CPython ``python_version``, Linux x86_64, glibc 2.31),
    installing nothing: ``pip install --dry-run --only-binary=:all: --report``.

    ``--only-binary=:all:`` makes pip refuse every source distribution. A package that has only one is built
    here (``pip wheel``): when that gives a pure-Python wheel (``py3-none-any``, as antlr4-python3-runtime 4.9.3,
    omegaconf's parser runtime, does) pip builds it on the GPU machine without a compiler too, and the resolve
    goes on with it; otherwise (a compiled wheel, or a build that fails, as flash-attn 2.8.3 from the index
    does: its setup.py needs torch, psutil, ninja and nvcc) the package is named with what to do. Direct wheel
    lines (``NAME @ URL.whl``) are checked by their file names (check_gpu_requirements; their CUDA build against
    the resolved torch in check_report) and left out of the resolve: their file is fetched at install and their
    own requirements (flash-attn: torch, einops) are pinned in the set. ``pip_args``: extra pip options (tests: a
    local index). Returns (problems, {name: resolved version}, [pure-Python wheels built from sdists]).
    """
    import subprocess
    import tempfile

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    path = Path(path)
    pins, problems = read_requirements(path)
    if problems:
        return problems, {}, []
    python_version = python_version or gpu_target(pins)
    lines = {p.name: p for p in pins}
    with tempfile.TemporaryDirectory(prefix="relate-gpu-deps-") as tmp:
        index_only = Path(tmp) / path.name
        index_only.write_text("".join(p.line + "\n" for p in pins if p.url is None), encoding="utf-8")
        built_dir = Path(tmp) / "pure-python"
        built_dir.mkdir()
        report = Path(report_path) if report_path is not None else Path(tmp) / "report.json"
        tried: set[str] = set()
        while True:
            cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                   *[a for plat in GPU_PLATFORMS for a in ("--platform", plat)], "--find-links", str(built_dir),
                   "--target", str(Path(tmp) / "target"), "--report", str(report), *pip_args, "-r", str(index_only)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode == 0:
                break
            missing = [m for m in dict.fromkeys(re.findall(r"No matching distribution found for (\S+)", proc.stderr))]
            if not missing:
                tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
                return [Problem(path.name, None, f"pip could not resolve the set:\n{tail}")], {}, []
            for text in missing:
                name = canonicalize_name(Requirement(text).name)
                pin = lines.get(name)
                key = f"{path.name}:{pin.line_no}" if pin else path.name
                if name in tried:
                    problems.append(Problem(key, pin.line if pin else text, "no wheel resolves even after building it"))
                    continue
                tried.add(name)
                pure, why = _pure_python_wheel(pin.line if pin else text, built_dir, pip_args, timeout)
                if not pure:
                    problems.append(Problem(key, pin.line if pin else text,
                                            f"no wheel for CPython {python_version} on Linux x86_64 (glibc 2.{GPU_GLIBC_MINOR}) "
                                            f"and {why}: pip would build it from its source distribution, which needs a "
                                            f"compiler; {_NO_COMPILER}"))
            if problems:
                return problems, {}, []
        built = sorted(w.name for w in built_dir.glob("*.whl"))
        found, resolved = check_report(json.loads(report.read_text(encoding="utf-8")), path)
    return found, resolved, built


# ---- 6. scorer device --------------------------------------------------------------------------------


def check_scorer_device(config: Any) -> list[Problem]:
    from recipe.relate.relate_config import split_relate_section

    device = split_relate_section(config.relate)[0].scorer_device
    if str(device).startswith("cuda") and REWARD_WORKER_GPUS == 0:
        return [Problem("relate.scorer_device", device,
                        "the reward-loop workers that build the scorer reserve no GPU (verl/experimental/reward_loop/"
                        "reward_loop.py:308,324-340): Ray gives them no GPU of their own, so cuda is either not visible "
                        "there or, where CUDA_VISIBLE_DEVICES is left unrestricted, cuda:0 of a trainer rank; use cpu")]
    return []


# ---- 7. multi-node paths and judge endpoint ------------------------------------------------------------


def _is_absolute(path: str) -> bool:
    return os.path.isabs(path) or "://" in path  # hdfs://... is fetched by verl's copy_to_local


# verl's loggers and where they write when the variable is not set, relative to the working directory of the
# TaskRunner, which Ray places on any node: tensorboard_log/<project>/<experiment> (utils/tracking.py:557) and
# ./<project>/<experiment>.jsonl (tracking.py:534-539). The GPU scripts set both, absolute, through
# ray_kwargs.ray_init.runtime_env.env_vars: environment variables reach Ray workers only that way.
LOG_ENV = {"tensorboard": "TENSORBOARD_DIR", "file": "VERL_FILE_LOGGER_PATH"}


def _loggers(config: Any) -> list[str]:
    value = _get(config, "trainer.logger") or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def path_settings(config: Any) -> dict[str, list[str]]:
    """The path-valued keys other nodes open: {key: [paths]} (log folders as their runtime_env variable)."""
    out: dict[str, list[str]] = {}
    for key in ("data.train_files", "data.val_files", "relate.ctcvr_model_dir", "relate.relevance.cache_dir",
                "trainer.default_local_dir"):
        value = _get(config, key)
        if value is None:
            continue
        out[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" \
            else [str(value)]
    env_vars = _get(config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    for logger in _loggers(config):
        name = LOG_ENV.get(logger)
        if name is not None:
            out[f"ray_kwargs.ray_init.runtime_env.env_vars.{name}"] = [str(env_vars.get(name) or "")]
    return out


def check_paths(config: Any) -> list[Problem]:
    """With several nodes a relative path resolves in each node's own working directory."""
    if int(config.trainer.nnodes) <= 1:
        return []
    problems = []
    for key, value in path_settings(config).items():
        if value == [""]:  # a logger's variable, unset
            problems.append(Problem(key, None, f"unset with trainer.nnodes={config.trainer.nnodes}: verl's "
                                               f"{key.rsplit('.', 1)[-1]} logger then writes relative to the working "
                                               "directory of the node Ray puts the TaskRunner on (utils/tracking.py:"
                                               "534-539,557); give an absolute path"))
        elif not all(_is_absolute(v) for v in value):
            problems.append(Problem(key, value if len(value) > 1 else value[0],
                                    f"relative with trainer.nnodes={config.trainer.nnodes}: each node's Ray workers "
                                    "resolve it in their own working directory; give an absolute path on storage all "
                                    "nodes share"))
    return problems


# ---- 8. inputs -------------------------------------------------------------------------------------------

# What a hub model name looks like (org/name); anything else, or a folder that exists, is a local path.
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_pending(path: str, pending: Iterable[str]) -> bool:
    """Whether ``path`` is, or lies under, one of ``pending`` (inputs an earlier pipeline step writes)."""
    target = Path(path).expanduser().absolute()
    for p in pending:
        base = Path(p).expanduser().absolute()
        if target == base or base in target.parents:
            return True
    return False


def pending_inputs(config: Any) -> list[tuple[str, str]]:
    """(key, path) of the inputs that are absent now but named in ``relate.pending_inputs`` (dry run only)."""
    return _inputs(config)[1]


def check_inputs(config: Any) -> list[Problem]:
    """Every input a run opens, present: the data files, the CTCVR model folder (presets that reward or log CTCVR)
    and a local policy / tokenizer folder. A remote path (hdfs://..., fetched by verl's copy_to_local) or a hub
    model name (org/name that is no local folder) is left to the run. In a dry run, an absent input listed in
    ``relate.pending_inputs`` (an earlier pipeline step writes it) is not a problem (see pending_inputs)."""
    return _inputs(config)[0]


def _inputs(config: Any) -> tuple[list[Problem], list[tuple[str, str]]]:
    from recipe.relate.relate_config import split_relate_section

    recipe, reward = split_relate_section(config.relate)
    pending = recipe.pending_inputs if recipe.dry_run else ()
    problems: list[Problem] = []
    later: list[tuple[str, str]] = []

    def missing(key: str, path: str, why: str) -> None:
        if is_pending(path, pending):
            later.append((key, path))
        else:
            problems.append(Problem(key, path, why))

    for key in ("data.train_files", "data.val_files"):
        for path in path_settings(config).get(key, []):
            if "://" not in path and not Path(path).is_file():
                missing(key, path, "no such file: the RL parquet of data_prep/build_dataset.py "
                                   "(--output-dir DIR writes DIR/train.parquet and DIR/val.parquet)")
    folder = recipe.ctcvr_model_dir
    if folder and "://" not in str(folder) and ("ctcvr" in reward.weights or recipe.log_components == "all"):
        from ctcvr_model.checkpoint import WEIGHTS_FILE, read_config
        from ctcvr_model.schema import ModelDirError

        try:
            read_config(folder)  # what CTCVRScorer.load reads first (ctcvr_model/scorer.py)
            if not (Path(folder) / WEIGHTS_FILE).is_file():
                raise ModelDirError(folder, f"missing file {WEIGHTS_FILE}", "Retrain it: python -m ctcvr_model.train.")
        except ModelDirError as e:
            missing("relate.ctcvr_model_dir", str(folder), f"{e.problem}: not a trained CTCVR model. {e.fix}")
    problems += model_folder_problems(config, ("actor_rollout_ref.model.path", "actor_rollout_ref.model.tokenizer_path"),
                                      missing)
    return problems, later


def model_folder_problems(config: Any, keys: Iterable[str], missing: Callable[[str, str, str], None]) -> list[Problem]:
    """A local model folder at each of ``keys`` (a hub name org/name or a remote path is left to the run):
    ``missing(key, path, why)`` for an absent one; a folder without config.json is returned as a problem."""
    problems = []
    for key in keys:
        value = _get(config, key)
        if value is None or "://" in str(value):
            continue
        path = Path(str(value)).expanduser()
        if path.is_dir():
            if not key.endswith("tokenizer_path") and not (path / "config.json").is_file():
                problems.append(Problem(key, str(value), "not a transformers model folder: no config.json"))
        elif not (HUB_NAME.fullmatch(str(value)) and not str(value).startswith(".")):
            missing(key, str(value), "no such folder: a local model folder that the run loads on every rank")
    return problems


def judge_env_names(config: Any) -> list[tuple[str, bool]]:
    """(environment variable, is secret) the LLM judge reads (reward_fns/judge.py JudgeClient.from_config)."""
    from recipe.relate.relate_config import split_relate_section

    judge = split_relate_section(config.relate)[1].judge
    return [(judge.base_url_env, False), (judge.model_env, False), (judge.api_key_env, True)]


def check_judge_env(config: Any, environ: Mapping[str, str] | None = None) -> list[Problem]:
    environ = os.environ if environ is None else environ
    env_vars = _get(config, "ray_kwargs.ray_init.runtime_env.env_vars") or {}
    return [Problem(f"ray_kwargs.ray_init.runtime_env.env_vars.{name}", None,
                    f"{name} is set here but not forwarded: reward-loop workers on other nodes would not see it "
                    "(verl merges ray_kwargs.ray_init.runtime_env over its own defaults, trainer/main_ppo.py:62-74)")
            for name, _ in judge_env_names(config) if environ.get(name) and name not in env_vars]


# ---- all together ----------------------------------------------------------------------------------------


CHECKS: tuple[Callable[[Any], list[Problem]], ...] = (
    check_batch_sizes, check_registration, check_thinking, check_trainer_mode, check_scorer_device, check_paths,
    check_judge_env, check_inputs,
)


def run_preflight(config: Any, *, launching: bool = False, requirements: Path | str = GPU_REQUIREMENTS,
                  environ: Mapping[str, str] | None = None, inputs: bool = True) -> None:
    """Raise :class:`PreflightError` listing every problem; ``launching``: a real launch is next; ``inputs``:
    check that every input is present (main_relate always does; tests of other parts may compose a config
    whose data they never open)."""
    import recipe.relate.relate_trainer  # noqa: F401  registers trainer "relate" in verl's TRAINER_REGISTRY

    problems: list[Problem] = []
    for check in CHECKS:
        if check is check_inputs and not inputs:
            continue
        try:
            problems += check_judge_env(config, environ) if check is check_judge_env else check(config)
        except PreflightError:
            raise
        except Exception as e:  # a check that cannot run is a problem too, and must not hide the others
            problems.append(Problem(check.__name__, None, f"could not run: {type(e).__name__}: {e}"))
    problems += check_gpu_requirements(requirements)
    if launching and config.actor_rollout_ref.rollout.name == "vllm":
        problems += check_installed_versions(requirements)
    if problems:
        raise PreflightError(problems)


def _main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipe.relate.preflight", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    req = sub.add_parser("requirements", help="check requirements-gpu.txt against verl's metadata")
    req.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    deps = sub.add_parser("gpu-deps", help="resolve requirements-gpu.txt with pip for the GPU machine, wheels only "
                                           "(make check-gpu-deps)")
    deps.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    deps.add_argument("--report", default=None, help="keep pip's --report JSON here")
    deps.add_argument("--python-version", default=None, help="target CPython X.Y (default: the set's direct wheels' "
                                                              f"tag, else {GPU_PYTHON})")
    deps.add_argument("--pip-arg", action="append", default=[], help="an extra pip option (repeatable)")
    rep = sub.add_parser("gpu-report", help="check a `pip install --dry-run --report` of requirements-gpu.txt")
    rep.add_argument("report")
    rep.add_argument("file", nargs="?", default=str(GPU_REQUIREMENTS))
    args = parser.parse_args(list(argv) if argv is not None else None)
    built: list[str] = []
    if args.command == "requirements":
        problems = check_gpu_requirements(args.file)
        resolved = None
    elif args.command == "gpu-deps":
        problems, resolved, built = check_gpu_requirements(args.file), {}, []
        if not problems:
            problems, resolved, built = resolve_gpu_set(args.file, args.report, args.pip_arg, args.python_version)
    else:
        problems, resolved = check_report(json.loads(Path(args.report).read_text()), args.file)
        problems += check_gpu_requirements(args.file)
    if problems:
        print(PreflightError(problems), file=sys.stderr)
        return 1
    from urllib.parse import unquote

    if resolved is None:
        print(f"{args.file}: every line pinned, in agreement with verl {importlib.metadata.version('verl')}'s metadata")
    else:
        key = ", ".join(f"{n}=={resolved[n]}" for n in ("torch", "vllm", "flash-attn", "transformers", "verl") if n in resolved)
        direct = [p for p in read_requirements(Path(args.file))[0] if p.url]
        print(f"{args.file}: resolves as one set of {len(resolved)} distributions, nothing to compile; every pin "
              f"resolved as pinned ({key})"
              + "".join(f"; {p.name}=={p.version}: a prebuilt wheel ({unquote(p.url.rsplit('/', 1)[-1])})" for p in direct)
              + "".join(f"; {name}: pure Python, built from its source distribution without a compiler" for name in built))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
