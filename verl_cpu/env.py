"""The process environment a CPU run of verl needs (every process verl starts inherits it)."""

from __future__ import annotations

import os
from collections.abc import Mapping

# Every process that imports verl (driver, TaskRunner, trainer ranks, reward / agent-loop workers,
# rollout servers) imports the modules named by VERL_USE_EXTERNAL_MODULES (verl/__init__.py:49-52)
# and takes the platform named by VERL_PLATFORM (verl/plugin/platform/platform_manager.py:92).
CPU_ENV = {"VERL_PLATFORM": "cpu", "VERL_USE_EXTERNAL_MODULES": "verl_cpu"}
# Torch intra-op threads of every process of a run (verl_cpu.threads.threads_per_process).
THREADS_ENV = "VERL_CPU_NUM_THREADS"


def cpu_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ``os.environ``) with :data:`CPU_ENV` set; for launching a CPU run."""
    env = dict(os.environ if base is None else base)
    env.update(CPU_ENV)
    return env
