#!/usr/bin/env bash
# The training-throughput benchmark (scripts/bench.sh) with the whole workspace on the
# optional libtorch engine: native reference, sandbox and enclave built with
# `--features chiron-engine/libtorch`; the PyTorch column runs the same virtual
# environment's torch. Arguments go to `chiron-bench`.
#
# This replaces the binaries in target/release (or $CARGO_TARGET_DIR/release) with libtorch
# builds; `scripts/build.sh` builds the default ones again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
eval "$(scripts/setup-libtorch.sh)"
cargo build --release --workspace --bins --features chiron-engine/libtorch
cargo build --release --target wasm32-unknown-unknown --manifest-path programs/Cargo.toml
exec "${CARGO_TARGET_DIR:-target}/release/chiron-bench" "$@"
