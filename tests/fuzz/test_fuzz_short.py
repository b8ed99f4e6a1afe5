"""A short, bounded atheris pass over every fuzz target (the long run is in docs/robustness.md).

Each target runs in its own process for a fixed number of inputs from a seed corpus built at
run time; a crash (an unexpected exception or a broken invariant) fails the test and prints
the input that caused it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from extras import require  # noqa: E402

# the test extra installs atheris on x86_64 with Python < 3.13 only: elsewhere this skips
require("atheris", "test", "atheris")

import seeds  # noqa: E402

RUNS = {
    "probe_parser": 3000,
    "templates": 10000,
    "match": 3000,
    "match_regex": 150,
    "engine": 3000,
    "portspec": 5000,
    "targets": 10000,
    "fpreader": 5000,
}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_short(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds.write(target, corpus)
    proc = subprocess.run(
        [sys.executable, str(HERE / "run.py"), target, f"-atheris_runs={RUNS[target]}",
         "-max_total_time=120", "-max_len=4096", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, f"fuzz target {target} crashed:\n{tail}"
    assert "Done" in proc.stderr, tail
    assert not list(tmp_path.glob("crash-*")), tail
