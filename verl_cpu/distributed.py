"""The one workaround of the CPU backend: verl's process group on a host without accelerators.

verl 0.9.1 creates the trainer workers' default process group in
``verl/utils/distributed.py:83-99`` (``initialize_global_process_group_ray``, called from
``TrainingWorker.__init__``, ``verl/workers/engine_workers.py:89``) with the backend string
``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``. With the device ``cpu`` that string is
``"cpu:gloo,cpu:gloo"``, which torch rejects ("Duplicate device type cpu"), and verl offers no
hook to change it. It builds the string (line 89) before it checks
``torch.distributed.is_initialized()`` (line 90) and skips its own init when a group exists, and it
reads the backend name from the platform. So ``PlatformCPU.communication_backend_name`` calls
:func:`ensure_process_group` first: in a verl Ray worker (whose ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` verl sets, ``verl/single_controller/ray/base.py:632-640``)
it creates the gloo group that verl would have created, and verl's check then finds it.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist

_RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def ensure_process_group(timeout_s: float = 1800.0) -> bool:
    """Initialise the default gloo group from verl's worker environment if none exists.

    Returns True when a default group exists afterwards. Outside a verl worker (no rendezvous
    variables) it does nothing and returns False.
    """
    if dist.is_initialized():
        return True
    if not all(os.environ.get(k) for k in _RENDEZVOUS_VARS):
        return False
    dist.init_process_group(
        backend="gloo",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timedelta(seconds=timeout_s),
        init_method=os.environ.get("DIST_INIT_METHOD") or None,  # verl's own override (distributed.py:98)
    )
    return True
