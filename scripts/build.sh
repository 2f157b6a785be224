#!/usr/bin/env bash
# Builds the service binaries and the example provider programs (wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo build --release --target wasm32-unknown-unknown --manifest-path programs/Cargo.toml
