"""verl's FSDP2 training engine on the host: ``EngineRegistry`` entry for device ``cpu``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` for ``cuda`` and ``npu`` only
(``verl/workers/engine/fsdp/transformer_impl.py:1143``) and ``EngineRegistry.get_engine_cls``
picks the class by the platform's device name. The same class runs on the host with gloo
collectives, with one change: for a forward-only engine (the reference policy) FSDP2 is forced
to ``CPUOffloadPolicy(pin_memory=True)`` (``transformer_impl.py:459-463``); pinning host memory
needs an accelerator, and offloading to the host is meaningless when the host computes. Only
FSDP2 is registered: FSDP1's ``sync_module_states`` broadcast needs an accelerator.
"""

from __future__ import annotations

import os

from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_cpu import threads

CPU_ENGINE_BACKENDS = ["fsdp2"]


@EngineRegistry.register(model_type="language_model", backend=CPU_ENGINE_BACKENDS, device="cpu")
class CPUFSDPEngineWithLMHead(FSDPEngineWithLMHead):
    """``FSDPEngineWithLMHead`` with parameters kept where they are computed (the host)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The trainer ranks of a node compute at the same time; verl tells each how many there
        # are in RAY_LOCAL_WORLD_SIZE (verl/single_controller/ray/base.py:637).
        threads.use_host_threads(sharing=int(os.environ.get("RAY_LOCAL_WORLD_SIZE", "1")))

    def _build_fsdp_module(self, module):
        if self.engine_config.offload_policy:
            raise ValueError(
                "fsdp_config.offload_policy=true offloads parameters to the host, which on the CPU backend is "
                "where they already are; set it to false (verl_cpu)"
            )
        forward_only = self.engine_config.forward_only
        # transformer_impl.py:459 adds the pinned offload policy when forward_only is set; the flag
        # is read nowhere else while the module is built (it is a mutable field of EngineConfig).
        self.engine_config.forward_only = False
        try:
            return super()._build_fsdp_module(module)
        finally:
            self.engine_config.forward_only = forward_only
