#!/usr/bin/env bash
# Installs the servers the tests run as real processes beside the project's own: an
# S3-compatible object store (moto's server, from PyPI) for the host's `s3://` store. Kept in
# target/, like every other build output.
set -euo pipefail
cd "$(dirname "$0")/.."

S3_SERVER=target/test-servers/s3
if [ ! -x "$S3_SERVER/bin/moto_server" ]; then
    python3 -m venv "$S3_SERVER"
    "$S3_SERVER/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
