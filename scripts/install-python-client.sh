#!/usr/bin/env bash
# Builds the `chiron` Python package's extension module with the rest of the workspace and
# installs the package into .venv (made by scripts/setup.sh), as `maturin develop` installs
# it: editable, the module beside the package's Python files, found through a .pth file.
# Built with the workspace so that its Rust dependencies are the ones `cargo build` already
# built: `maturin develop` builds one package, for which cargo unifies the dependencies'
# features differently, and would compile about a hundred of them again (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --lib
package=crates/chiron-python/python
cp target/release/libchiron_native.so "$package/chiron/_native.abi3.so.new"
mv "$package/chiron/_native.abi3.so.new" "$package/chiron/_native.abi3.so"
.venv/bin/python -c 'import pathlib, sys, sysconfig
site = pathlib.Path(sysconfig.get_paths()["purelib"])
(site / "chiron.pth").write_text(str(pathlib.Path(sys.argv[1]).resolve()) + "\n")' "$package"
