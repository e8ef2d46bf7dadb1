#!/usr/bin/env bash
# RELATE on Qwen3-8B with the paper's setup (section 4.1): 8 GPUs, G = 5 responses per prompt,
# 288 prompts x 5 = 1440 responses per step in one update, GRPO with clip and KL loss, FSDP with parameters
# kept unsharded after forward (the ZeRO-2 equivalent in verl 0.9.1). RL starts from the cold-start (SFT)
# policy, as in the paper: by default the newest checkpoint examples/run_sft_qwen3_8b.sh wrote.
#
#   bash examples/run_relate_qwen3_8b.sh                       # launch (needs GPUs + requirements-gpu.txt)
#   DRY_RUN=1 bash examples/run_relate_qwen3_8b.sh             # compose + validate + preflight + print, no launch
#   bash examples/run_relate_qwen3_8b.sh trainer.total_training_steps=300   # any Hydra override
#   bash examples/run_pipeline_qwen3_8b.sh                     # the whole chain: data -> scorer -> SFT -> RELATE -> eval
#
# Environment (defaults in brackets):
#   PRESET           model1 | model2 | model3 | model4 | relate            [relate]
#   MODEL_PATH       policy model folder or hub name (Qwen/Qwen3-8B starts from the raw model)
#                    [SFT_RUN_DIR/checkpoints/global_step_N/huggingface, N = the step in verl's
#                    SFT_RUN_DIR/checkpoints/latest_checkpointed_iteration.txt]
#   SFT_RUN_DIR      RUN_DIR of examples/run_sft_qwen3_8b.sh                [outputs/sft_qwen3_8b]
#   DATA_DIR         output of data_prep/build_dataset.py                  [data/relate]
#   CTCVR_MODEL_DIR  output of python -m ctcvr_model.train                 [outputs/ctcvr_model]
#   CKPT_DIR         checkpoints go to CKPT_DIR/<project>/<experiment>     [checkpoints]
#   LOG_DIR          TensorBoard (LOG_DIR/relate/PRESET/tensorboard) and verl's per-step
#                    metrics.jsonl (LOG_DIR/relate/PRESET/metrics.jsonl)   [logs]
#   RELEVANCE_CACHE_DIR  the relevance encoders' embedding cache, one sqlite file per node: a node-local
#                    folder, not NFS                                        [${TMPDIR:-/tmp}/relate-relevance-cache]
#   REWARD_THREADS   torch/BLAS threads per reward-loop worker              [1]
#                    (measured: 2 threads cost 12x the CPU of 1 on the per-sample products: BLAS threads spin)
#   REWARD_WORKERS_PER_NODE  reward-loop workers per node                   [(cores - 2 x NGPUS_PER_NODE) / REWARD_THREADS]
#                    (cores: nproc on this node; all nodes alike. 2 cores per GPU stay with its trainer rank and its
#                    vLLM engine. reward.num_workers = REWARD_WORKERS_PER_NODE x NNODES: verl places them round-robin
#                    over the nodes. README "Reward workers" has the measured cost per step.)
#   NNODES, NGPUS_PER_NODE                                                 [1, 8]
#   PYTHON           interpreter with requirements*.txt installed          [.venv/bin/python if present, else python3]
#   RELATE_JUDGE_BASE_URL, RELATE_JUDGE_MODEL, RELATE_JUDGE_API_KEY        the LLM judge's endpoint, if used: when set
#                    here they are forwarded to every Ray worker (ray_kwargs.ray_init.runtime_env.env_vars, by
#                    main_relate); the key is never printed (masked as ***)
# Relative paths are taken from the repository root and made absolute here: Ray workers, on other
# nodes above all, resolve a relative path in their own working directory. A missing input (data files, CTCVR
# model, a local MODEL_PATH) stops the run before launch, every one named, with exit status 2 (DRY_RUN too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PRESET=${PRESET:-relate}
SFT_RUN_DIR=$(realpath -m "${SFT_RUN_DIR:-outputs/sft_qwen3_8b}")
if [[ -z "${MODEL_PATH:-}" ]]; then
  # verl's SFT trainer writes default_local_dir/global_step_N/huggingface and the newest N to
  # latest_checkpointed_iteration.txt (verl/utils/checkpoint/checkpoint_handler.py:95,127-132).
  TRACKER="$SFT_RUN_DIR/checkpoints/latest_checkpointed_iteration.txt"
  if [[ -f "$TRACKER" ]]; then
    MODEL_PATH="$SFT_RUN_DIR/checkpoints/global_step_$(tr -d '[:space:]' < "$TRACKER")/huggingface"
  else
    MODEL_PATH="$SFT_RUN_DIR/checkpoints/global_step_N/huggingface"
    echo "relate: no SFT checkpoint yet ($TRACKER is missing): run examples/run_sft_qwen3_8b.sh first," \
         "or set MODEL_PATH (MODEL_PATH=Qwen/Qwen3-8B starts RL from the raw model)" >&2
  fi
fi
DATA_DIR=$(realpath -m "${DATA_DIR:-data/relate}")
CTCVR_MODEL_DIR=$(realpath -m "${CTCVR_MODEL_DIR:-outputs/ctcvr_model}")
CKPT_DIR=$(realpath -m "${CKPT_DIR:-checkpoints}")
LOG_DIR=$(realpath -m "${LOG_DIR:-logs}")
RELEVANCE_CACHE_DIR=$(realpath -m "${RELEVANCE_CACHE_DIR:-${TMPDIR:-/tmp}/relate-relevance-cache}")
# A local folder (anything but a hub name org/name) is made absolute; the preflight names it if it is missing.
if [[ -d "$MODEL_PATH" || ! "$MODEL_PATH" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$ ]]; then
  MODEL_PATH=$(realpath -m "$MODEL_PATH")
fi
NNODES=${NNODES:-1}
NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
REWARD_THREADS=${REWARD_THREADS:-1}
if [[ -z "${REWARD_WORKERS_PER_NODE:-}" ]]; then
  REWARD_WORKERS_PER_NODE=$(( ($(nproc) - 2 * NGPUS_PER_NODE) / REWARD_THREADS ))
  if (( REWARD_WORKERS_PER_NODE < 1 )); then REWARD_WORKERS_PER_NODE=1; fi
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
DRY_RUN_ARGS=()
if [[ "${DRY_RUN:-0}" == "1" ]]; then DRY_RUN_ARGS=(relate.dry_run=true); fi

exec "$PYTHON" -m recipe.relate.main_relate \
  relate.preset="$PRESET" \
  relate.ctcvr_model_dir="$CTCVR_MODEL_DIR" \
  relate.relevance.cache_dir="$RELEVANCE_CACHE_DIR" \
  relate.reward_threads="$REWARD_THREADS" \
  reward.num_workers=$(( REWARD_WORKERS_PER_NODE * NNODES )) \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/val.parquet" \
  trainer.default_local_dir="$CKPT_DIR/\${trainer.project_name}/\${trainer.experiment_name}" \
  "++ray_kwargs.ray_init.runtime_env.env_vars.TENSORBOARD_DIR=$LOG_DIR/relate/$PRESET/tensorboard" \
  "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$LOG_DIR/relate/$PRESET/metrics.jsonl" \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node="$NGPUS_PER_NODE" \
  "${DRY_RUN_ARGS[@]}" \
  "$@"
