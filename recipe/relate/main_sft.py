"""Entry point of the cold start: ``torchrun ... -m recipe.relate.main_sft [hydra overrides]``.

verl's own SFT trainer (``verl/trainer/sft_trainer.py``: ``SFTTrainer``, its dataset, loss,
checkpoints and resume) on the SFT parquet of ``data_prep/build_sft_dataset.py``, composed from
``config/relate_sft.yaml`` (verl's ``sft_trainer_engine`` plus our values; ``sft_backend=cpu`` for
the host through ``verl_cpu``). The one difference from ``python -m verl.trainer.sft_trainer`` is
the process group on the cpu platform: verl's ``run_sft`` (sft_trainer.py:440-445) always calls
``initialize_global_process_group`` (``verl/utils/distributed.py:61-73``), which asks torch for
``"cpu:gloo,cpu:gloo"`` there (rejected: duplicate device type) and, unlike the Ray variant, does
not skip an existing group. On that platform the group is created from torchrun's variables first
(``verl_cpu.distributed.ensure_process_group``) and verl's trainer runs on it unchanged.

The checkpoint's ``global_step_N/huggingface`` folder (``checkpoint.save_contents`` holds
``hf_model``) is a transformers model: the RL scripts take it as their starting policy
(``MODEL_PATH=...`` for ``run_relate_qwen3_8b.sh``, ``actor_rollout_ref.model.path=...`` for
``run_relate_cpu.sh``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


def run_sft(config: DictConfig) -> None:
    """verl's ``run_sft`` (sft_trainer.py:440-445), with the cpu platform's process group made first."""
    from verl.trainer.sft_trainer import SFTTrainer
    from verl.utils.device import get_device_name
    from verl.utils.distributed import destroy_global_process_group, initialize_global_process_group

    if get_device_name() == "cpu":
        from verl_cpu.distributed import ensure_process_group

        if not ensure_process_group():
            raise RuntimeError("the cpu platform's SFT run needs torchrun's RANK, WORLD_SIZE, MASTER_ADDR and "
                               "MASTER_PORT: launch it with torchrun (examples/run_sft_cpu.sh)")
    else:
        initialize_global_process_group()
    trainer = SFTTrainer(config=config)
    trainer.fit()
    destroy_global_process_group()


@hydra.main(config_path="config", config_name="relate_sft", version_base=None)
def main(config: DictConfig) -> None:
    from verl.utils.device import auto_set_device

    auto_set_device(config)  # as verl's main (sft_trainer.py:449-452)
    run_sft(config)


if __name__ == "__main__":
    main()
