#!/usr/bin/env bash
# An example program (PROGRAM: cnn, the default, resnet or vit) on Fashion-MNIST, twice in
# one run: trained natively with the engine (no sandbox, no crypto: `chiron-reference`), then
# through the whole confined path
# (`demo.sh`: encrypted upload, attested enclave, wasm sandbox, sealed model, black-box
# queries). Prints both test accuracies and training times; BENCHMARKS.md quotes this.
# EPOCHS (default 3) and SEED (64 hex digits, default all zeros) apply to both: with the same
# seed both runs draw the same initialisation and batch order, so they should train the same
# model and differences are the engine's, not luck's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh 2>/dev/null

EPOCHS="${EPOCHS:-3}"
PROGRAM_NAME="${PROGRAM:-cnn}"
SEED="${SEED:-0000000000000000000000000000000000000000000000000000000000000000}"
FMNIST=/usr/share/datasets/fashion-mnist
LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT

echo "native: training $EPOCHS epochs..." >&2
target/release/chiron-reference --program "$PROGRAM_NAME" --epochs "$EPOCHS" --seed "$SEED" --valid-fraction 0.05 \
    --train-images "$FMNIST/train-images-idx3-ubyte.gz" --train-labels "$FMNIST/train-labels-idx1-ubyte.gz" \
    --test-images "$FMNIST/t10k-images-idx3-ubyte.gz" --test-labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
    >"$LOG/native.out"
echo "confined: running the demo..." >&2
started=$(date +%s)
PROGRAM="$PROGRAM_NAME" EPOCHS="$EPOCHS" SEED="$SEED" scripts/demo.sh >"$LOG/demo.out" 2>"$LOG/demo.err"
demo_wall=$(($(date +%s) - started))

native_acc="$(grep -o '[0-9.]*% on' "$LOG/native.out" | cut -d% -f1)"
native_secs="$(grep -o '([0-9.]* s training)' "$LOG/native.out" | tr -d '(' | cut -d' ' -f1)"
confined_acc="$(grep -o 'queries: [0-9.]*%' "$LOG/demo.out" | cut -d' ' -f2 | tr -d %)"
confined_secs="$(grep -o 'training finished in [0-9.]*' "$LOG/demo.err" | awk '{print $4}')"

echo "| path | test accuracy (10 000 images) | training time, $EPOCHS epochs |"
echo "|---|---|---|"
echo "| native engine (\`chiron-reference\`) | ${native_acc}% | ${native_secs} s |"
echo "| confined (\`demo.sh\`, whole demo ${demo_wall} s) | ${confined_acc}% | ${confined_secs} s |"
awk -v a="$native_acc" -v b="$confined_acc" -v s="$native_secs" -v t="$confined_secs" \
    'BEGIN { printf "accuracy difference (confined - native): %+.2f points; time ratio confined/native: %.2f\n", b - a, t / s }'
