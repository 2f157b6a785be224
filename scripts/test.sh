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
# The Python package (crates/chiron-python). Its extension module is built with the rest of the
# workspace, so that its Rust dependencies are the ones just built: `maturin develop` builds one
# package, for which cargo unifies the dependencies' features differently, and would compile
# about a hundred of them again (serde, wasmtime, burn: minutes). It is then installed into
# .venv as `maturin develop` installs it: editable, the module beside the package's Python
# files, found through a .pth file. Then its tests, against the real host and enclaves.
cargo build --release --workspace --lib
cp target/release/libchiron_native.so crates/chiron-python/python/chiron/_native.abi3.so.new
mv crates/chiron-python/python/chiron/_native.abi3.so.new \
    crates/chiron-python/python/chiron/_native.abi3.so
.venv/bin/python -c 'import pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
(site / "chiron.pth").write_text(str(pathlib.Path(sys.argv[1]).resolve()) + "\n")' \
    crates/chiron-python/python
.venv/bin/python -m pytest -q crates/chiron-python/tests
