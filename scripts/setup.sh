#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine (root) or a warm one: apt packages, .venv, TensorFlow,
# Horovod built from source against it (wheel cached outside the checkout), the package itself.
# A second run on a ready machine only checks stamps and takes seconds.
#
# Flavour: GPU (tensorflow[and-cuda], Horovod with NCCL) when `nvidia-smi` sees a GPU or EXACLIMATE_GPU=1;
# EXACLIMATE_GPU=0 forces the CPU flavour (tensorflow-cpu, Horovod with Gloo + MPI only).
# Output: only `[setup]` lines and errors; everything the tools print goes to the log file named at the end
# (EXACLIMATE_SETUP_LOG, default $EXACLIMATE_CACHE/setup.log). `--dry-run` prints the decisions and installs
# nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EXACLIMATE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TF_VERSION="2.18.1"
TF_CUDA_MAJOR="12"  # TensorFlow 2.18 is built against CUDA 12 (12.5) and cuDNN 9
HOROVOD_VERSION="0.28.1"
CACHE="${EXACLIMATE_CACHE:-$HOME/.cache/exascale_climate}"
LOG="${EXACLIMATE_SETUP_LOG:-$CACHE/setup.log}"
WITH_SLURM=0
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --with-slurm) WITH_SLURM=1 ;;
    --dry-run) DRY_RUN=1 ;;
    *) echo "usage: $0 [--with-slurm] [--dry-run]" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---- flavour: which TensorFlow and which Horovod build -------------------------------------------
gpus_seen() {  # number of GPUs nvidia-smi lists (0 without nvidia-smi or a working driver)
  command -v nvidia-smi >/dev/null 2>&1 || { echo 0; return; }
  local listing
  listing="$(nvidia-smi -L 2>/dev/null)" || { echo 0; return; }
  printf '%s\n' "$listing" | grep -c '^GPU [0-9]' || true
}
case "${EXACLIMATE_GPU:-}" in
  1) FLAVOUR=gpu; REASON="EXACLIMATE_GPU=1" ;;
  0) FLAVOUR=cpu; REASON="EXACLIMATE_GPU=0" ;;
  "")
    n="$(gpus_seen)"
    if [ "$n" -gt 0 ]; then FLAVOUR=gpu; REASON="nvidia-smi sees $n GPU(s)"
    else FLAVOUR=cpu; REASON="nvidia-smi sees no GPU"; fi ;;
  *) die "EXACLIMATE_GPU must be 1, 0 or unset, not '${EXACLIMATE_GPU}'" ;;
esac
HOROVOD_ENV=(HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
             HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 MAKEFLAGS=-j"$(nproc)")
if [ "$FLAVOUR" = gpu ]; then
  TF_REQ="tensorflow[and-cuda]==$TF_VERSION"; OTHER_TF="tensorflow-cpu"
  CUDA_HOME="${HOROVOD_CUDA_HOME:-/usr/local/cuda}"
  HOROVOD_ENV+=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME="$CUDA_HOME" HOROVOD_NCCL_LINK=SHARED
                HOROVOD_BUILD_CUDA_CC_LIST="${HOROVOD_BUILD_CUDA_CC_LIST:-70,80,90}")
  BUILD_NAME="cuda$TF_CUDA_MAJOR-nccl"; HOROVOD_NEEDS="TensorFlow + Gloo + MPI + NCCL"
else
  TF_REQ="tensorflow-cpu==$TF_VERSION"; OTHER_TF="tensorflow"
  BUILD_NAME="cpu"; HOROVOD_NEEDS="TensorFlow + Gloo + MPI"
fi
PY_TAG="$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
# A Horovod wheel only works with the TensorFlow (and CUDA) it was built against: all of it is in the key.
WHEEL_DIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$PY_TAG-$BUILD_NAME"

cuda_check() {  # empty when the CUDA toolkit at $CUDA_HOME suits TensorFlow, else the reason it does not
  local nvcc="$CUDA_HOME/bin/nvcc" version
  [ -x "$nvcc" ] || { echo "no nvcc at $nvcc (set HOROVOD_CUDA_HOME to a CUDA $TF_CUDA_MAJOR toolkit)"; return; }
  version="$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9]*\).*/\1/p')"
  [ "${version%%.*}" = "$TF_CUDA_MAJOR" ] ||
    echo "$nvcc is CUDA $version; TensorFlow $TF_VERSION needs CUDA $TF_CUDA_MAJOR (set HOROVOD_CUDA_HOME)"
}

if [ "$DRY_RUN" = 1 ]; then  # the decisions, one key=value per line, nothing installed
  echo "flavour=$FLAVOUR"
  echo "reason=$REASON"
  echo "tensorflow=$TF_REQ"
  echo "removes=$OTHER_TF"
  echo "extras=dev,$FLAVOUR"
  echo "horovod_env=${HOROVOD_ENV[*]}"
  echo "wheel_dir=$WHEEL_DIR"
  [ "$FLAVOUR" = gpu ] && echo "cuda_problem=$(cuda_check)"
  echo "log=$LOG"
  exit 0
fi

mkdir -p "$(dirname "$LOG")"
printf '\n==== scripts/setup.sh %s, %s flavour (%s)\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$FLAVOUR" "$REASON" >>"$LOG"
run() {  # "$@" with all its output in the log; on failure the log's last lines and stop
  printf '$ %s\n' "$*" >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    printf '[setup] error: %s failed; its last lines (full log: %s):\n' "$1" "$LOG" >&2
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    exit 1
  fi
}

# ---- apt packages ------------------------------------------------------------------------------
# libncarg-data: NCL's example data, real meteorological fields for the real-data tests (docs/DATA.md)
APT_PACKAGES=(openmpi-bin libopenmpi-dev build-essential libncarg-data)
if [ "$WITH_SLURM" = 1 ]; then
  APT_PACKAGES+=(slurmctld slurmd slurm-client munge libpmix-dev shellcheck strace)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  run $SUDO apt-get update -q
  run $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---- virtual environment ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  run "$PYTHON" -m venv "$VENV"
  run "$VENV/bin/pip" install --disable-pip-version-check -U pip setuptools wheel
fi
PIP=("$VENV/bin/pip" install --disable-pip-version-check)

# Dependencies (re)installed only when setup.py, this script or the flavour change.
STAMP="$VENV/.exaclimate-deps"
DEPS_KEY="$( (sha256sum "$ROOT/setup.py" "$0"; echo "$FLAVOUR") | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$DEPS_KEY" ]; then
  say "installing Python dependencies ($FLAVOUR flavour: $REASON)"
  # tensorflow and tensorflow-cpu install the same files: never both.
  if "$VENV/bin/pip" show -q "$OTHER_TF" >/dev/null 2>&1; then run "$VENV/bin/pip" uninstall -y "$OTHER_TF"; fi
  run "${PIP[@]}" "$TF_REQ" 'cmake<4'
  run "${PIP[@]}" --no-build-isolation -e "${ROOT}[dev,$FLAVOUR]"
  echo "$DEPS_KEY" > "$STAMP"
fi

# ---- Horovod, built once per (Horovod, TensorFlow, Python, flavour) and cached ---------------------
hvd_ok() {
  EXPECT_VERSION="$HOROVOD_VERSION" EXPECT_NCCL="$([ "$FLAVOUR" = gpu ] && echo 1 || echo 0)" \
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import os, sys
import horovod, horovod.tensorflow as hvd
ok = horovod.__version__ == os.environ["EXPECT_VERSION"] and hvd.gloo_built() and hvd.mpi_built()
sys.exit(0 if ok and bool(hvd.nccl_built()) == (os.environ["EXPECT_NCCL"] == "1") else 1)
PY
}
if ! hvd_ok; then
  if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
    build_env=("${HOROVOD_ENV[@]}")
    if [ "$FLAVOUR" = gpu ]; then
      problem="$(cuda_check)"
      [ -z "$problem" ] || die "$problem"
      # NCCL: HOROVOD_NCCL_HOME if set, else the nvidia-nccl-cu12 wheel tensorflow[and-cuda] installed (it
      # ships libnccl.so.2 only: link through a private libnccl.so, and find it at run time by rpath).
      if [ -n "${HOROVOD_NCCL_HOME:-}" ]; then
        build_env+=(HOROVOD_NCCL_HOME="$HOROVOD_NCCL_HOME")
      else
        find_nccl='import importlib.util as u; print(list(u.find_spec("nvidia.nccl").submodule_search_locations)[0])'
        nccl="$("$VENV/bin/python" -c "$find_nccl" 2>/dev/null)" ||
          die "no NCCL: set HOROVOD_NCCL_HOME or install tensorflow[and-cuda] (nvidia-nccl-cu12)"
        link_dir="$CACHE/nccl-link"; mkdir -p "$link_dir"; ln -sf "$nccl/lib/libnccl.so.2" "$link_dir/libnccl.so"
        build_env+=(HOROVOD_NCCL_INCLUDE="$nccl/include" HOROVOD_NCCL_LIB="$link_dir"
                    LDFLAGS="-Wl,-rpath,$nccl/lib")
      fi
    fi
    say "building Horovod $HOROVOD_VERSION ($BUILD_NAME) against TensorFlow $TF_VERSION (minutes; cached in $WHEEL_DIR)"
    tmp="$(mktemp -d)"
    run env "${build_env[@]}" "$VENV/bin/pip" wheel --disable-pip-version-check --no-deps --no-cache-dir \
      --no-build-isolation "horovod==$HOROVOD_VERSION" -w "$tmp"
    mkdir -p "$WHEEL_DIR"
    # Move into place by rename so an interrupted build never leaves a half wheel in the cache.
    for w in "$tmp"/horovod-*.whl; do cp "$w" "$WHEEL_DIR/.$(basename "$w").part" && mv "$WHEEL_DIR/.$(basename "$w").part" "$WHEEL_DIR/$(basename "$w")"; done
    rm -rf "$tmp"
  fi
  say "installing cached Horovod wheel from $WHEEL_DIR"
  run "${PIP[@]}" --force-reinstall --no-deps "$WHEEL_DIR"/horovod-*.whl
  run "${PIP[@]}" cloudpickle psutil pyyaml packaging  # Horovod's runtime requirements
  hvd_ok || die "Horovod installed but not built with $HOROVOD_NEEDS (log: $LOG)"
fi
version="$("$VENV/bin/exaclimate" --version 2>/dev/null || echo 'exaclimate (not yet importable)')"
say "ready ($FLAVOUR): $version; log: $LOG"
