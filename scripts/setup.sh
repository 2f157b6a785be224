#!/usr/bin/env bash
# Installs everything Chiron needs beyond a Rust toolchain: the wasm32 target for provider
# programs, the Fashion-MNIST dataset (Debian package, MIT licence), and a Python virtual
# environment (.venv) for building and testing the `chiron` Python package.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown

# Debian packages, with sudo when not root.
apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt_install dataset-fashion-mnist
fi

# The Python package (crates/chiron-python): maturin builds it, pytest runs its tests with
# numpy, pandas and tqdm, all pinned in its requirements file; installed again only when that
# file changes. Needs python3 (3.9 or later; the pins are for 3.11) with venv and pip.
requirements=crates/chiron-python/requirements-dev.txt
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3 python3-venv
fi
if ! cmp -s "$requirements" .venv/requirements-installed.txt; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" .venv/requirements-installed.txt
fi
