"""RELATE registers by import where verl resolves the names, and its set-up touches no CUDA.

On GPUs, anything that runs in a trainer rank before Ray has set ``CUDA_VISIBLE_DEVICES`` and asks
``torch.cuda`` can pin every rank to GPU 0. The recipe therefore installs no Ray
``worker_process_setup_hook``; its modules are imported by our TaskRunner and by verl's reward
loop (``reward.reward_manager.source: importlib``). That those imports take effect inside the Ray
workers is shown by the CPU runs of verl's loop (tests/verl_cpu/test_verl_cpu_loop.py: the trainer's and the
reward manager's metrics). Here: the recipe's whole set-up path calls no ``torch.cuda`` function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures import REPO

PROBE = r'''
import importlib, json, os, sys
import torch

calls = []
for name in ("is_available", "device_count", "init", "_lazy_init", "current_device", "set_device", "get_device_name"):
    original = getattr(torch.cuda, name)
    def record(*args, _name=name, _original=original, **kwargs):
        calls.append(_name)
        return _original(*args, **kwargs)
    setattr(torch.cuda, name, record)

# What every verl process has imported before any code of ours can run there (verl asks torch.cuda
# itself at import: verl/utils/device.py:61).
for module in ("verl.utils.device", "verl.trainer.main_ppo", "verl.trainer.ppo.core_algos",
               "verl.trainer.ppo.v1.trainer_base", "verl.experimental.reward_loop.reward_manager",
               "verl.workers.config", "verl.utils.config"):
    importlib.import_module(module)
calls.clear()
if sys.argv[1] == "control":  # the recorder sees verl's own import-time query
    importlib.reload(sys.modules["verl.utils.device"])
    hook = None
else:
    from hydra import compose, initialize_config_dir
    from recipe.relate.main_relate import prepare_config
    from recipe.relate.registration import RelateTaskRunnerActor, register_all
    with initialize_config_dir(config_dir=os.path.abspath("recipe/relate/config"), version_base=None):
        config = compose(config_name="relate_trainer", overrides=["relate.preset=model1"])
    register_all()
    prepare_config(config, inputs=False)  # registration only: no data is opened
    hook = config.ray_kwargs.ray_init.runtime_env.get("worker_process_setup_hook")
print(json.dumps({"calls": calls, "initialized": torch.cuda.is_initialized(), "hook": hook}))
'''


def _probe(mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_recipe_setup_calls_no_cuda_and_installs_no_worker_hook():
    got = _probe("recipe")
    assert got == {"calls": [], "initialized": False, "hook": None}


def test_probe_sees_a_cuda_query():
    assert "is_available" in _probe("control")["calls"]
