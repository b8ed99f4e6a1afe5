"""Atheris fuzz target: engine (see tests/fuzz/targets.py). Usage: python tests/fuzz/fuzz_engine.py [libFuzzer args]."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

if __name__ == "__main__":
    run.main([sys.argv[0], "engine", *sys.argv[1:]])
