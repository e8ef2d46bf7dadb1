"""Entry point: ``python -m recipe.relate.main_relate [hydra overrides]``.

Composes ``config/relate_trainer.yaml`` (verl's ``ppo_trainer`` + the ``relate:`` section; add
``backend=cpu`` for verl's loop on the host, ``config/backend/cpu.yaml``), validates it with
verl's own ``validate_config`` and runs verl's v1 PPO loop with the ``relate`` trainer in
``registration.RelateTaskRunner``. Before that, ``preflight.run_preflight`` checks what would fail
or mistrain on the cluster (batch arithmetic per rank, registrations, Qwen3 thinking, trainer mode,
GPU requirements, scorer device, multi-node paths and log folders, judge variables, and every input:
data files, CTCVR model folder, a local policy folder) and reports every problem at once, each on a
line naming its key and value; the run then exits 2 without launching. With ``relate.dry_run=true``
it stops after the checks and prints the composed config (API keys masked), the paths the workers
will open and the variables forwarded to them: no Ray, no GPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from recipe.relate.registration import register_all
from recipe.relate.relate_config import split_relate_section

CONFIG_BEGIN = "# ---- composed config ----"
CONFIG_END = "# ---- end of composed config ----"
MASK = "***"


def forward_judge_env(config: DictConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """Copy the judge endpoint variables set here into ``ray_kwargs.ray_init.runtime_env.env_vars``, in place.

    verl merges that runtime_env over its own defaults and hands it to ``ray.init`` (trainer/main_ppo.py:62-74),
    so every Ray worker, on every node, gets the variables ``JudgeClient.from_config`` reads
    (reward_fns/judge.py). A name the config already sets is left as it is. Returns the names forwarded.
    """
    from recipe.relate.preflight import judge_env_names

    environ = os.environ if environ is None else environ
    names = [name for name, _ in judge_env_names(config) if environ.get(name)]
    if names:
        with open_dict(config):
            runtime_env = config.ray_kwargs.ray_init.get("runtime_env")
            if runtime_env is None:
                config.ray_kwargs.ray_init.runtime_env = {}
                runtime_env = config.ray_kwargs.ray_init.runtime_env
            if runtime_env.get("env_vars") is None:
                runtime_env.env_vars = {}
            for name in names:
                if name not in runtime_env.env_vars:
                    runtime_env.env_vars[name] = environ[name]
    return names


def secret_env_names(config: DictConfig) -> list[str]:
    """Forwarded variables whose values must never be printed (the judge's API key)."""
    from recipe.relate.preflight import judge_env_names

    env_vars = (config.ray_kwargs.ray_init.get("runtime_env") or {}).get("env_vars") or {}
    return [name for name, secret in judge_env_names(config) if secret and name in env_vars]


def masked_config(config: DictConfig) -> DictConfig:
    """A resolved copy of ``config`` with the values of secret forwarded variables replaced by ``***``."""
    secrets = secret_env_names(config)
    copy = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    for name in secrets:
        copy.ray_kwargs.ray_init.runtime_env.env_vars[name] = MASK
    return copy


def prepare_config(config: DictConfig, launching: bool = False, inputs: bool = True) -> DictConfig:
    """Everything up to launching: registrations, judge variables, preflight, RELATE and verl validation.

    ``launching``: a real launch follows (``main`` without ``relate.dry_run``), so the preflight also
    compares the installed GPU packages with requirements-gpu.txt when the rollout is vLLM. ``inputs``: the
    preflight checks that every input (data files, CTCVR model, a local policy folder) is present; ``main``
    always does, a test of another part may compose a config whose data it never opens.
    """
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from recipe.relate.preflight import run_preflight

    register_all()
    split_relate_section(config.relate)  # raises with the offending key
    forward_judge_env(config)
    run_preflight(config, launching=launching, inputs=inputs)  # raises PreflightError listing every problem
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return config


def ray_init_kwargs(config: DictConfig) -> dict:
    """What verl's ``run_ppo`` passes to ``ray.init`` for ``config`` (trainer/main_ppo.py:43-74), with the
    environment it sets first; a test compares the two on the same config."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    rollout_cfg, rm = config.actor_rollout_ref.rollout, config.reward.reward_model
    if rollout_cfg.full_determinism or (rm.enable and rm.rollout.full_determinism):  # main_ppo.py:45-50
        os.environ["VERL_FULL_DETERMINISM"] = "1"
        os.environ["VLLM_BATCH_INVARIANT"] = "1"
        os.environ["PYTHONHASHSEED"] = str(rollout_cfg.seed)
    trainer_logger = config.trainer.get("logger", [])  # main_ppo.py:52-54
    if "rl_insight" in ([trainer_logger] if isinstance(trainer_logger, str) else trainer_logger or []):
        os.environ["VERL_RL_INSIGHT_ENABLE"] = "1"
    default_runtime_env = get_ppo_ray_runtime_env(config)  # main_ppo.py:62-72
    kwargs = config.ray_kwargs.get("ray_init", {})
    if config.transfer_queue.enable:
        default_runtime_env.setdefault("env_vars", {})["TRANSFER_QUEUE_ENABLE"] = "1"
    runtime_env = OmegaConf.merge(default_runtime_env, kwargs.get("runtime_env", {}))
    return OmegaConf.to_container(OmegaConf.create({**kwargs, "runtime_env": runtime_env}))


def launch(config: DictConfig) -> None:
    """verl's ``run_ppo`` with our TaskRunner; the judge's API key never reaches a log line.

    verl prints its ``ray.init`` arguments (main_ppo.py:73) and the TaskRunner the resolved config
    (main_ppo.py:146). With a key to forward, Ray is started here with the real values (the same
    arguments verl would use, printed masked) and verl gets the masked config: ``run_ppo`` skips its own
    ``ray.init`` when Ray is up (main_ppo.py:57), and nothing after reads ``ray_kwargs.ray_init``.
    """
    import ray
    from verl.trainer.main_ppo import run_ppo

    from recipe.relate.registration import RelateTaskRunnerActor

    secrets = secret_env_names(config)
    if secrets and not ray.is_initialized():
        kwargs = ray_init_kwargs(config)
        printable = OmegaConf.create(kwargs)
        for name in secrets:
            if name in printable.runtime_env.get("env_vars", {}):
                printable.runtime_env.env_vars[name] = MASK
        print(f"ray init kwargs: {printable}")
        ray.init(**kwargs)
        config = masked_config(config)
    run_ppo(config, task_runner_class=RelateTaskRunnerActor)


def dry_run_report(config: DictConfig) -> str:
    """What DRY_RUN prints after the config: the paths other processes open, the inputs an earlier pipeline step
    writes (``relate.pending_inputs``), the forwarded variables."""
    from recipe.relate.preflight import judge_env_names, path_settings, pending_inputs

    lines = [f"relate: path {key}={', '.join(paths)}" for key, paths in path_settings(config).items()]
    lines += [f"relate: input {key}={path}: pending (an earlier pipeline step writes it)"
              for key, path in pending_inputs(config)]
    env_vars = (config.ray_kwargs.ray_init.get("runtime_env") or {}).get("env_vars") or {}
    secrets = set(secret_env_names(config))
    forwarded = [f"{name}{' (value masked)' if name in secrets else ''}" for name, _ in judge_env_names(config)
                 if name in env_vars]
    lines.append("relate: judge variables forwarded to Ray workers (ray_kwargs.ray_init.runtime_env.env_vars): "
                 + (", ".join(forwarded) if forwarded else "none (none set here)"))
    return "\n".join(lines)


# Exit status of a run stopped before launch by the preflight or an invalid relate section: the problems are on
# stderr, one per line (key=value: why), without a traceback. 2, as for every CLI here given invalid input.
EXIT_PREFLIGHT = 2


@hydra.main(config_path="config", config_name="relate_trainer", version_base=None)
def main(config: DictConfig) -> None:
    from recipe.relate.preflight import PreflightError
    from reward_fns.config import ConfigError

    try:
        prepare_config(config, launching=not config.relate.dry_run)
    except (PreflightError, ConfigError) as e:
        print(f"{e}\nnot launching (exit {EXIT_PREFLIGHT})", file=sys.stderr)
        sys.exit(EXIT_PREFLIGHT)
    if config.relate.dry_run:
        _, reward = split_relate_section(config.relate)
        # Markers let scripts and tests cut the YAML out of verl's log lines on stdout.
        print(f"{CONFIG_BEGIN}\n{OmegaConf.to_yaml(masked_config(config))}{CONFIG_END}")
        print(f"relate: preset={reward.preset} sentence={reward.sentence_components()} "
              f"token_level={reward.token_level} alpha={reward.credit.alpha}")
        print(dry_run_report(config))
        print("config composed and validated, preflight passed (relate.dry_run=true): not launching")
        return
    launch(config)


if __name__ == "__main__":
    main()
