"""A CPU backend for verl 0.9.1: verl's own training loop on a host without accelerators.

Nothing here is specific to one recipe. Importing the package registers, through verl's own
registries:

* platform ``cpu`` (``PlatformRegistry``; chosen with ``VERL_PLATFORM=cpu``): ``verl_cpu.platform``;
* FSDP2 training engine for device ``cpu`` over gloo (``EngineRegistry``): ``verl_cpu.engine``;
* rollout ``hf`` (``RolloutReplicaRegistry`` + the worker-side rollout registry): Hugging Face
  sampling on the host behind verl's server interface: ``verl_cpu.rollout``.

verl imports this package in every process it starts when ``VERL_USE_EXTERNAL_MODULES=verl_cpu``
is set (``verl/__init__.py:49-52``); :data:`verl_cpu.env.CPU_ENV` holds the variables a CPU run
needs. The config settings it needs are explained in ``verl_cpu/README.md``.
"""

import os as _os

# The platform first: importing verl's engine modules already asks for the platform
# (``verl/workers/engine/fsdp/transformer_impl.py:89``).
from verl_cpu import platform as _platform  # noqa: I001  (registers the platform)
from verl_cpu import engine as _engine  # noqa: F401  (registers the engine)
from verl_cpu import rollout as _rollout
from verl_cpu import threads as _threads
from verl_cpu.env import CPU_ENV as _CPU_ENV

_rollout.register()
if _os.environ.get("VERL_PLATFORM") == _CPU_ENV["VERL_PLATFORM"]:
    # Every process verl starts on the cpu platform computes with the host's cores, not Ray's one
    # thread (verl_cpu.threads); the engine and the rollout server then split them where needed.
    _threads.use_host_threads()

__all__ = ["PLATFORM_NAME", "ROLLOUT_NAME"]
PLATFORM_NAME = _platform.PLATFORM_NAME
ROLLOUT_NAME = _rollout.ROLLOUT_NAME
