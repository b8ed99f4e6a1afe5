"""Inputs the fuzzers once found a crash or hang with, replayed on every run.

Each file under tests/data/fuzz/<target>/ is one input of that fuzz target (tests/fuzz/
targets.py). It runs in its own process, so a hang -- a loop at one virtual instant never
reaches the simulator's time limit -- fails on the process timeout instead of stalling
the suite; the timeout is far above a normal run's (under a second), not a timing goal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CASES = sorted((HERE.parent / "data" / "fuzz").glob("*/*"))
REPLAY = (
    "import sys; sys.path.insert(0, sys.argv[1]); import targets; "
    "getattr(targets, sys.argv[2])(open(sys.argv[3], 'rb').read())"
)


def test_regression_inputs_exist() -> None:
    assert CASES, "tests/data/fuzz/ holds no recorded input"


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recorded_input_runs_to_its_end(case: Path) -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", REPLAY, str(HERE), case.parent.name, str(case)],
            capture_output=True, text=True, timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.parent.name} target hangs on {case}")
    assert proc.returncode == 0, proc.stderr[-3000:]
