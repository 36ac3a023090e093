#!/usr/bin/env bash
# Idempotent set-up for a Debian 12 machine (root) or a warm one: apt packages, .venv, TensorFlow,
# Horovod built from source against it (wheel cached outside the checkout), the package itself.
# A second run on a ready machine only checks stamps and takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EXACLIMATE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TF_VERSION="2.18.1"
HOROVOD_VERSION="0.28.1"
CACHE="${EXACLIMATE_CACHE:-$HOME/.cache/exascale_climate}"
WHEEL_DIR="$CACHE/wheels/horovod-$HOROVOD_VERSION-tf$TF_VERSION-$("$PYTHON" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')"
WITH_SLURM=0
for arg in "$@"; do
  case "$arg" in
    --with-slurm) WITH_SLURM=1 ;;
    *) echo "usage: $0 [--with-slurm]" >&2; exit 2 ;;
  esac
done

say() { printf '[setup] %s\n' "$*" >&2; }

# ---- apt packages ------------------------------------------------------------------------------
APT_PACKAGES=(openmpi-bin libopenmpi-dev build-essential)
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
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---- virtual environment ------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q -U pip setuptools wheel
fi
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)

# Dependencies (re)installed only when setup.py changes.
STAMP="$VENV/.exaclimate-deps"
DEPS_KEY="$(sha256sum "$ROOT/setup.py" "$0" | sha256sum | cut -c1-16)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$DEPS_KEY" ]; then
  say "installing Python dependencies"
  "${PIP[@]}" "tensorflow-cpu==$TF_VERSION" 'cmake<4'
  "${PIP[@]}" -e "$ROOT[dev]"
  echo "$DEPS_KEY" > "$STAMP"
fi

# ---- Horovod, built once per (Horovod, TensorFlow, Python) and cached -----------------------------
hvd_ok() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import horovod, horovod.tensorflow as hvd, sys
sys.exit(0 if (horovod.__version__ == "0.28.1" and hvd.gloo_built() and hvd.mpi_built()) else 1)
PY
}
if ! hvd_ok; then
  if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
    say "building Horovod $HOROVOD_VERSION against TensorFlow $TF_VERSION (about 2 minutes, cached in $WHEEL_DIR)"
    tmp="$(mktemp -d)"
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_GLOO=1 HOROVOD_WITH_MPI=1 MAKEFLAGS=-j"$(nproc)" \
      "$VENV/bin/pip" wheel -q --no-deps --no-cache-dir --no-build-isolation \
        "horovod==$HOROVOD_VERSION" -w "$tmp"
    mkdir -p "$WHEEL_DIR"
    # Move into place by rename so an interrupted build never leaves a half wheel in the cache.
    for w in "$tmp"/horovod-*.whl; do cp "$w" "$WHEEL_DIR/.$(basename "$w").part" && mv "$WHEEL_DIR/.$(basename "$w").part" "$WHEEL_DIR/$(basename "$w")"; done
    rm -rf "$tmp"
  fi
  say "installing cached Horovod wheel from $WHEEL_DIR"
  "${PIP[@]}" --force-reinstall --no-deps "$WHEEL_DIR"/horovod-*.whl
  "${PIP[@]}" cloudpickle psutil pyyaml packaging  # Horovod's runtime requirements
  hvd_ok || { echo "[setup] Horovod installed but not built with TensorFlow + Gloo + MPI" >&2; exit 1; }
fi
say "ready: $("$VENV/bin/exaclimate" --version 2>/dev/null || echo 'exaclimate (not yet importable)')"
