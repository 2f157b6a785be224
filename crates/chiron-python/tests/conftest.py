"""The pytest suite's service: the real `chiron-host` process on a free loopback port, with a
temporary data directory and the simulated TEE, starting real enclave processes; the real
`chiron_mlp` program registered; the owner's trust policy for that simulated platform. As
`crates/chiron-tests` (`Service::start`, `policy_spec`, `add_principal`) sets it up for the
Rust tests, with the binaries `scripts/build.sh` builds."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List

import pytest

import chiron

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / "target" / "release"
MLP_WASM = ROOT / "programs" / "target" / "wasm32-unknown-unknown" / "release" / "chiron_mlp.wasm"
IRIS_CSV = ROOT / "crates" / "chiron-client" / "tests" / "data" / "iris.csv"
#: The Fashion-MNIST files the set-up installs (Debian package `dataset-fashion-mnist`), as
#: `chiron_tests::FASHION_DIR`.
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The host's frame log: one line per frame it relays to or from an enclave.
FRAME_LOG = "chiron_host::frames"


def add_principal(state: Path, name: str, roles: List[str]) -> str:
    """`chiron-host principal add`, as the operator issues a token; returns the token."""
    args = [str(BIN / "chiron-host"), "--data-dir", str(state), "principal", "add", name]
    for role in roles:
        args += ["--role", role]
    out = subprocess.run(args, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return out.stdout.strip()


@dataclass
class Service:
    """A running host and what an owner needs to use it."""

    url: str
    token: str
    state: Path
    process: "subprocess.Popen[bytes]"
    stderr_log: Path
    program_id: str
    policy_text: str

    def host(self) -> chiron.Host:
        """A client acting as the principal `tester` (owner and provider)."""
        return chiron.Host(self.url, token=self.token)

    def trust(self) -> chiron.Trust:
        """The owner's policy, read from a policy file as `chiron train --policy` does."""
        return chiron.Trust(policy=self.policy_text)

    def stored_datasets(self) -> List[str]:
        """What the host's store holds under datasets/ (ciphertext and upload manifests)."""
        folder = self.state / "objects" / "datasets"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def frames(self, direction_kind: str) -> int:
        """How many frames of a kind the host has relayed so far (e.g.
        `host->enclave Query`): what the platform sees of the traffic."""
        return self.stderr_log.read_text(errors="replace").count(direction_kind + " ")


def _check_built() -> None:
    missing = [
        p
        for p in (BIN / "chiron-host", BIN / "chiron-enclave", BIN / "chiron", MLP_WASM)
        if not p.exists()
    ]
    if missing:
        pytest.fail(
            f"build the binaries and programs first (scripts/build.sh): missing {missing}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The host, started once for the whole suite."""
    _check_built()
    data = tmp_path_factory.mktemp("chiron-host")
    state = data / "state"
    token = add_principal(state, "tester", ["owner", "provider"])
    stderr_log = data / "host.err"
    env = dict(os.environ, RUST_LOG=f"info,{FRAME_LOG}=debug")
    with open(stderr_log, "wb") as err:
        process = subprocess.Popen(
            [
                str(BIN / "chiron-host"),
                "--dangerous-simulated-tee",
                "--data-dir",
                str(state),
                "--listen",
                "127.0.0.1:0",
                "--enclave-bin",
                str(BIN / "chiron-enclave"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode().strip()
        if not first:
            pytest.fail(f"chiron-host did not start: {stderr_log.read_text()}", pytrace=False)
        url = first.rsplit(" ", 1)[-1]
        # Keep reading what else the host prints, so that it never blocks on a full pipe.
        stdout = process.stdout
        threading.Thread(target=lambda: [None for _ in stdout], daemon=True).start()
        # The owner's policy file: the simulated platform's key and the runtime's measurement,
        # as `chiron measure` prints it.
        key = (state / "sim-platform.key.pub").read_text().strip()
        measurement = subprocess.run(
            [str(BIN / "chiron"), "measure", str(BIN / "chiron-enclave")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        policy_text = (
            "# the simulated platform (INSECURE, tests only)\n"
            f"dangerous-simulated-platform {key} {measurement}\n"
        )
        program_id = chiron.Host(url, token=token).register(MLP_WASM)
        yield Service(url, token, state, process, stderr_log, program_id, policy_text)
    finally:
        # SIGTERM: the host stops its enclaves and exits.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
