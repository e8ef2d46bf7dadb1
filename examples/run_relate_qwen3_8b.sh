#!/usr/bin/env bash
# RELATE on Qwen3-8B with the paper's setup (section 4.1): 8 GPUs, G = 5 responses per prompt,
# 288 prompts x 5 = 1440 responses per step, GRPO with clip and KL loss, FSDP with parameters
# kept unsharded after forward (the ZeRO-2 equivalent in verl 0.9.1).
#
#   bash examples/run_relate_qwen3_8b.sh                       # launch (needs GPUs + requirements-gpu.txt)
#   DRY_RUN=1 bash examples/run_relate_qwen3_8b.sh             # compose + validate + preflight + print, no launch
#   bash examples/run_relate_qwen3_8b.sh trainer.total_training_steps=300   # any Hydra override
#
# Environment (defaults in brackets):
#   PRESET           model1 | model2 | model3 | model4 | relate            [relate]
#   MODEL_PATH       policy model folder or hub name                       [Qwen/Qwen3-8B]
#   DATA_DIR         output of data_prep/build_dataset.py                  [data/relate]
#   CTCVR_MODEL_DIR  output of python -m ctcvr_model.train                 [outputs/ctcvr_model]
#   CKPT_DIR         checkpoints go to CKPT_DIR/<project>/<experiment>     [checkpoints]
#   NNODES, NGPUS_PER_NODE                                                 [1, 8]
#   PYTHON           interpreter with requirements*.txt installed          [.venv/bin/python if present, else python3]
#   RELATE_JUDGE_BASE_URL, RELATE_JUDGE_MODEL, RELATE_JUDGE_API_KEY        the LLM judge's endpoint, if used: when set
#                    here they are forwarded to every Ray worker (ray_kwargs.ray_init.runtime_env.env_vars, by
#                    main_relate); the key is never printed (masked as ***)
# Relative paths are taken from the repository root and made absolute here: Ray workers, on other
# nodes above all, resolve a relative path in their own working directory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PRESET=${PRESET:-relate}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-8B}
DATA_DIR=$(realpath -m "${DATA_DIR:-data/relate}")
CTCVR_MODEL_DIR=$(realpath -m "${CTCVR_MODEL_DIR:-outputs/ctcvr_model}")
CKPT_DIR=$(realpath -m "${CKPT_DIR:-checkpoints}")
if [[ -d "$MODEL_PATH" ]]; then MODEL_PATH=$(realpath "$MODEL_PATH"); fi  # a local folder; a hub name stays as is
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
  trainer.default_local_dir="$CKPT_DIR/\${trainer.project_name}/\${trainer.experiment_name}" \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$NGPUS_PER_NODE" \
  "${DRY_RUN_ARGS[@]}" \
  "$@"
