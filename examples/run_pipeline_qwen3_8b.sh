#!/usr/bin/env bash
# The whole GPU chain on one node (paper section 4): records and impression logs -> the RL, CTCVR and SFT
# datasets -> the CTCVR scorer -> SFT of Qwen3-8B (the cold start) -> RELATE from the SFT policy -> greedy
# generation on held-out prompts by both policies -> evaluation (Table 1 / Table 3 rows: RELATE against SFT).
#
#   bash examples/run_pipeline_qwen3_8b.sh                          # everything not done yet
#   DRY_RUN=1 bash examples/run_pipeline_qwen3_8b.sh                # check the chain's configs and paths, no launch
#   RECORDS=ads.jsonl LOGS=impressions.parquet bash examples/run_pipeline_qwen3_8b.sh
#
# Each step is skipped when its output is there (datasets, scorer and generations are written whole, or not at
# all; the two trainings when this script recorded them finished in WORK/.done-<step>); delete an output to
# redo its step. An interrupted training resumes from verl's newest checkpoint (trainer.resume_mode auto).
# DRY_RUN=1 names each step as done or to run, checks the inputs from outside (RECORDS, LOGS, a local
# BASE_MODEL), and runs the SFT and RELATE scripts' own DRY_RUN with the paths they will get: their whole
# config composed, validated and preflighted, an input an earlier step writes reported as pending
# (relate.pending_inputs), anything else missing named. It exits 2 when something is missing, else 0.
#
# Environment (defaults in brackets):
#   RECORDS      ad records: JSONL, CSV or parquet (README "Your own data")   [data_prep/sample/ad_records.jsonl]
#   LOGS         impression logs of those records; unset: simulated from RECORDS by data_prep/simulate_logs.py
#                (IMPRESSIONS aggregated impressions)                        [simulated]
#   IMPRESSIONS  simulated impressions when LOGS is unset                    [10000000]
#   BASE_MODEL   the model SFT starts from (folder or hub name)              [Qwen/Qwen3-8B]
#   PRESET       the RELATE run's reward preset (model1..model4 | relate)    [relate]
#   WORK         every output of the chain                                   [outputs/pipeline_qwen3_8b]
#   EVAL_PROMPTS held-out (val) prompts each policy writes an ad for         [2000]
#   NGPUS        GPUs of this node                                           [8]
#   PYTHON       interpreter with requirements-gpu.txt installed             [.venv/bin/python if present, else python3]
# The SFT and RELATE steps read the rest of their environment as their scripts document (REWARD_THREADS,
# REWARD_WORKERS_PER_NODE, RELEVANCE_CACHE_DIR, RELATE_JUDGE_*).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RECORDS=$(realpath -m "${RECORDS:-data_prep/sample/ad_records.jsonl}")
WORK=$(realpath -m "${WORK:-outputs/pipeline_qwen3_8b}")
if [[ -n "${LOGS:-}" ]]; then LOGS=$(realpath -m "$LOGS"); SIMULATE=0; else LOGS="$WORK/logs/impressions.parquet"; SIMULATE=1; fi
IMPRESSIONS=${IMPRESSIONS:-10000000}
BASE_MODEL=${BASE_MODEL:-Qwen/Qwen3-8B}
if [[ -d "$BASE_MODEL" || ! "$BASE_MODEL" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$ ]]; then
  BASE_MODEL=$(realpath -m "$BASE_MODEL")
fi
PRESET=${PRESET:-relate}
EVAL_PROMPTS=${EVAL_PROMPTS:-2000}
NGPUS=${NGPUS:-8}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHON
DRY=${DRY_RUN:-0}

DATASET="$WORK/dataset"
TABLES="$WORK/ctcvr_tables"
SFT_DATA="$WORK/sft_dataset"
SCORER="$WORK/ctcvr_model"
SFT_RUN="$WORK/sft"
CKPT="$WORK/checkpoints"
RL_CKPT="$CKPT/relate/$PRESET"
GENERATIONS="$WORK/generations"
EVALUATION="$WORK/evaluation"
MISSING=0

# The transformers folder of verl's newest checkpoint under $1 (its tracker file names the step), $2 the
# folder inside global_step_N: huggingface (SFT) or actor/huggingface (RL, checkpoint.save_contents hf_model).
newest_policy() {
  local tracker="$1/latest_checkpointed_iteration.txt"
  if [[ -f "$tracker" ]]; then echo "$1/global_step_$(tr -d '[:space:]' < "$tracker")/$2"; else echo "$1/global_step_N/$2"; fi
}

# step NAME OUTPUT... -- COMMAND...: run COMMAND unless every OUTPUT exists; DRY_RUN prints what it would do.
step() {
  local name=$1; shift
  local outputs=()
  while [[ $1 != "--" ]]; do outputs+=("$1"); shift; done
  shift
  local absent=()
  for o in "${outputs[@]}"; do [[ -e "$o" ]] || absent+=("$o"); done
  if (( ${#absent[@]} == 0 )); then
    echo "pipeline: $name: done (${outputs[0]})"
    return 0
  fi
  if [[ "$DRY" == "1" ]]; then
    echo "pipeline: $name: to run (writes ${absent[0]}): $*"
    return 0
  fi
  echo "pipeline: $name: running: $*"
  "$@"
}

# What an earlier step writes and is not there yet: relate.pending_inputs of a verl step's DRY_RUN.
pending() {
  local out=() p
  for p in "$@"; do [[ -e "$p" ]] || out+=("'$p'"); done
  local IFS=,
  echo "[${out[*]}]"
}

if [[ "$DRY" == "1" ]]; then
  echo "pipeline: WORK=$WORK RECORDS=$RECORDS LOGS=$LOGS$( ((SIMULATE)) && echo ' (simulated)') BASE_MODEL=$BASE_MODEL"
  if [[ ! -f "$RECORDS" ]]; then echo "pipeline: RECORDS=$RECORDS: no such file" >&2; MISSING=1; fi
  if (( ! SIMULATE )) && [[ ! -f "$LOGS" ]]; then echo "pipeline: LOGS=$LOGS: no such file" >&2; MISSING=1; fi
  if [[ "$BASE_MODEL" == /* && ! -f "$BASE_MODEL/config.json" ]]; then
    echo "pipeline: BASE_MODEL=$BASE_MODEL: not a transformers model folder (no config.json)" >&2; MISSING=1
  fi
fi

# 1. records and logs -> datasets
if (( SIMULATE )); then
  step impression-logs "$LOGS" -- "$PYTHON" -m data_prep.simulate_logs --records "$RECORDS" --output "$LOGS" \
    --aggregate --impressions "$IMPRESSIONS"
fi
step rl-dataset "$DATASET/train.parquet" "$DATASET/val.parquet" -- "$PYTHON" -m data_prep.build_dataset \
  --input "$RECORDS" --output-dir "$DATASET" --tokenizer "$BASE_MODEL" --max-prompt-tokens 1024
step ctcvr-tables "$TABLES/train.parquet" "$TABLES/val.parquet" "$TABLES/test.parquet" -- \
  "$PYTHON" -m data_prep.build_ctcvr_table --logs "$LOGS" --output-dir "$TABLES"
step sft-dataset "$SFT_DATA/train.parquet" "$SFT_DATA/val.parquet" -- "$PYTHON" -m data_prep.build_sft_dataset \
  --records "$RECORDS" --logs "$LOGS" --output-dir "$SFT_DATA"
# 2. the CTCVR scorer (the reward's CTCVR term and the evaluation's predicted CTCVR)
step ctcvr-scorer "$SCORER/config.json" "$SCORER/model.safetensors" -- "$PYTHON" -m ctcvr_model.train \
  --table "$TABLES/train.parquet" --val "$TABLES/val.parquet" --output-dir "$SCORER"

# 3. SFT (cold start) and 4. RELATE from it: verl's trainers through their scripts
run_sft() {
  MODEL_PATH="$BASE_MODEL" SFT_DATA="$SFT_DATA" RUN_DIR="$SFT_RUN" NGPUS="$NGPUS" bash examples/run_sft_qwen3_8b.sh "$@"
}
run_relate() {
  unset MODEL_PATH
  PRESET="$PRESET" SFT_RUN_DIR="$SFT_RUN" DATA_DIR="$DATASET" CTCVR_MODEL_DIR="$SCORER" CKPT_DIR="$CKPT" \
    LOG_DIR="$WORK/logs" NGPUS_PER_NODE="$NGPUS" NNODES=1 bash examples/run_relate_qwen3_8b.sh "$@"
}
mark() { echo "$2" > "$WORK/.done-$1"; }
if [[ "$DRY" == "1" ]]; then
  for check in sft relate; do
    if [[ -f "$WORK/.done-$check" ]]; then echo "pipeline: $check-train: done ($(cat "$WORK/.done-$check"))"; continue; fi
    echo "pipeline: $check-train: to run; its DRY_RUN:"
    rc=0
    if [[ $check == sft ]]; then
      DRY_RUN=1 run_sft "++relate.pending_inputs=$(pending "$SFT_DATA")" || rc=$?
    else
      DRY_RUN=1 run_relate "++relate.pending_inputs=$(pending "$DATASET" "$SCORER" "$SFT_RUN/checkpoints")" || rc=$?
    fi
    if (( rc != 0 )); then echo "pipeline: $check-train: its DRY_RUN failed (exit $rc)" >&2; MISSING=1; fi
  done
else
  mkdir -p "$WORK"
  if [[ ! -f "$WORK/.done-sft" ]]; then
    echo "pipeline: sft-train: running examples/run_sft_qwen3_8b.sh"
    run_sft
    mark sft "$(newest_policy "$SFT_RUN/checkpoints" huggingface)"
  else
    echo "pipeline: sft-train: done ($(cat "$WORK/.done-sft"))"
  fi
  if [[ ! -f "$WORK/.done-relate" ]]; then
    echo "pipeline: relate-train: running examples/run_relate_qwen3_8b.sh (PRESET=$PRESET)"
    run_relate
    mark relate "$(newest_policy "$RL_CKPT" actor/huggingface)"
  else
    echo "pipeline: relate-train: done ($(cat "$WORK/.done-relate"))"
  fi
fi

# 5. held-out generation: greedy, one ad per val prompt (never trained on; RELATE validates on
# data.val_max_samples of them but selects nothing by it), by the SFT and the RELATE policy
SFT_POLICY=$(newest_policy "$SFT_RUN/checkpoints" huggingface)
RL_POLICY=$(newest_policy "$RL_CKPT" actor/huggingface)
for run in sft relate; do
  policy=$SFT_POLICY; [[ $run == relate ]] && policy=$RL_POLICY
  step "generate-$run" "$GENERATIONS/$run.jsonl" -- "$PYTHON" -m relate_eval.generate --model "$policy" \
    --data "$DATASET/val.parquet" --n 1 --temperature 0 --max-new-tokens 256 --limit "$EVAL_PROMPTS" \
    --batch-size 32 --seed 0 --output "$GENERATIONS/$run.jsonl"
done
# 6. evaluation: Table 1 / Table 3 rows with bootstrap intervals, SFT the baseline
step evaluate "$EVALUATION/evaluation.json" -- "$PYTHON" -m relate_eval.evaluate \
  --run "sft=$GENERATIONS/sft.jsonl" --run "relate=$GENERATIONS/relate.jsonl" --baseline-run sft \
  --ctcvr-model "$SCORER" --preset "$PRESET" --output-dir "$EVALUATION"

if [[ "$DRY" == "1" ]]; then
  if (( MISSING )); then echo "pipeline: DRY_RUN: inputs missing or a step's check failed (above): exit 2" >&2; exit 2; fi
  echo "pipeline: DRY_RUN: every step's config and paths check out: not launching"
  exit 0
fi
echo "pipeline: done; report: $EVALUATION/evaluation.md"
