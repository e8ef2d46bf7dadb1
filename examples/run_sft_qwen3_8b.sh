#!/usr/bin/env bash
# The cold start on 8 GPUs: verl's SFT trainer (recipe/relate/main_sft.py, config/relate_sft.yaml) tunes
# Qwen3-8B on the curated set of data_prep/build_sft_dataset.py; RELATE then starts from it:
#
#   python data_prep/build_sft_dataset.py --records ads.jsonl --logs logs.parquet --output-dir outputs/sft
#   bash examples/run_sft_qwen3_8b.sh
#   bash examples/run_relate_qwen3_8b.sh       # starts from RUN_DIR/checkpoints/global_step_N/huggingface by itself
#   DRY_RUN=1 bash examples/run_sft_qwen3_8b.sh   # compose the config, check the inputs, no launch (exit 2 if missing)
#   bash examples/run_pipeline_qwen3_8b.sh     # the whole chain: data -> scorer -> SFT -> RELATE -> eval
#
# verl's SFT trainer writes RUN_DIR/checkpoints/global_step_N/huggingface (checkpoint.save_contents holds
# hf_model) and the newest N to RUN_DIR/checkpoints/latest_checkpointed_iteration.txt
# (verl/utils/checkpoint/checkpoint_handler.py:95,127-132); run_relate_qwen3_8b.sh reads that file.
#
# Environment (defaults in brackets):
#   MODEL_PATH   the model to tune (folder or hub name)        [Qwen/Qwen3-8B]
#   SFT_DATA     output folder of build_sft_dataset.py         [outputs/sft]
#   RUN_DIR      checkpoints/ and metrics.jsonl                [outputs/sft_qwen3_8b]
#   NGPUS        GPUs on this node (torchrun ranks)            [8]
#   PYTHON       interpreter with requirements-gpu.txt installed  [.venv/bin/python if present, else python3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B}
# A local folder (anything but a hub name org/name) is made absolute; a missing one is named before launch.
if [[ -d "$MODEL_PATH" || ! "$MODEL_PATH" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$ ]]; then
  MODEL_PATH=$(realpath -m "$MODEL_PATH")
fi
SFT_DATA=$(realpath -m "${SFT_DATA:-outputs/sft}")
RUN_DIR=$(realpath -m "${RUN_DIR:-outputs/sft_qwen3_8b}")
NGPUS=${NGPUS:-8}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export VERL_FILE_LOGGER_PATH="$RUN_DIR/metrics.jsonl"
ARGS=(
  model.path="$MODEL_PATH"
  trainer.n_gpus_per_node="$NGPUS"
  data.train_files="$SFT_DATA/train.parquet"
  data.val_files="$SFT_DATA/val.parquet"
  trainer.default_local_dir="$RUN_DIR/checkpoints"
)
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  # The same composition and input check as a launch, in one process: no torchrun, no GPU.
  exec "$PYTHON" -m recipe.relate.main_sft "${ARGS[@]}" relate.dry_run=true "$@"
fi
mkdir -p "$RUN_DIR"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS" -m recipe.relate.main_sft "${ARGS[@]}" "$@"
echo "SFT checkpoints: $RUN_DIR/checkpoints/global_step_$(cat "$RUN_DIR/checkpoints/latest_checkpointed_iteration.txt")/huggingface"
