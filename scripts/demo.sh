#!/usr/bin/env bash
# Set-up (idempotent), then the end-to-end demo on the embedded default data:
# corpus (datagen + LLM stage) -> tiny curriculum training -> HF export -> evaluation report.
# A second run reuses finished steps; `bash scripts/demo.sh --fresh` starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m launch.demo "$@"
