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
5. GPU requirements (``relate_tools.gpu_requirements``): ``requirements-gpu.txt`` fully pinned and in agreement with verl's extras
   metadata (and, right before a real vLLM launch, with what is installed);
6. the reward workers' scorer device (``relate.scorer_device``) against the GPUs they reserve;
7. multi-node: absolute data / model / checkpoint / cache paths and log folders (TENSORBOARD_DIR,
   VERL_FILE_LOGGER_PATH in the Ray workers' environment); judge endpoint variables forwarded to
   the Ray workers;
8. inputs: every data file, the CTCVR model folder and a local policy folder present (each missing
   one named: ``main_relate`` exits 2).

Check 5 and the dependency tools (``make check-gpu-deps``) live in ``relate_tools/gpu_requirements.py``.

Over 500 lines on purpose: one module holds every check of the config so that a run is refused with all
of its problems in one error; each check is a short function with the verl code it mirrors cited.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from relate_tools.gpu_requirements import GPU_REQUIREMENTS, Problem, check_gpu_requirements, check_installed_versions

THINKING_KEY = "data.apply_chat_template_kwargs.enable_thinking"
# verl starts reward-loop workers as `ray.remote(RewardLoopWorker)` with only a name and a node
# affinity in .options() (experimental/reward_loop/reward_loop.py:308,324-340): they reserve no GPU.
REWARD_WORKER_GPUS = 0


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
