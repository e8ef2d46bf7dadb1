"""``torch.cpu`` plus the accelerator calls verl makes on its device module.

verl reaches the device through ``get_torch_device()`` (``verl/utils/device.py``), i.e. the
platform's ``device_module``, and calls ``empty_cache``, ``mem_get_info``, ``memory_allocated``,
``get_rng_state`` ... on it (27 call sites of ``empty_cache`` alone in 0.9.1). ``torch.cpu`` has
``synchronize``, ``current_stream``, ``Stream``, ``Event`` but none of the memory or RNG calls, so
this module forwards everything to ``torch.cpu`` and answers the rest the way a host does: there
is no cache to free, memory figures come from the process (``psutil``), and the RNG is torch's
default CPU generator.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import psutil
import torch


class CPUDeviceModule(types.ModuleType):
    """A module object: ``torch.cpu``'s attributes first, the accelerator-only calls below."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # -- device ------------------------------------------------------------------------------
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        # verl moves tensors with ``.to(get_device_id())``; an int would mean cuda:<int>.
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"

    # -- memory: nothing is cached on the host; figures are the process's and the machine's ---
    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        """(free, total) bytes of host memory."""
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return int(psutil.Process().memory_info().rss)

    memory_reserved = memory_allocated
    max_memory_allocated = memory_allocated
    max_memory_reserved = memory_allocated

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    # -- RNG: the default CPU generator --------------------------------------------------------
    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


cpu_device = CPUDeviceModule("verl_cpu.cpu_device")
sys.modules.setdefault(cpu_device.__name__, cpu_device)
