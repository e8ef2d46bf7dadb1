"""verl's FSDP2 training engine on the host: ``EngineRegistry`` entry for device ``cpu``.

verl 0.9.1 registers ``FSDPEngineWithLMHead`` for ``cuda`` and ``npu`` only
(``verl/workers/engine/fsdp/transformer_impl.py:1143``) and ``EngineRegistry.get_engine_cls``
picks the class by the platform's device name. The same class runs on the host with gloo
collectives, with one change: for a forward-only engine (the reference policy) FSDP2 is forced
to ``CPUOffloadPolicy(pin_memory=True)`` (``transformer_impl.py:459-463``); pinning host memory
needs an accelerator, and offloading to the host is meaningless when the host computes. Only
FSDP2 is registered: FSDP1's ``sync_module_states`` broadcast needs an accelerator.

RL micro-batches are scored in the response window (``verl_cpu.response_window``): logits of the
response positions only, the same log-probs and entropies where verl reads them. Every other batch
(SFT, packed inputs, fused kernels, distillation, sum of pi squared) takes verl's own path.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.utils.dataset.dataset_utils import DatasetPadMode
from verl.utils.model import extract_multi_modal_inputs
from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits
from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp.transformer_impl import (
    FSDPEngineWithLMHead,
    _is_scalar_unit_temperature,
    _scale_logits_by_temperature,
)

from verl_cpu import threads
from verl_cpu.response_window import response_lengths, response_window

# Non-tensor flags (default false) under which verl needs more than the response tokens' log-probs
# and entropies, or another layout (transformer_impl.py:1158, 1336-1341).
_FULL_PATH_FLAGS = ("use_fused_kernels", "calculate_sum_pi_squared", "distillation_use_topk", "distillation_only")

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

    def _scores_response_window(self, micro_batch: TensorDict) -> bool:
        """Whether only the response window of this micro-batch's outputs is read (an RL batch on
        the dense path of a model whose forward takes ``logits_to_keep``)."""
        if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):  # verl's default
            return False
        if any(tu.get_non_tensor_data(data=micro_batch, key=k, default=False) for k in _FULL_PATH_FLAGS):
            return False
        pad_mode = tu.get_non_tensor_data(data=micro_batch, key="pad_mode", default=DatasetPadMode.NO_PADDING)
        keys = micro_batch.keys()
        return (pad_mode == DatasetPadMode.NO_PADDING and not self.use_ulysses_sp
                and "responses" in keys and "prompts" in keys
                # text batches carry one empty dict per row (read as at transformer_impl.py:1168)
                and not extract_multi_modal_inputs(micro_batch.get("multi_modal_inputs", []))
                and micro_batch["position_ids"].dim() == 2 and self._forward_takes_logits_to_keep)

    @functools.cached_property
    def _forward_takes_logits_to_keep(self) -> bool:
        return "logits_to_keep" in inspect.signature(self.module.forward).parameters

    def prepare_model_inputs(self, micro_batch: TensorDict):
        if not self._scores_response_window(micro_batch):
            return super().prepare_model_inputs(micro_batch)
        window = response_window(micro_batch["input_ids"], micro_batch["position_ids"], response_lengths(micro_batch),
                                 tu.get_non_tensor_data(data=micro_batch, key="pad_token_id", default=0))
        temperature = micro_batch["temperature"]  # a float or (B,), as in transformer_impl.py:1159-1176
        is_unit = _is_scalar_unit_temperature(temperature)
        if not isinstance(temperature, torch.Tensor):
            temperature = torch.full((window.input_ids.shape[0],), float(temperature))
        model_inputs = {"input_ids": window.input_ids, "attention_mask": window.attention_mask,
                        "position_ids": window.position_ids,
                        # columns P-1 .. P+R-1; the last one predicts past the response and is dropped
                        "logits_to_keep": window.response_len + 1}
        return model_inputs, {"response_window": window, "temperature": temperature.to(torch.float32),
                              "temperature_is_one": is_unit}

    def prepare_model_outputs(self, output, output_args, micro_batch: TensorDict, logits_processor_func):
        window = output_args.get("response_window")
        if window is None:
            return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        logits = output.logits[:, :-1]  # (B, R, vocab): column P-1+j predicts response token j
        logits = _scale_logits_by_temperature(logits, output_args["temperature"][:, None, None],
                                              is_unit_temperature=output_args["temperature_is_one"])
        model_output = {"log_probs": window.to_sequences(logprobs_from_logits(logits, window.response_ids))}
        if tu.get_non_tensor_data(data=micro_batch, key="calculate_entropy", default=False):
            if self.engine_config.entropy_checkpointing:
                entropy = torch.utils.checkpoint.checkpoint(entropy_from_logits, logits)
            else:
                entropy = entropy_from_logits(logits)
            model_output["entropy"] = window.to_sequences(entropy)
        return model_output
