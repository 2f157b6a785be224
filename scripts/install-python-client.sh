#!/usr/bin/env bash
# Builds the `chiron` Python package as an abi3 wheel (maturin; one extension module for
# CPython 3.9 and later) into target/wheels, and installs that wheel into .venv (made by
# scripts/setup.sh). The test command runs the package's tests against this installed wheel,
# as an owner would install it.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf target/wheels
.venv/bin/maturin build --release --quiet -m crates/chiron-python/Cargo.toml --out target/wheels
# An editable install from before (a .pth file pointing at the sources) would shadow it.
.venv/bin/python -c 'import pathlib, sysconfig
(pathlib.Path(sysconfig.get_paths()["purelib"]) / "chiron.pth").unlink(missing_ok=True)'
.venv/bin/pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    target/wheels/chiron-*-abi3-*.whl
