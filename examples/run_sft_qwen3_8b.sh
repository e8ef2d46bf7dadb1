#!/usr/bin/env bash
# The cold start on 8 GPUs: verl's SFT trainer (recipe/relate/main_sft.py, config/relate_sft.yaml) tunes
# Qwen3-8B on the curated set of data_prep/build_sft_dataset.py; RELATE then starts from it:
#
#   python data_prep/build_sft_dataset.py --records ads.jsonl --logs logs.parquet --output-dir outputs/sft
#   bash examples/run_sft_qwen3_8b.sh
#   MODEL_PATH=outputs/sft_checkpoints/global_step_N/huggingface bash examples/run_relate_qwen3_8b.sh
#
# Environment (defaults in brackets):
#   MODEL_PATH   the model to tune (folder or hub name)        [Qwen/Qwen3-8B]
#   SFT_DATA     output folder of build_sft_dataset.py         [outputs/sft]
#   RUN_DIR      checkpoints/ and metrics.jsonl                [outputs/sft_qwen3_8b]
#   NGPUS        GPUs on this node (torchrun ranks)            [8]
#   PYTHON       interpreter with requirements-gpu.txt installed  [python3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B}
if [[ -d "$MODEL_PATH" ]]; then MODEL_PATH=$(realpath "$MODEL_PATH"); fi  # a local folder; a hub name stays as is
SFT_DATA=$(realpath -m "${SFT_DATA:-outputs/sft}")
RUN_DIR=$(realpath -m "${RUN_DIR:-outputs/sft_qwen3_8b}")
NGPUS=${NGPUS:-8}
PYTHON=${PYTHON:-python3}
export VERL_FILE_LOGGER_PATH="$RUN_DIR/metrics.jsonl"
mkdir -p "$RUN_DIR"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS" -m recipe.relate.main_sft \
  model.path="$MODEL_PATH" \
  trainer.n_gpus_per_node="$NGPUS" \
  data.train_files="$SFT_DATA/train.parquet" \
  data.val_files="$SFT_DATA/val.parquet" \
  trainer.default_local_dir="$RUN_DIR/checkpoints" \
  "$@"
