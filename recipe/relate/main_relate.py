"""Entry point: ``python -m recipe.relate.main_relate [hydra overrides]``.

Composes ``config/relate_trainer.yaml`` (verl's ``ppo_trainer`` + the ``relate:`` section),
makes every Ray worker register the RELATE components, validates the config with verl's own
``validate_config`` and runs verl's v1 PPO loop with the ``relate`` trainer. With
``relate.dry_run=true`` it stops after validation and prints the composed config: no Ray, no GPU.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from recipe.relate.registration import add_worker_setup_hook, register_all
from recipe.relate.relate_config import split_relate_section

CONFIG_BEGIN = "# ---- composed config ----"
CONFIG_END = "# ---- end of composed config ----"


def prepare_config(config: DictConfig) -> DictConfig:
    """Everything up to launching: registrations, Ray setup hook, RELATE and verl validation."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    register_all()
    add_worker_setup_hook(config)
    split_relate_section(config.relate)  # raises with the offending key
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    return config


@hydra.main(config_path="config", config_name="relate_trainer", version_base=None)
def main(config: DictConfig) -> None:
    prepare_config(config)
    if config.relate.dry_run:
        _, reward = split_relate_section(config.relate)
        # Markers let scripts and tests cut the YAML out of verl's log lines on stdout.
        print(f"{CONFIG_BEGIN}\n{OmegaConf.to_yaml(config, resolve=True)}{CONFIG_END}")
        print(f"relate: preset={reward.preset} sentence={reward.sentence_components()} "
              f"token_level={reward.token_level} alpha={reward.credit.alpha}")
        print("config composed and validated (relate.dry_run=true): not launching")
        return
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

    run_ppo(config, task_runner_class=TaskRunnerV1)


if __name__ == "__main__":
    main()
