#!/usr/bin/env bash
# GPU readiness check (issue 21): ResNet50 fp32 / bf16 + channels_last / torch.compile images/s and MFU, DDP over the
# GPUs present, ONNX Runtime CUDA fp16 parity; one table in under 8 minutes (scripts/gpu_check.py). Never run in CI.
# Without a CUDA device it prints one line ("gpu_check: no CUDA device ...") and exits 0.
#   scripts/gpu_check.sh [--budget 420] [--batch 128] [--no-compile] [--no-ddp] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
exec timeout --signal=TERM --kill-after=20 480 "$PYTHON" scripts/gpu_check.py "$@"
