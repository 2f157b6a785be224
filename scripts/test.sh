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
# A test that hangs fails the run here, with the test named by the harness's "has been
# running for over 60 seconds", instead of using up CI's time. The suite takes some
# 8 minutes on 2 cores.
timeout --kill-after=30s 30m cargo test --release --workspace
# The SDK's own unit tests (schedules, manifest and metadata encodings), natively.
cargo test --release --manifest-path programs/Cargo.toml -p chiron-sdk --lib
# The SDK's documentation, the provider's guide included, with no broken link.
RUSTDOCFLAGS="-D warnings" cargo doc --manifest-path programs/Cargo.toml -p chiron-sdk --no-deps
# The Python package (crates/chiron-python), installed into .venv, then its tests against the
# real host and enclaves.
scripts/install-python-client.sh
.venv/bin/python -m pytest -q crates/chiron-python/tests
