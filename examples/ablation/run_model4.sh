#!/usr/bin/env bash
# Paper Table 2, Model 4: the paper setup with only the reward preset changed (see run_relate_qwen3_8b.sh),
# from the same SFT policy: by default the newest checkpoint examples/run_sft_qwen3_8b.sh wrote
# (SFT_RUN_DIR/checkpoints/global_step_N/huggingface; MODEL_PATH overrides it). DRY_RUN=1 checks without launching.
PRESET=model4 exec bash "$(dirname "${BASH_SOURCE[0]}")/../run_relate_qwen3_8b.sh" "$@"
