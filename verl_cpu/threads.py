"""How many intra-op threads each verl process computes with on the host.

Ray caps every worker it starts at one thread: an actor with no ``num_cpus`` of its own gets
``OMP_NUM_THREADS=1`` (``ray/_private/utils.py:256-271``), and verl's trainer ranks, reward-loop
workers and rollout servers are such actors. On a GPU that is right (the device computes); on the
CPU backend it left the actor update, the log-prob passes and sampling on one core of many.

In verl's hybrid mode the phases of a step take turns (sampling, then rewards, then log-probs and
the update), so each process may use the host's cores while it computes; only processes that
compute *at the same time* share them: the trainer ranks on one node, and the rollout replicas on
one node. ``VERL_CPU_NUM_THREADS`` overrides the count for every process.
"""

from __future__ import annotations

import os

import torch

from verl_cpu.env import THREADS_ENV


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_process(sharing: int = 1) -> int:
    """``VERL_CPU_NUM_THREADS`` when set, else the host's cores split over ``sharing`` processes
    that compute concurrently (at least 1)."""
    given = os.environ.get(THREADS_ENV)
    if given:
        try:
            count = int(given)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(f"{THREADS_ENV}={given!r}: give a positive whole number of threads")
        return count
    return max(1, host_cores() // max(1, int(sharing)))


def use_host_threads(sharing: int = 1) -> int:
    """Set torch's intra-op thread count for this process (:func:`threads_per_process`); returns it."""
    count = threads_per_process(sharing)
    torch.set_num_threads(count)
    return count
