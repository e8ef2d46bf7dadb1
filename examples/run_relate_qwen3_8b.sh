#!/usr/bin/env bash
# RELATE on Qwen3-8B with the paper's setup (section 4.1): 8 GPUs, G = 5 responses per prompt,
# 288 prompts x 5 = 1440 responses per step, GRPO with clip and KL loss, FSDP with parameters
# kept unsharded after forward (the ZeRO-2 equivalent in verl 0.9.1).
#
#   bash examples/run_relate_qwen3_8b.sh                       # launch (needs GPUs + requirements-gpu.txt)
#   DRY_RUN=1 bash examples/run_relate_qwen3_8b.sh             # compose + validate + print, no launch
#   bash examples/run_relate_qwen3_8b.sh trainer.total_training_steps=300   # any Hydra override
#
# Environment (defaults in brackets):
#   PRESET           model1 | model2 | model3 | model4 | relate            [relate]
#   MODEL_PATH       policy model folder or hub name                       [Qwen/Qwen3-8B]
#   DATA_DIR         output of data_prep/build_dataset.py                  [data/relate]
#   CTCVR_MODEL_DIR  output of python -m ctcvr_model.train                 [outputs/ctcvr_model]
#   NNODES, NGPUS_PER_NODE                                                 [1, 8]
#   PYTHON           interpreter with requirements*.txt installed          [.venv/bin/python if present, else python3]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PRESET=${PRESET:-relate}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B}
DATA_DIR=${DATA_DIR:-data/relate}
CTCVR_MODEL_DIR=${CTCVR_MODEL_DIR:-outputs/ctcvr_model}
NNODES=${NNODES:-1}
NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY_RUN_ARGS=()
if [[ "${DRY_RUN:-0}" == "1" ]]; then DRY_RUN_ARGS=(relate.dry_run=true); fi

exec "$PYTHON" -m recipe.relate.main_relate \
  relate.preset="$PRESET" \
  relate.ctcvr_model_dir="$CTCVR_MODEL_DIR" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/val.parquet" \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$NGPUS_PER_NODE" \
  "${DRY_RUN_ARGS[@]}" \
  "$@"
