"""verl platform ``cpu``: the host as verl's device (``VERL_PLATFORM=cpu``).

Registered in verl's ``PlatformRegistry`` (``verl/plugin/platform/platform_manager.py``), which
``get_platform()`` resolves by the ``VERL_PLATFORM`` variable. Two answers differ from what a
host "is":

* ``ray_resource_name`` is ``"GPU"``: verl's ``ResourcePoolManager`` counts only ``GPU``/``NPU``
  resources (``verl/single_controller/ray/base.py:229-231``), so a CPU run declares logical GPUs
  to Ray (``ray_kwargs.ray_init.num_gpus``) and each trainer rank holds one. Ray then sets
  ``CUDA_VISIBLE_DEVICES`` in those actors, which a host never reads.
* ``communication_backend_name`` creates the gloo process group first (see
  ``verl_cpu.distributed``), the one place where verl has no extension point.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

from verl.plugin.platform import PlatformBase, PlatformRegistry

from verl_cpu.device import cpu_device
from verl_cpu.distributed import ensure_process_group

PLATFORM_NAME = "cpu"


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """The host CPU as verl's accelerator: gloo collectives, no IPC, no profiler ranges."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return cpu_device

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a CPU run is chosen explicitly with VERL_PLATFORM=cpu.
        return False

    def current_device(self) -> str:  # type: ignore[override]  # verl passes it to .to(); see device.py
        return cpu_device.current_device()

    def device_count(self) -> int:
        return cpu_device.device_count()

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        cpu_device.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        cpu_device.manual_seed_all(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        ensure_process_group()
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
