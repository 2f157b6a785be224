#!/usr/bin/env bash
# Training-throughput benchmark (native engine, confined path, PyTorch when importable).
# Arguments go to `chiron-bench` (see `target/release/chiron-bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh 2>/dev/null
exec target/release/chiron-bench "$@"
