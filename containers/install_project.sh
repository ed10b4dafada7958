#!/usr/bin/env bash
# Install the project into an environment that already has its CUDA stack (NVIDIA's PyTorch container,
# a vLLM image, a site module's torch) without replacing any of it: the installed torch, torchvision,
# Transformer-Engine, apex, triton and NVIDIA libraries are pinned as pip constraints first
# (containers/site_constraints.py), the project is installed with the extras asked for, and the pins
# are checked again afterwards.
#
#   bash containers/install_project.sh SRC [EXTRAS]     # EXTRAS e.g. train,eval,data (default: none)
#
# Environment: PYTHON (default python3), PIP (default "$PYTHON -m pip", or "uv pip" where the image
# has no pip), PIP_ARGS (more arguments for the install, e.g. "--dry-run --report out.json"),
# SPT_CONSTRAINTS (where the constraints file goes; default a temporary file).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 SRC [EXTRAS]" >&2
  exit 2
fi
SRC=$(cd "$1" && pwd)
EXTRAS=${2:-}
PYTHON=${PYTHON:-python3}
if [ -z "${PIP:-}" ]; then
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    PIP="$PYTHON -m pip"
  elif command -v uv >/dev/null 2>&1; then
    PIP="uv pip --python $PYTHON"
  else
    echo "[install] neither '$PYTHON -m pip' nor uv is available" >&2
    exit 1
  fi
fi
CONSTRAINTS=${SPT_CONSTRAINTS:-$(mktemp -t spt-site-constraints.XXXXXX)}

"$PYTHON" "$SRC/containers/site_constraints.py" > "$CONSTRAINTS"
echo "[install] keeping the site stack: $(grep -v '^#' "$CONSTRAINTS" | grep -E '^(torch|transformer-engine|apex)' | paste -sd' ' - || true)"

TARGET=$SRC
if [ -n "$EXTRAS" ]; then TARGET="${SRC}[${EXTRAS}]"; fi
# shellcheck disable=SC2086  # PIP and PIP_ARGS are word lists
$PIP install -c "$CONSTRAINTS" ${PIP_ARGS:-} "$TARGET"

"$PYTHON" "$SRC/containers/site_constraints.py" --check "$CONSTRAINTS"
