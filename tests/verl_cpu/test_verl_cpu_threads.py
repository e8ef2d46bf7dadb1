"""verl_cpu's thread policy: Ray starts every actor on one torch thread; on the cpu platform a verl
process computes with the host's cores (or ``VERL_CPU_NUM_THREADS``), split only where processes
compute at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from verl_cpu import threads
from verl_cpu.env import CPU_ENV

from tests.fixtures import REPO

# In a fresh Ray cluster: one actor without verl (Ray's cap), one importing verl on the cpu platform
# (verl imports verl_cpu through VERL_USE_EXTERNAL_MODULES), one with VERL_CPU_NUM_THREADS=3.
PROBE = r'''
import json, os, sys
import ray

ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)

@ray.remote
class Probe:
    def threads(self, import_verl):
        if import_verl:
            import verl  # noqa: F401
        import torch
        return torch.get_num_threads()

base = json.loads(sys.argv[1])
plain = Probe.options(runtime_env={"env_vars": {}}).remote()
cpu = Probe.options(runtime_env={"env_vars": base}).remote()
three = Probe.options(runtime_env={"env_vars": {**base, "VERL_CPU_NUM_THREADS": "3"}}).remote()
print(json.dumps({"plain": ray.get(plain.threads.remote(False)), "cpu": ray.get(cpu.threads.remote(True)),
                  "three": ray.get(three.threads.remote(True))}))
ray.shutdown()
'''


def test_verl_processes_on_the_cpu_platform_use_the_host_cores():
    env = {k: v for k, v in os.environ.items() if k not in CPU_ENV and k != threads.THREADS_ENV}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(CPU_ENV)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["plain"] == 1  # Ray's cap (ray/_private/utils.py:256-271), what verl's actors got before
    assert seen["cpu"] == threads.host_cores()
    assert seen["three"] == 3


def test_threads_split_over_concurrent_processes(monkeypatch):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "host_cores", lambda: 16)
    assert threads.threads_per_process() == 16
    assert threads.threads_per_process(sharing=2) == 8
    assert threads.threads_per_process(sharing=3) == 5
    assert threads.threads_per_process(sharing=32) == 1  # never zero threads
    monkeypatch.setenv(threads.THREADS_ENV, "6")
    assert threads.threads_per_process(sharing=4) == 6  # the override is per process, not split


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable(monkeypatch, bad):
    monkeypatch.setenv(threads.THREADS_ENV, bad)
    with pytest.raises(ValueError, match=threads.THREADS_ENV):
        threads.threads_per_process()
