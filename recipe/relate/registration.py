"""Registrations the RELATE recipe needs in every process that may look them up.

verl resolves the trainer (``TRAINER_REGISTRY``) inside its TaskRunner Ray actor, the advantage
estimator (``ADV_ESTIMATOR_REGISTRY``) in the trainer process, and the reward manager
(``REWARD_MANAGER``) in each reward-loop worker actor. Importing our modules in the launching
shell is not enough: ``main_relate`` therefore sets this module's ``register_all`` as Ray's
``worker_process_setup_hook``, which Ray runs in every worker process before any task.
"""

from __future__ import annotations

import importlib

RELATE_MODULES = (
    "recipe.relate.relate_core_algos",  # adv estimator "relate"
    "recipe.relate.reward_manager",  # reward manager "relate"
    "recipe.relate.relate_trainer",  # trainer "relate"
)
SETUP_HOOK = f"{__name__}.register_all"


def register_all() -> None:
    """Import every module whose import registers a RELATE component (idempotent)."""
    for module in RELATE_MODULES:
        importlib.import_module(module)


def add_worker_setup_hook(config) -> None:
    """Put ``register_all`` into ``ray_kwargs.ray_init.runtime_env`` of a verl config, in place."""
    from omegaconf import OmegaConf, open_dict

    with open_dict(config):
        ray_init = config.ray_kwargs.setdefault("ray_init", {})
        runtime_env = ray_init.get("runtime_env") or OmegaConf.create({})
        existing = runtime_env.get("worker_process_setup_hook")
        if existing not in (None, SETUP_HOOK):
            raise ValueError(
                f"ray_kwargs.ray_init.runtime_env.worker_process_setup_hook is already {existing!r}; RELATE needs "
                f"{SETUP_HOOK!r} there (call register_all from your hook instead)"
            )
        runtime_env["worker_process_setup_hook"] = SETUP_HOOK
        ray_init["runtime_env"] = runtime_env
