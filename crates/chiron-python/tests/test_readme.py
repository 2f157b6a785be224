"""The README's Python quick start, run as it is written, in a folder laid out as a clone's
root (its `target` and `examples` linked in, `chiron-data` the suite's host's data folder),
with the environment the CLI quick start before it leaves: `CHIRON_HOST`, `CHIRON_TOKEN` and
`PROGRAM` (the example MLP's id)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, Service


def python_block_after(readme: str, heading: str) -> str:
    """The first ```python block after the line `heading`."""
    after = readme.split(f"\n{heading}\n", 1)[1]
    return after.split("```python\n", 1)[1].split("\n```", 1)[0]


def test_the_readme_python_quick_start_runs_as_written(service: Service, tmp_path: Path) -> None:
    block = python_block_after((ROOT / "README.md").read_text(), "### An owner, in Python")
    for linked in ("target", "examples"):
        (tmp_path / linked).symlink_to(ROOT / linked)
    (tmp_path / "chiron-data").symlink_to(service.state)
    env = dict(
        os.environ,
        CHIRON_HOST=service.url,
        CHIRON_TOKEN=service.token,
        PROGRAM=service.program_id,
    )
    run = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    # predict's class names, a row per flower of the test split, then evaluate's report.
    assert "setosa" in run.stdout and "virginica" in run.stdout, run.stdout
    assert "accuracy" in run.stdout, run.stdout
    assert (tmp_path / "iris-py.json").is_file()
