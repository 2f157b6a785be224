#!/usr/bin/env bash
# The whole Chiron flow on the embedded defaults, end to end:
#   provider registers the CNN program; the service (untrusted host + enclave processes on
#   loopback, simulated TEE) starts; the owner encrypts Fashion-MNIST locally, verifies the
#   training enclave's evidence, releases the key, follows training, then queries the model
#   black-box with the 10 000 test images and prints the accuracy.
# EPOCHS (default 3) and LIMIT (training examples, default all 60 000) can be overridden;
# SEED (64 hex digits, default zeros) fixes the training run's random stream, so the demo
# is reproducible (the CLI draws a fresh seed when none is given). PROGRAM picks the example
# program: cnn (the default), resnet, vit or mlp. TRAIN_ARGS adds arguments to `chiron train`
# (for example "--live --time-budget 1500").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh

EPOCHS="${EPOCHS:-3}"
PROGRAM_NAME="${PROGRAM:-cnn}"
read -ra EXTRA_ARGS <<< "${TRAIN_ARGS:-}"
LIMIT_ARGS=()
if [ -n "${LIMIT:-}" ]; then LIMIT_ARGS=(--limit "$LIMIT"); fi
SEED="${SEED:-0000000000000000000000000000000000000000000000000000000000000000}"
SEED_ARGS=(--seed "$SEED")
FMNIST=/usr/share/datasets/fashion-mnist
BIN=target/release
WORK="$(mktemp -d)"
trap 'kill "$HOST_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# The operator issues the provider and the owner their API tokens.
PROVIDER_TOKEN="$("$BIN/chiron-host" --data-dir "$WORK/service" principal add provider --role provider 2>/dev/null)"
OWNER_TOKEN="$("$BIN/chiron-host" --data-dir "$WORK/service" principal add owner --role owner 2>/dev/null)"

# The service: untrusted host, which launches measured enclave processes.
"$BIN/chiron-host" --dangerous-simulated-tee --data-dir "$WORK/service" --listen 127.0.0.1:0 >"$WORK/host.out" 2>"$WORK/host.err" &
HOST_PID=$!
for _ in $(seq 100); do
    if [ -s "$WORK/host.out" ]; then break; fi
    sleep 0.1
done
URL="$(head -n1 "$WORK/host.out" | awk '{print $NF}')"
echo "service: $URL"

# Provider: register the training program.
PROGRAM="$(CHIRON_TOKEN="$PROVIDER_TOKEN" "$BIN/chiron" register --host "$URL" "programs/target/wasm32-unknown-unknown/release/chiron_$PROGRAM_NAME.wasm")"
echo "provider registered program $PROGRAM"

# Owner: pin the runtime measurement (from a reproducible build of the public runtime) and
# the simulated platform's key, then train and evaluate.
MEASUREMENT="$("$BIN/chiron" measure "$BIN/chiron-enclave")"
TRUST=(--sim-measurement "$MEASUREMENT" --dangerous-sim-platform "$WORK/service/sim-platform.key.pub")
CHIRON_TOKEN="$OWNER_TOKEN" "$BIN/chiron" train --host "$URL" --program "$PROGRAM" \
    --idx-images "$FMNIST/train-images-idx3-ubyte.gz" --idx-labels "$FMNIST/train-labels-idx1-ubyte.gz" \
    "${LIMIT_ARGS[@]}" "${SEED_ARGS[@]}" --epochs "$EPOCHS" --valid-fraction 0.05 --ticket "$WORK/job.json" "${TRUST[@]}" "${EXTRA_ARGS[@]}"
CHIRON_TOKEN="$OWNER_TOKEN" "$BIN/chiron" evaluate --host "$URL" --ticket "$WORK/job.json" \
    --idx-images "$FMNIST/t10k-images-idx3-ubyte.gz" --idx-labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
    "${TRUST[@]}"
