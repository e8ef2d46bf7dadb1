#!/usr/bin/env bash
# The paper's ablation (sec. 4.4: Table 2 presets, Table 3, Figure 3) in local mode on one machine:
# python -m recipe.relate.local_trainer once per preset (model1, model2, model3, model4, relate)
# with the same seed, data, step budget, starting model and every other setting, then
# examples/ablation/compare_local.py (Table 3 from a held-out evaluation of each run's final/
# model, the same metrics on the training batches, and the training curves).
#
#   bash examples/ablation/run_local_ablation.sh                                   # 30 steps per preset
#   STEPS=2 OUT_DIR=/tmp/ablation bash examples/ablation/run_local_ablation.sh     # a smoke run
#   bash examples/ablation/run_local_ablation.sh actor_rollout_ref.model.lora_rank=8   # Hydra overrides, all five runs
#   COMPARE_ARGS="--limit 16" bash examples/ablation/run_local_ablation.sh         # evaluate on 16 val prompts
#
# Cost on a 2-core CPU with SmolLM2-135M at the defaults (4 prompts x G=4, 96 new tokens), measured
# on idle cores at commit 236d5ae (before shared prompt prefixes; a faster CPU than the AVX2-only one
# where the demo's steps took 91-175 s): STEPS=10 took 77 min in all (800-906 s per preset run,
# 61-102 s per step, then 8 min for the held-out generation and evaluation of six models on 34 val
# prompts; COMPARE_ARGS="--limit K" for fewer). Busy cores slow the steps several-fold. Memory: up to ~15 GB RSS per run (the long
# Chinese prompts); disk: ~2.1 GB per preset (one 1.6 GB checkpoint with the AdamW state, kept for
# resuming, + final/). The outcome of that run is in the README ("Results at CPU toy scale").
#
# Resuming: rerun the same command. A preset whose run finished with the same command is skipped
# (marker OUT_DIR/<preset>/.ablation-done); an interrupted one resumes from its newest checkpoint
# (local.checkpoint_every, 10 steps by default); compare_local reuses the generations and
# evaluations of models that did not change.
#
# Environment (defaults in brackets):
#   STEPS            training steps per preset (local.max_steps)                 [30]
#   SEED             local.seed (rollout sampling, data order, init)             [1]
#   OUT_DIR          one run folder per preset + comparison/                     [outputs/ablation_local]
#   MODEL_PATH       starting policy, a Hugging Face folder                      [empty: SmolLM2-135M-Instruct]
#   DATA_DIR         RL parquet folder (train.parquet, val.parquet)              [outputs/demo/dataset]
#   CTCVR_MODEL_DIR  CTCVR scorer of python -m ctcvr_model.train                 [outputs/demo/ctcvr_model]
#   COMPARE_ARGS     extra arguments of compare_local.py, e.g. "--no-eval"        []
#   PYTHON           interpreter with requirements*.txt installed                [.venv/bin/python if present, else python3]
# The default DATA_DIR and CTCVR_MODEL_DIR are written by `make demo` (python -m examples.demo);
# this script does not build them. Arguments are Hydra overrides for all five runs (after the
# script's own, so they win), e.g. local.val_every=5 or data.train_batch_size=8.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the comment above is the help
  sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

STEPS=${STEPS:-30}
SEED=${SEED:-1}
OUT_DIR=${OUT_DIR:-outputs/ablation_local}
MODEL_PATH=${MODEL_PATH:-}
DATA_DIR=${DATA_DIR:-outputs/demo/dataset}
CTCVR_MODEL_DIR=${CTCVR_MODEL_DIR:-outputs/demo/ctcvr_model}
COMPARE_ARGS=${COMPARE_ARGS:-}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PRESETS=(model1 model2 model3 model4 relate)

missing=()
for f in "$DATA_DIR/train.parquet" "$DATA_DIR/val.parquet" "$CTCVR_MODEL_DIR/config.json"; do
  [[ -f "$f" ]] || missing+=("$f")
done
if (( ${#missing[@]} )); then
  echo "run_local_ablation.sh: missing ${missing[*]}" >&2
  echo "  build the RL dataset and the CTCVR scorer first: 'make demo' (or '$PYTHON -m examples.demo'," >&2
  echo "  which writes outputs/demo/dataset and outputs/demo/ctcvr_model), or set DATA_DIR / CTCVR_MODEL_DIR" >&2
  echo "  to the outputs of data_prep/build_dataset.py and python -m ctcvr_model.train." >&2
  exit 2
fi

MODEL_ARGS=()
if [[ -n "$MODEL_PATH" ]]; then MODEL_ARGS=(actor_rollout_ref.model.path="$MODEL_PATH"); fi

start=$SECONDS
i=0
for preset in "${PRESETS[@]}"; do
  i=$((i + 1))
  run_dir="$OUT_DIR/$preset"
  # Identical for the five runs except the preset and its folder; the preset's defaults decide the rest.
  cmd=("$PYTHON" -m recipe.relate.local_trainer
       relate.preset="$preset"
       relate.ctcvr_model_dir="$CTCVR_MODEL_DIR"
       data.train_files="$DATA_DIR/train.parquet"
       data.val_files="$DATA_DIR/val.parquet"
       "${MODEL_ARGS[@]}"
       local.output_dir="$run_dir"
       local.max_steps="$STEPS"
       local.seed="$SEED"
       local.resume=true
       local.keep_checkpoints=1
       "$@")
  marker="$run_dir/.ablation-done"
  if [[ -f "$marker" && -f "$run_dir/final/config.json" && "$(cat "$marker")" == "${cmd[*]}" ]]; then
    echo "[$i/5] $preset: finished earlier with the same command, skipped ($run_dir)"
    continue
  fi
  echo "[$i/5] $preset: ${cmd[*]}"
  t0=$SECONDS
  rm -f "$marker"
  "${cmd[@]}"
  printf '%s' "${cmd[*]}" > "$marker"
  echo "[$i/5] $preset: done in $((SECONDS - t0)) s (elapsed $((SECONDS - start)) s)"
done

# shellcheck disable=SC2206  # COMPARE_ARGS is a list of words
compare=("$PYTHON" -m examples.ablation.compare_local --runs-dir "$OUT_DIR"
         --data "$DATA_DIR/val.parquet" --ctcvr-model "$CTCVR_MODEL_DIR" $COMPARE_ARGS)
echo "compare: ${compare[*]}"
t0=$SECONDS
"${compare[@]}"
echo "compare: done in $((SECONDS - t0)) s; total $((SECONDS - start)) s; outputs in $OUT_DIR/comparison"
