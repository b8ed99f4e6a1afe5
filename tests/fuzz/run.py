"""Atheris entry point: `python tests/fuzz/run.py TARGET [libFuzzer args] [CORPUS_DIR...]`.

The fuzz_*.py files are thin aliases of this one (one per target, as tooling expects).
Seeds: tests/fuzz/seeds.py writes a corpus for a target (from nmap's installed files at run
time; nothing of nmap's is stored in the repo).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib
import importlib

with atheris.instrument_imports(include=["servprobe"]):
    for _module in ("servprobe.portspec", "servprobe.probes.parser", "servprobe.probes.templates",
                    "servprobe.probes.matcher", "servprobe.probes.pcre",
                    "servprobe.engine.state", "servprobe.engine.plan", "servprobe.engine.sim",
                    "servprobe.scan.targets", "servprobe.probes.fpreader"):
        with contextlib.suppress(ImportError):  # modules still being written by others
            importlib.import_module(_module)

import targets


def main(argv: list[str]) -> None:
    name = argv[1]
    fn = targets.TARGETS[name]
    if name.startswith("match") or name == "engine":
        targets._db(False if name == "match_regex" else None)  # load before the clock starts
    atheris.Setup([argv[0], *argv[2:]], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
