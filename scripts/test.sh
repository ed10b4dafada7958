#!/usr/bin/env bash
# Set-up (idempotent) and the whole test suite. Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/datagen`.
# As root, the set-up also installs a local Slurm for the launch tests (they skip with a reason otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/setup.sh --slurm; else bash scripts/setup.sh; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PROGRESS=0
# lint and format first: seconds, and a failure names the file and line (settings in pyproject.toml)
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -q --durations=25 "$@"
