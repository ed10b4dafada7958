#!/usr/bin/env bash
# Build the squashfs image that pyxis runs (environment.container_image in configs/launch/*.yaml).
#
#   bash containers/build_sqsh.sh --from-docker IMAGE OUT.sqsh
#       IMAGE was built with docker on this host (docker build -f containers/Dockerfile -t IMAGE .);
#       enroot converts it from the local docker daemon (dockerd://).
#   bash containers/build_sqsh.sh --base REGISTRY_IMAGE OUT.sqsh [EXTRAS]
#       no docker: enroot imports the base (e.g. nvcr.io#nvidia/pytorch:25.06-py3), the project
#       (this checkout's files that git tracks or does not ignore) is copied into it and installed with
#       containers/install_project.sh (EXTRAS default train,eval,data,llm), and the result is exported.
#
# Run it where enroot is installed (a login or build node) and OUT is on a file system the compute
# nodes share. ENROOT_DATA_PATH, ENROOT_CACHE_PATH etc. are enroot's own settings.
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" >&2
  exit 2
}

[ $# -ge 3 ] || usage
MODE=$1
IMAGE=$2
OUT=$3
EXTRAS=${4:-train,eval,data,llm}
REPO=$(cd "$(dirname "$0")/.." && pwd)

command -v enroot >/dev/null 2>&1 || { echo "[sqsh] enroot is not installed here" >&2; exit 1; }
case "$OUT" in
  *.sqsh|*.squashfs|*.sqfs) ;;
  *) echo "[sqsh] OUT must end with .sqsh (pyxis takes squashfs files): $OUT" >&2; exit 2 ;;
esac
if [ -e "$OUT" ]; then
  echo "[sqsh] $OUT exists; remove it first" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"

case "$MODE" in
  --from-docker)
    enroot import -o "$OUT" "dockerd://$IMAGE"
    ;;
  --base)
    NAME="spt-build-$$"
    TMP=$(mktemp -d -t spt-sqsh.XXXXXX)
    cleanup() {
      enroot remove -f "$NAME" >/dev/null 2>&1 || true
      rm -rf "$TMP"
    }
    trap cleanup EXIT
    enroot import -o "$TMP/base.sqsh" "docker://$IMAGE"
    enroot create -n "$NAME" "$TMP/base.sqsh"
    DATA=${ENROOT_DATA_PATH:-${XDG_DATA_HOME:-$HOME/.local/share}/enroot}
    DEST="$DATA/$NAME/opt/safety-pretraining"
    mkdir -p "$DEST"
    # the checkout's files that git tracks or would track (no virtualenvs, caches or outputs)
    if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
      git -C "$REPO" ls-files -z --cached --others --exclude-standard \
        | (cd "$REPO" && tar --null --no-recursion -cf - -T -) | tar -x -C "$DEST"
    else
      tar -C "$REPO" --exclude=.git --exclude='.venv*' --exclude=.cache --exclude=launches --exclude=out \
        -cf - . | tar -x -C "$DEST"
    fi
    enroot start --root --rw "$NAME" \
      bash /opt/safety-pretraining/containers/install_project.sh /opt/safety-pretraining "$EXTRAS"
    enroot export -o "$OUT" "$NAME"
    ;;
  *)
    usage
    ;;
esac
echo "[sqsh] wrote $OUT; use it with environment.container_image=$OUT environment.venv=null"
