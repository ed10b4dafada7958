#!/usr/bin/env bash
# The trainer's GPU check (bench/gpu_check.py), and the preparation of what it carries.
#
#   bash scripts/gpu_check.sh prepare [DIR]    # here (registry reachable, .venv set up): wheels + tiny corpus
#   bash scripts/gpu_check.sh run [DIR] [-- ARGS for bench/gpu_check.py]   # on the GPU machine, offline
#   bash scripts/gpu_check.sh dry [DIR]        # the same run on the CPU at toy sizes (tests this script)
#
# DIR defaults to .cache/gpu_check (ignored by git; carry it to the GPU machine with the working tree).
# prepare writes DIR/wheels (megatron-core, torchao and psutil for CPython 3.12 / manylinux x86_64,
# ~6 MB; the GPU image has torch 2.11 (cu130), transformers, numpy, pyarrow, but none of these) and
# DIR/corpus (the tests' tiny corpus: 384-token tokenizer, five buckets, a few hundred KB; building it
# needs streaming, which the GPU image lacks). run installs the wheels with --no-index into DIR/site
# (nothing outside DIR changes), puts DIR/site and the repository on PYTHONPATH and runs
# bench/gpu_check.py within 450 s (one command of at most 8 minutes). Output: runs/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MEGATRON_CORE=0.16.1   # the version the CPU tests run (pyproject.toml's train extra)
TORCHAO=0.17.0         # built for torch >= 2.11 (the GPU image's torch; pyproject.toml's gpu extra)
PSUTIL=7.2.2

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
cmd=${1:-}; [ -n "$cmd" ] || usage; shift
DIR=.cache/gpu_check
if [ $# -gt 0 ] && [ "$1" != "--" ]; then DIR=$1; shift; fi
[ "${1:-}" = "--" ] && shift
case "$DIR" in /*) ;; *) DIR=$ROOT/$DIR ;; esac
PY=${PYTHON:-python3}

case "$cmd" in
  prepare)
    [ -x .venv/bin/python ] || { echo "gpu_check prepare: .venv missing (bash scripts/setup.sh)" >&2; exit 2; }
    mkdir -p "$DIR/wheels"
    .venv/bin/python -m pip download -q --no-deps --dest "$DIR/wheels" \
      --python-version 3.12 --only-binary=:all: --platform manylinux_2_28_x86_64 \
      "megatron-core==$MEGATRON_CORE" "torchao==$TORCHAO" "psutil==$PSUTIL"
    .venv/bin/python - "$DIR/corpus" <<'PYEOF'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.trainer.conftest import build_tiny_corpus
out = Path(sys.argv[1])
if not (out / "manifest.json").is_file():
    build_tiny_corpus(out)
PYEOF
    du -sh "$DIR/wheels" "$DIR/corpus"; ls -l "$DIR/wheels"
    ;;
  run|dry)
    [ -d "$DIR/corpus" ] || { echo "gpu_check $cmd: $DIR/corpus missing (bash scripts/gpu_check.sh prepare $DIR)" >&2; exit 2; }
    SITE="$DIR/site"
    if [ "$cmd" = run ]; then
      export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
      if ! "$PY" -c "import megatron.core, torchao, psutil" 2>/dev/null; then
        ls "$DIR"/wheels/*.whl >/dev/null 2>&1 || { echo "gpu_check run: no wheels in $DIR/wheels" >&2; exit 2; }
        mkdir -p "$SITE"
        if "$PY" -m pip --version >/dev/null 2>&1; then
          "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$DIR"/wheels/*.whl
        else  # no pip in the image: a wheel is a zip archive of the installed tree
          for w in "$DIR"/wheels/*.whl; do "$PY" -m zipfile -e "$w" "$SITE"; done
        fi
      fi
      export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$DIR/inductor_cache}
      exec timeout 470 "$PY" bench/gpu_check.py --corpus "$DIR/corpus" --budget-s 450 "$@"
    else
      PY=${PYTHON:-.venv/bin/python}
      export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
      exec "$PY" bench/gpu_check.py --dry-run --corpus "$DIR/corpus" --out runs/gpu_check_dry "$@"
    fi
    ;;
  *) usage ;;
esac
