#!/usr/bin/env bash
# Optional: installs libtorch for the `libtorch` engine feature and prints the environment
# to build and run with it:
#
#     eval "$(scripts/setup-libtorch.sh)"
#
# `tch` 0.22 (the version `burn` pins for its own optional libtorch backend, so the lock file
# holds one `torch-sys`) builds against exactly torch 2.9.0. PyPI's wheel is the CUDA build
# (about 4 GB installed); the engine runs on the CPU and links only libtorch_cpu and c10.
# The virtual environment goes to $CHIRON_LIBTORCH_VENV, by default target/libtorch-venv
# (so `cargo clean` removes it too). Needs python3 with the venv module.
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version=2.9.0
venv="${CHIRON_LIBTORCH_VENV:-$PWD/target/libtorch-venv}"

has_torch() {
    "$venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" \
        2>/dev/null
}

if ! has_torch; then
    echo "installing torch==$torch_version into $venv (several minutes)" >&2
    "${PYTHON:-python3}" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet "torch==$torch_version" numpy >&2
    has_torch || { echo "torch $torch_version is not importable from $venv" >&2; exit 1; }
fi

lib="$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
cat <<ENV
export LIBTORCH_USE_PYTORCH=1
export PATH="$venv/bin:\$PATH"
export LD_LIBRARY_PATH="$lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
