"""RELATE's registrations are in effect inside Ray actors after the recipe's own setup path:
verl's run_ppo launches a probe TaskRunner (where verl resolves the trainer) that also starts a
nested actor (where verl's reward-loop workers resolve the reward manager), with nothing of ours
imported by the probe itself. Without the setup hook the same probe finds nothing: the check can fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = r'''
import json, os, sys
import ray
from hydra import compose, initialize_config_dir

def lookups(config):
    """What verl itself resolves from its registries (the probe imports nothing of ours)."""
    import sys as _sys
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER
    out = {"hook_ran": "recipe.relate.registration" in _sys.modules,
           "trainer": TRAINER_REGISTRY.get(config.trainer.v1.trainer_mode).__name__ if config.trainer.v1.trainer_mode in TRAINER_REGISTRY else None,
           "adv_estimator": "relate" in ADV_ESTIMATOR_REGISTRY,
           "reward_manager_registry": "relate" in REWARD_MANAGER}
    try:
        from verl.trainer.ppo.reward import resolve_reward_manager_cls
        out["reward_manager"] = resolve_reward_manager_cls(config).__name__  # verl's own loader
    except Exception as e:
        out["reward_manager"] = f"error: {e}"
    return out

@ray.remote(num_cpus=0)
class NestedWorker:  # stands in for a reward-loop worker actor
    def probe(self, config):
        return lookups(config)

@ray.remote(num_cpus=0)
class ProbeRunner:  # stands in for verl's TaskRunnerV1: run_ppo calls runner.run.remote(config)
    def run(self, config):
        result = {"runner": lookups(config), "nested": ray.get(NestedWorker.remote().probe.remote(config)),
                  "pid": os.getpid()}
        with open(os.environ["PROBE_OUT"], "w") as f:
            json.dump(result, f)

with initialize_config_dir(config_dir=os.path.abspath("recipe/relate/config"), version_base=None):
    config = compose(config_name="relate_trainer", overrides=["relate.preset=model1", "ray_kwargs.ray_init.num_cpus=2"])
if sys.argv[1] == "recipe":
    from recipe.relate.main_relate import prepare_config
    from verl.trainer.main_ppo import run_ppo
    prepare_config(config)   # the recipe's own setup path (adds Ray's worker_process_setup_hook)
    run_ppo(config, task_runner_class=ProbeRunner)
else:                        # control: plain Ray, no hook
    ray.init(num_cpus=2, include_dashboard=False)
    ray.get(ProbeRunner.remote().run.remote(config))
print("driver pid", os.getpid())
'''


def _probe(mode: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PROBE_OUT": str(out), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def test_registrations_reach_ray_actors_through_the_recipe_setup(tmp_path):
    got = _probe("recipe", tmp_path)
    for where in ("runner", "nested"):
        seen = got[where]
        assert seen["hook_ran"], where
        assert seen["trainer"] == "RelateTrainer", where
        assert seen["adv_estimator"] and seen["reward_manager_registry"], where
        assert seen["reward_manager"] == "RelateRewardManager", where


def test_without_the_setup_hook_actors_see_no_relate_registrations(tmp_path):
    got = _probe("control", tmp_path)
    for where in ("runner", "nested"):
        seen = got[where]
        assert not seen["hook_ran"] and seen["trainer"] is None and not seen["adv_estimator"]
        assert seen["reward_manager"].startswith("error: Unknown reward manager: relate")
