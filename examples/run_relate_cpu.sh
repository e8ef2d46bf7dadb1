#!/usr/bin/env bash
# RELATE through verl's own training loop on CPU (package verl_cpu: platform "cpu", FSDP2 over
# gloo, a Hugging Face "hf" rollout): the same RayPPOTrainer v1, reward-loop workers, TransferQueue,
# estimator, checkpoints and validation as the 8-GPU run, sized for a host (config/backend/cpu.yaml).
#
#   bash examples/run_relate_cpu.sh                                   # SmolLM2-135M-Instruct, 2 steps
#   POLICY=tiny bash examples/run_relate_cpu.sh                       # the tiny test policy (fast)
#   POLICY=testbed bash examples/run_relate_cpu.sh                    # the testbed (built first, ~5 min)
#   bash examples/run_relate_cpu.sh trainer.total_training_steps=4    # any Hydra override
#
# Environment (defaults in brackets):
#   POLICY       smollm2 | tiny | testbed (python -m testbed)    [smollm2]
#   PRESET       model1 | model2 | model3 | model4 | relate      [relate]
#   RUN_DIR      the run's folder: inputs, checkpoints/, metrics.jsonl   [outputs/relate_cpu/<policy>-<preset>]
#   IMPRESSIONS  simulated impressions for the CTCVR scorer      [50000]
#   PYTHON       interpreter with requirements.txt installed     [.venv/bin/python if present, else python3]
# The inputs (RL parquet, simulated logs, CTCVR scorer, starting policy) are built from the bundled
# sample into RUN_DIR on the first run and reused while up to date (python -m examples.cpu_run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

POLICY=${POLICY:-smollm2}
PRESET=${PRESET:-relate}
RUN_DIR=$(realpath -m "${RUN_DIR:-outputs/relate_cpu/$POLICY-$PRESET}")
IMPRESSIONS=${IMPRESSIONS:-50000}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=verl_cpu HF_HUB_OFFLINE=1
export VERL_FILE_LOGGER_PATH="$RUN_DIR/metrics.jsonl"
mkdir -p "$RUN_DIR"

"$PYTHON" -m examples.cpu_run prepare --run-dir "$RUN_DIR" --policy "$POLICY" --impressions "$IMPRESSIONS"
mapfile -t OVERRIDES < "$RUN_DIR/overrides.txt"

"$PYTHON" -m recipe.relate.main_relate \
  backend=cpu \
  relate.preset="$PRESET" \
  "${OVERRIDES[@]}" \
  "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH=$VERL_FILE_LOGGER_PATH" \
  "$@"

if [[ -s "$VERL_FILE_LOGGER_PATH" ]]; then
  "$PYTHON" -m examples.cpu_run summary "$VERL_FILE_LOGGER_PATH"
  echo "metrics (one JSON line per step): $VERL_FILE_LOGGER_PATH"
  echo "checkpoints: $RUN_DIR/checkpoints"
fi
