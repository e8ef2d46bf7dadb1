"""verl rollout ``hf``: a Hugging Face model sampling on the host, behind verl's server interface.

verl's agent loop talks to rollout *servers* (Ray actors with ``generate(prompt_ids,
sampling_params, request_id)`` returning ``TokenOutput``) that a ``RolloutReplica`` launches;
the trainer worker holds a *server adapter* (``BaseRollout``) that receives the actor's weights
after every update. Three classes, registered through verl's two registries:

* :class:`HFReplica` in ``RolloutReplicaRegistry`` (``verl/workers/rollout/replica.py:312-327``):
  launches one :class:`HFGenerationServer` per replica next to its trainer rank (hybrid mode,
  tensor parallel 1);
* :class:`HFGenerationServer`: batches the concurrent ``generate`` calls of verl's agent-loop
  workers (a short quiet window, then one ``model.generate`` per sampling setting) and returns
  ``extra_fields["global_steps"]``, which the v1 trainer reads for every sample
  (``verl/trainer/ppo/v1/trainer_base.py:1897``);
* :class:`HFServerAdapter` in ``_ROLLOUT_REGISTRY`` (``verl/workers/rollout/base.py:89-93``), built
  by ``engine_workers.py:667-670`` as ``rollout_cls(config=, model_config=, device_mesh=)`` (verl's
  own ``HFRollout(module, config)`` does not fit that call): ships the full tensors of verl's
  naive weight sync (``engine_workers.py:786-806``) to its server.

With ``rollout.load_format: dummy`` (verl's default) the server starts from random weights, so a
sampled ad before the first weight sync would be noise: the sync that verl runs before step 1
is what makes the rollout the policy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any, Generator

import ray
import torch
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, RolloutReplicaRegistry, TokenOutput

from verl_cpu import sampling, threads

logger = logging.getLogger(__name__)

ROLLOUT_NAME = "hf"
# engine_kwargs.hf.* (verl's per-engine dict in RolloutConfig): the batching of the server.
DEFAULT_ENGINE_KWARGS = {
    "max_batch_size": 64,  # sequences per model.generate call
    "batch_wait_ms": 20.0,  # quiet window that collects the agent loop's concurrent requests
    # prefill each distinct prompt of a batch once (GRPO sends every prompt n times) and decode
    # into a preallocated cache (sampling.shared_prefill)
    "share_prompt_prefix": True,
    # intra-op threads of the server process; 0: the host's cores split over the node's replicas
    # (verl_cpu.threads: Ray would leave the server on one thread)
    "torch_threads": 0,
    # Weight-sync probe: after every weight sync, append {"global_steps", "log_probs"} of this fixed
    # token sequence under the rollout's model to this JSON-lines file (checks that the rollout is
    # the policy; None: off).
    "sync_probe_path": None,
    "sync_probe_token_ids": None,
}


def server_name(replica_rank: int) -> str:
    return f"{ROLLOUT_NAME}_server_{replica_rank}"


def engine_kwargs(config: RolloutConfig) -> dict[str, Any]:
    given = dict((config.engine_kwargs or {}).get(ROLLOUT_NAME, {}) or {})
    unknown = sorted(set(given) - set(DEFAULT_ENGINE_KWARGS))
    if unknown:
        raise ValueError(f"actor_rollout_ref.rollout.engine_kwargs.{ROLLOUT_NAME}: unknown keys {unknown}; "
                         f"known: {sorted(DEFAULT_ENGINE_KWARGS)}")
    return {**DEFAULT_ENGINE_KWARGS, **given}


def _torch_dtype(name: str) -> torch.dtype:
    from verl.utils.torch_dtypes import PrecisionType

    return PrecisionType.to_dtype(name)


class HFGenerationServer:
    """One rollout server: a Hugging Face causal LM on the host, token-in token-out."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, replica_rank: int,
                 replicas_per_node: int = 1):
        from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.kwargs = engine_kwargs(self.config)
        if self.kwargs["torch_threads"]:
            torch.set_num_threads(int(self.kwargs["torch_threads"]))
        else:  # the replicas of a node sample at the same time; the trainer ranks wait meanwhile
            threads.use_host_threads(sharing=replicas_per_node)
        torch.manual_seed(int(self.config.seed) + replica_rank)
        path = self.model_config.local_path
        dtype = _torch_dtype(self.config.dtype)
        common = dict(trust_remote_code=self.model_config.trust_remote_code, attn_implementation="sdpa")
        if "dummy" in self.config.load_format:  # verl's weight sync fills the weights before step 1
            hf_config = AutoConfig.from_pretrained(path, trust_remote_code=self.model_config.trust_remote_code)
            self.model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype, **common)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **common)
        self.model.eval()
        gen = self.model.generation_config
        try:
            gen = GenerationConfig.from_pretrained(path)
        except OSError:
            pass
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.model.config.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not self.eos_ids:
            raise ValueError(f"{path}: no eos_token_id in generation_config.json or config.json; the rollout "
                             "could never stop a response")
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.model.config.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self.max_model_len = int(self.config.max_model_len or (self.config.prompt_length + self.config.response_length))
        self.global_steps = 0
        self._pending: list[tuple[sampling.Request, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self.stats = {"generate_calls": 0, "sequences": 0, "seconds": 0.0}

    # ---- token-in, token-out (verl's LLMServerClient.generate calls this) --------------------
    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data: Any = None, video_data: Any = None, **kwargs: Any) -> TokenOutput:
        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise ValueError("the CPU rollout (verl_cpu) generates text only")
        params = dict(sampling_params)
        prompt_ids = [int(t) for t in prompt_ids]
        budget = sampling.max_new_tokens(params, len(prompt_ids), self.config.prompt_length,
                                         self.config.response_length, self.max_model_len)
        request = sampling.Request(prompt_ids, sampling.SamplingParams.from_request(params), budget)
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        result: sampling.Result = await future
        return TokenOutput(token_ids=result.token_ids, log_probs=result.log_probs, stop_reason=result.stop_reason,
                           extra_fields={"global_steps": self.global_steps})

    async def _drain(self) -> None:
        wait = float(self.kwargs["batch_wait_ms"]) / 1000.0
        cap = int(self.kwargs["max_batch_size"])
        while self._pending:
            seen = -1
            while len(self._pending) != seen and len(self._pending) < cap:  # until no request arrives
                seen = len(self._pending)
                await asyncio.sleep(wait)
            first = self._pending[0][0].params
            batch = [item for item in self._pending if item[0].params == first][:cap]
            taken = {id(item) for item in batch}
            self._pending = [item for item in self._pending if id(item) not in taken]
            start = time.perf_counter()
            try:
                results = await asyncio.to_thread(sampling.generate, self.model, [r for r, _ in batch],
                                                  self.eos_ids, self.pad_id, bool(self.kwargs["share_prompt_prefix"]))
            except Exception as exc:  # every waiting request learns why
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats["generate_calls"] += 1
            self.stats["sequences"] += len(batch)
            self.stats["seconds"] += time.perf_counter() - start
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    # ---- weights (from HFServerAdapter.update_weights) ---------------------------------------
    def load_weights(self, named_tensors: dict[str, torch.Tensor], global_steps: int | None) -> int:
        """Copy the actor's full tensors in; every name must be a parameter or buffer of the model."""
        own = self.model.state_dict()
        unknown = sorted(set(named_tensors) - set(own))
        if unknown:
            raise KeyError(f"weight sync sent names the rollout model does not have: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in named_tensors.items():
                own[name].copy_(tensor.to(own[name].dtype))
        missing = sorted(set(own) - set(named_tensors))
        if missing and not (missing == ["lm_head.weight"] and self.model.config.tie_word_embeddings):
            logger.warning("weight sync left %d rollout tensors as they were: %s", len(missing), missing[:5])
        if global_steps is not None:
            self.global_steps = int(global_steps)
        self._write_sync_probe()
        return len(named_tensors)

    def _write_sync_probe(self) -> None:
        path, ids = self.kwargs["sync_probe_path"], self.kwargs["sync_probe_token_ids"]
        if not path:
            return
        if not ids or len(ids) < 2:
            raise ValueError(f"engine_kwargs.{ROLLOUT_NAME}.sync_probe_token_ids: give >= 2 token ids with sync_probe_path")
        row = {"replica_rank": self.replica_rank, "global_steps": self.global_steps,
               "log_probs": sampling.sequence_log_probs(self.model, [int(t) for t in ids])}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = int(global_steps)

    def get_stats(self) -> dict[str, float]:
        return dict(self.stats)

    # ---- lifecycle calls of RolloutReplica / CheckpointEngineManager: nothing to free on a host
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        return {}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class HFServerAdapter(BaseRollout):
    """Trainer-side end of the CPU rollout: forwards verl's weight sync to the rank's server."""

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh: Any, *args: Any,
                 replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rollout_world = self.config.tensor_model_parallel_size * self.config.data_parallel_size * \
            self.config.pipeline_model_parallel_size
        rank = int(os.environ["RANK"])
        self.replica_rank = rank // rollout_world if replica_rank == -1 else replica_rank
        self.server_handle = None

    def _server(self):
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    @torch.no_grad()
    async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                             wire_format: str = "named_tensors", global_steps: int | None = None,
                             peft_config: Any = None, **kwargs: Any):
        if wire_format != "named_tensors":
            raise ValueError(f"the CPU rollout takes wire_format='named_tensors', got {wire_format!r}")
        if peft_config is not None:
            raise ValueError("the CPU rollout loads full weights: set actor_rollout_ref.model.lora.merge=true "
                             "to sync a LoRA policy")
        named = {name: tensor.detach().to("cpu").clone() for name, tensor in weights}
        await self._server().load_weights.remote(named, global_steps)


class HFReplica(RolloutReplica):
    """A CPU rollout replica: one :class:`HFGenerationServer` beside its trainer rank."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.world_size != 1:
            raise ValueError("the CPU rollout runs one rank per replica: set actor_rollout_ref.rollout."
                             "tensor_model_parallel_size, data_parallel_size and pipeline_model_parallel_size to 1")
        self.server_class = ray.remote(HFGenerationServer)
        # verl builds one replica per rollout world on the trainer ranks and passes
        # gpus_per_node=rollout.n_gpus_per_node (verl/workers/rollout/llm_server.py:455-467).
        self.replicas_per_node = max(1, self.gpus_per_node // self.world_size)

    async def init_colocated(self, resource_pool):
        raise NotImplementedError("the CPU rollout supports verl's hybrid mode only (actor_rollout_ref.hybrid_engine=true)")

    async def init_standalone(self):
        raise NotImplementedError("the CPU rollout supports verl's hybrid mode only (actor_rollout_ref.hybrid_engine=true)")

    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(f"the CPU rollout supports verl's hybrid mode only, got {self.rollout_mode}")
        node_id = await self.workers[0].__ray_call__.remote(lambda _self: ray.get_runtime_context().get_node_id())
        server = self.server_class.options(
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            name=server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency,
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank,
                 replicas_per_node=self.replicas_per_node)
        self.servers = [server]
        self._server_handle = server
        # No HTTP endpoint: the address is only the load balancer's key (OpenAI-style tool agents
        # that post to it are not supported on CPU).
        self._server_address = f"{ROLLOUT_NAME}-cpu-replica-{self.replica_rank}"


def register() -> None:
    """Make ``actor_rollout_ref.rollout.name=hf`` resolvable by verl (idempotent)."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
