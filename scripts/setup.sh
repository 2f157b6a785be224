#!/usr/bin/env bash
# Installs everything Chiron needs beyond a Rust toolchain: the wasm32 target for provider
# programs and the Fashion-MNIST dataset (Debian package, MIT licence).
set -euo pipefail

rustup target add wasm32-unknown-unknown

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist
fi
