#!/usr/bin/env bash
# The paper's ablation (sec. 4.4: Table 2's five presets, Table 3, Figure 3) at testbed scale on a CPU,
# every run through verl's own loop (recipe.relate.main_relate backend=cpu):
# python -m examples.ablation.cpu_ablation (its --help and docstring say every stage).
#
#   bash examples/ablation/run_cpu_ablation.sh                       # the defaults: 5 presets x 2 seeds
#   SEEDS="1 2 3" STEPS=40 bash examples/ablation/run_cpu_ablation.sh
#   SMOKE=1 OUT_DIR=/tmp/ablation bash examples/ablation/run_cpu_ablation.sh   # every stage, tiny
#
# The starting point (dataset, CTCVR scorer, testbed, SFT) is the demo's, in outputs/demo: built here
# if `make demo` has not built it. Cost on 2 cores at the defaults: README ("CPU ablation").
# Rerun the same command to continue: finished stages are skipped, an interrupted run resumes from
# its last checkpoint; SEEDS="1" first and SEEDS="1 2" later reuses the seed-1 runs.
#
# Environment (defaults in brackets):
#   STEPS     RL steps per run                                    [the module's DEFAULT: 50; 2 with SMOKE=1]
#   SEEDS     seeds, one run per preset each                      [1 2; 1 with SMOKE=1]
#   OUT_DIR   runs, generations, table3.md, figure3.png           [outputs/ablation; outputs/ablation-smoke]
#   BASE_DIR  the starting point's folder                         [outputs/demo; outputs/demo-smoke with SMOKE=1]
#   RUNS_AT_ONCE  verl runs side by side, cores split between them  [2]
#   SMOKE     1: every stage at a tiny size (the test suite runs it) [0]
#   PYTHON    interpreter with the requirements installed         [.venv/bin/python if present, else python3]
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then  # the comment above is the help
  sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
args=()
if [[ "${SMOKE:-0}" == "1" ]]; then args+=(--smoke); fi
if [[ -n "${STEPS:-}" ]]; then args+=(--steps "$STEPS"); fi
# shellcheck disable=SC2206  # SEEDS is a list of words
if [[ -n "${SEEDS:-}" ]]; then args+=(--seeds $SEEDS); fi
if [[ -n "${OUT_DIR:-}" ]]; then args+=(--output-dir "$OUT_DIR"); fi
if [[ -n "${BASE_DIR:-}" ]]; then args+=(--base-dir "$BASE_DIR"); fi
if [[ -n "${RUNS_AT_ONCE:-}" ]]; then args+=(--runs-at-once "$RUNS_AT_ONCE"); fi
exec "$PYTHON" -m examples.ablation.cpu_ablation "${args[@]}" "$@"
