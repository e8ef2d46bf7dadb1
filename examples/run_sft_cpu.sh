#!/usr/bin/env bash
# The cold start on CPU: verl's own SFT trainer (recipe/relate/main_sft.py) on the host through verl_cpu,
# the same trainer, dataset, loss and checkpoints as examples/run_sft_qwen3_8b.sh on GPUs.
#
#   MODEL_PATH=/path/to/policy SFT_DATA=outputs/sft bash examples/run_sft_cpu.sh [hydra overrides]
#
# Environment (defaults in brackets):
#   MODEL_PATH   the starting policy (a transformers folder)                      [required]
#   SFT_DATA     output folder of data_prep/build_sft_dataset.py                 [outputs/sft]
#   RUN_DIR      checkpoints/ and metrics.jsonl go here                           [outputs/sft_cpu]
#   PYTHON       interpreter with requirements.txt installed  [.venv/bin/python if present, else python3]
# The trained policy: RUN_DIR/checkpoints/global_step_N/huggingface (pass it to run_relate_cpu.sh as
# actor_rollout_ref.model.path=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${MODEL_PATH:?set MODEL_PATH to the starting policy folder}"
SFT_DATA=$(realpath -m "${SFT_DATA:-outputs/sft}")
RUN_DIR=$(realpath -m "${RUN_DIR:-outputs/sft_cpu}")
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=verl_cpu HF_HUB_OFFLINE=1
export VERL_FILE_LOGGER_PATH="$RUN_DIR/metrics.jsonl"
mkdir -p "$RUN_DIR"
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 -m recipe.relate.main_sft \
  sft_backend=cpu \
  model.path="$(realpath "$MODEL_PATH")" \
  data.train_files="$SFT_DATA/train.parquet" \
  data.val_files="$SFT_DATA/val.parquet" \
  trainer.default_local_dir="$RUN_DIR/checkpoints" \
  "$@"
