#!/usr/bin/env bash
# The test command: set-up, formatting check, then every test (unit and end-to-end, real
# processes on loopback, real data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Servers the tests talk to as real processes (an S3-compatible store).
scripts/setup-test-servers.sh
cargo fmt --all -- --check
# The end-to-end tests start the real binaries and load the real wasm programs.
scripts/build.sh
cargo test --release --workspace
# The SDK's own unit tests (schedules, manifest and metadata encodings), natively.
cargo test --release --manifest-path programs/Cargo.toml -p chiron-sdk --lib
