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
(``run_relate_qwen3_8b.sh`` finds the newest one by itself through ``latest_checkpointed_iteration.txt``;
``actor_rollout_ref.model.path=...`` for ``run_relate_cpu.sh``). Before training, every input (the SFT
parquet files, a local model folder) must be present: each missing one is named and the run exits 2.
``relate.dry_run=true`` (``DRY_RUN=1`` in the scripts) prints the composed config and stops there.
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


def input_problems(config: DictConfig) -> tuple[list, list[tuple[str, str]]]:
    """(problems, pending) of the SFT run's inputs: the SFT parquet files and a local starting-model folder
    (a hub name is left to the run). ``relate.pending_inputs`` (dry run only): inputs an earlier step of
    examples/run_pipeline_qwen3_8b.sh writes, reported as pending instead of missing."""
    from pathlib import Path

    from recipe.relate.preflight import Problem, is_pending, model_folder_problems

    pending = tuple(config.relate.pending_inputs or ()) if config.relate.dry_run else ()
    problems, later = [], []

    def missing(key: str, path: str, why: str) -> None:
        (later.append((key, path)) if is_pending(path, pending) else problems.append(Problem(key, path, why)))

    for key in ("data.train_files", "data.val_files"):
        value = config.data.get(key.split(".", 1)[1])
        for path in ([value] if isinstance(value, str) else list(value or [])):
            if "://" not in str(path) and not Path(str(path)).is_file():
                missing(key, str(path), "no such file: the SFT parquet of data_prep/build_sft_dataset.py "
                                        "(--output-dir DIR writes DIR/train.parquet and DIR/val.parquet)")
    problems += model_folder_problems(config, ("model.path", "model.tokenizer_path"), missing)
    return problems, later


@hydra.main(config_path="config", config_name="relate_sft", version_base=None)
def main(config: DictConfig) -> None:
    import sys

    from omegaconf import OmegaConf
    from verl.utils.device import auto_set_device

    from recipe.relate.main_relate import CONFIG_BEGIN, CONFIG_END, EXIT_PREFLIGHT
    from recipe.relate.preflight import PreflightError

    problems, pending = input_problems(config)
    if problems:
        print(f"{PreflightError(problems)}\nnot launching (exit {EXIT_PREFLIGHT})", file=sys.stderr)
        sys.exit(EXIT_PREFLIGHT)
    if config.relate.dry_run:
        print(f"{CONFIG_BEGIN}\n{OmegaConf.to_yaml(config, resolve=True)}{CONFIG_END}")
        for key, path in pending:
            print(f"relate: input {key}={path}: pending (an earlier pipeline step writes it)")
        print(f"relate: checkpoints {config.trainer.default_local_dir}/global_step_N/huggingface (the RL starting "
              "policy; latest_checkpointed_iteration.txt holds N)")
        print("config composed, inputs present (relate.dry_run=true): not launching")
        return
    auto_set_device(config)  # as verl's main (sft_trainer.py:449-452)
    run_sft(config)


if __name__ == "__main__":
    main()
