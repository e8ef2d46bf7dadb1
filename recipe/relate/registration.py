"""Where the RELATE registrations happen: in the processes where verl resolves the names.

verl resolves three names of ours, each in one kind of process:

* the trainer ``trainer.v1.trainer_mode: relate`` (``TRAINER_REGISTRY``) and the advantage
  estimator ``algorithm.adv_estimator: relate`` (``ADV_ESTIMATOR_REGISTRY``) in its TaskRunner
  actor (``verl/trainer/main_ppo.py:139-141``; the trainer and its advantage step run there):
  :class:`RelateTaskRunner` imports our modules at the top of ``run``, then runs verl's own
  ``TaskRunnerV1.run`` unchanged;
* the reward manager in each reward-loop worker: ``reward.reward_manager.source: importlib`` with
  ``module.path: pkg://recipe.relate.reward_manager`` makes verl import it there itself
  (``verl/trainer/ppo/reward.py:96-106``).

Nothing runs at Ray worker start-up. A ``runtime_env.worker_process_setup_hook`` (what this module
used to install) runs in every worker process, GPU trainer ranks included, before Ray has set
``CUDA_VISIBLE_DEVICES``; importing verl there calls ``torch.cuda.is_available()``
(``verl/utils/device.py``), and every rank could end up on GPU 0.
"""

from __future__ import annotations

import importlib

import ray
from verl.trainer.main_ppo import TaskRunnerV1

# Modules whose import registers a RELATE name in verl (the reward manager module is imported
# by verl through reward.reward_manager.module.path).
RELATE_MODULES = (
    "recipe.relate.relate_core_algos",  # adv estimator "relate"
    "recipe.relate.relate_trainer",  # trainer "relate"
)
REWARD_MANAGER_MODULE = "recipe.relate.reward_manager"


def register_all() -> None:
    """Import every module whose import registers a RELATE component (idempotent)."""
    for module in (*RELATE_MODULES, REWARD_MANAGER_MODULE):
        importlib.import_module(module)


class RelateTaskRunner(TaskRunnerV1.__ray_actor_class__):  # verl's TaskRunnerV1 is a Ray actor class
    """verl's v1 TaskRunner that first registers the RELATE trainer and estimator in its process."""

    def run(self, config):
        for module in RELATE_MODULES:
            importlib.import_module(module)
        return super().run(config)


RelateTaskRunnerActor = ray.remote(RelateTaskRunner)
