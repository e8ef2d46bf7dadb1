#!/usr/bin/env bash
# Paper Table 2, Model 3: the paper setup with only the reward preset changed (see run_relate_qwen3_8b.sh).
PRESET=model3 exec bash "$(dirname "${BASH_SOURCE[0]}")/../run_relate_qwen3_8b.sh" "$@"
