#!/usr/bin/env bash
# The test command: set-up, formatting check, then every test (unit and end-to-end, real
# processes on loopback, real data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo build --release --target wasm32-unknown-unknown --manifest-path programs/Cargo.toml
cargo test --release --workspace
