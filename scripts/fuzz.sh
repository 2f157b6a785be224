#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for FUZZ_SECONDS each (default 60) and reports, per
# target, the seconds fuzzed (libFuzzer's count; "wall" adds build and start-up), the
# executions and whether a crash was found.
#
#   scripts/fuzz.sh                      # every target
#   scripts/fuzz.sh wire evidence        # only these
#   FUZZ_SECONDS=600 scripts/fuzz.sh dataset
#
# Works on the stable toolchain: `--sanitizer none` leaves only stable `-C` flags (the
# sanitizer-coverage instrumentation libFuzzer needs is a stable LLVM pass), so no nightly
# and no RUSTC_BOOTSTRAP are needed. On a nightly toolchain, FUZZ_SANITIZER=address adds ASan.
#
# Environment:
#   FUZZ_SECONDS     seconds per target (default 60)
#   FUZZ_TIMEOUT     seconds one input may take before libFuzzer calls it a hang (default 25)
#   FUZZ_JOBS        cargo build jobs (default 1, to leave the machine to other builds)
#   FUZZ_SANITIZER   cargo fuzz --sanitizer value (default none)
#   FUZZ_ARGS        extra libFuzzer arguments, e.g. "-max_len=65536"
#
# Build outputs go to fuzz/target, the corpus to fuzz/corpus/<target>, crash reproducers to
# fuzz/artifacts/<target>; inputs in fuzz/regressions/<target> are replayed at the start of
# every run. Exits 1 if any target crashed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
TARGET_DIR="$FUZZ_DIR/target"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TIMEOUT="${FUZZ_TIMEOUT:-25}"
JOBS="${FUZZ_JOBS:-1}"
SANITIZER="${FUZZ_SANITIZER:-none}"
ALL_TARGETS=(evidence dataset wire owner_messages sealed wasm_load)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [ ! -f "$FUZZ_DIR/fuzz_targets/$t.rs" ]; then
        echo "unknown fuzz target '$t' (have: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

export CARGO_BUILD_JOBS="$JOBS"
cd "$ROOT"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked -j "$JOBS"
fi

FLAGS=(--sanitizer "$SANITIZER" --debug-assertions --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR")

echo "== seed corpus"
mkdir -p "${targets[@]/#/$FUZZ_DIR/corpus/}"
# Seeds are a help, not a requirement: if the generator no longer builds against the crates'
# current types, fuzz from whatever corpus there is.
if cargo build --quiet --release --manifest-path "$FUZZ_DIR/Cargo.toml" -p chiron-fuzz-seedgen \
    --target-dir "$TARGET_DIR"; then
    "$TARGET_DIR/release/chiron-fuzz-seedgen" "$FUZZ_DIR/corpus"
else
    echo "   WARNING: the seed generator (fuzz/seedgen) does not build; continuing without new seeds" >&2
fi
shopt -s nullglob
wasm=("$ROOT"/programs/target/wasm32-unknown-unknown/release/*.wasm)
shopt -u nullglob
if [ "${#wasm[@]}" -gt 0 ]; then
    mkdir -p "$FUZZ_DIR/corpus/wasm_load"
    cp "${wasm[@]}" "$FUZZ_DIR/corpus/wasm_load/"
    echo "   wasm_load: ${#wasm[@]} compiled programs added"
else
    echo "   wasm_load: no compiled programs under programs/target (run scripts/build.sh to add them)"
fi

echo "== building targets (sanitizer: $SANITIZER)"
if [ "${#targets[@]}" -eq "${#ALL_TARGETS[@]}" ]; then
    cargo fuzz build "${FLAGS[@]}"
else
    for t in "${targets[@]}"; do
        cargo fuzz build "${FLAGS[@]}" "$t"
    done
fi

LOG_DIR="$TARGET_DIR/logs"
mkdir -p "$LOG_DIR"
rows=()
crashed=0
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${SECONDS_EACH}s"
    corpora=("$FUZZ_DIR/corpus/$t")
    if [ -d "$FUZZ_DIR/regressions/$t" ]; then
        corpora+=("$FUZZ_DIR/regressions/$t")
    fi
    log="$LOG_DIR/$t.log"
    start=$(date +%s)
    set +e
    # shellcheck disable=SC2086
    cargo fuzz run "${FLAGS[@]}" "$t" "${corpora[@]}" -- \
        -max_total_time="$SECONDS_EACH" -timeout="$TIMEOUT" -print_final_stats=1 \
        ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -n 1 | awk '{print $2}' || true)
    if [ -z "$execs" ]; then
        # No final stats (e.g. a hard crash): the last status line's count.
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    fi
    fuzzed=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 | awk '{print $5}' || true)
    artifact=$(grep -oE '(Test unit|artifact) written to [^ ]+' "$log" | tail -n 1 | awk '{print $NF}' || true)
    artifact="${artifact#"$ROOT"/}"
    if [ "$rc" -eq 0 ]; then
        result="no crash"
    else
        crashed=1
        if [ -n "$artifact" ]; then
            result="CRASH: $artifact"
        else
            result="FAILED (exit $rc, no artifact; see $log)"
        fi
        tail -n 40 "$log" | sed 's/^/   | /'
    fi
    echo "   fuzzed ${fuzzed:--}s (${elapsed}s with build and start-up), ${execs:-0} executions, $result"
    rows+=("$(printf '%-16s %7s %6s %12s  %s' "$t" "${fuzzed:--}" "${elapsed}" "${execs:-0}" "$result")")
done

echo
printf '%-16s %7s %6s %12s  %s\n' target fuzzed wall executions result
for row in "${rows[@]}"; do
    echo "$row"
done
echo "logs: $LOG_DIR"
exit "$crashed"
