"""engine/ is sans-IO: no I/O, clock, platform or port-table imports, nothing from scan/ or net/.

Read from the source (AST), so a new module of engine/ is covered as soon as it exists.
The one use of `time` allowed is `time.localtime`, a conversion of a time the caller gives
(the SF- fingerprint's local date, as nmap prints it), never a clock read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import servprobe.engine

ENGINE = Path(servprobe.engine.__file__).parent
FORBIDDEN_MODULES = {"socket", "ssl", "asyncio", "selectors", "platform", "os", "resource",
                     "subprocess", "threading", "datetime", "sys", "servprobe.scan", "servprobe.net"}
CLOCK_CALLS = {"time", "monotonic", "perf_counter", "time_ns", "monotonic_ns", "sleep"}


def modules() -> list[Path]:
    files = sorted(ENGINE.glob("*.py"))
    assert {"state.py", "provider.py", "speculate.py", "events.py", "budget.py"} <= {f.name for f in files}
    return files


def test_engine_imports_nothing_of_the_outside_world():
    bad = []
    for f in modules():
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if any(n == m or n.startswith(m + ".") for m in FORBIDDEN_MODULES):
                    bad.append(f"{f.name}:{node.lineno} imports {n}")
    assert not bad, bad


def test_engine_reads_no_clock():
    bad = []
    for f in modules():
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "time" and node.attr in CLOCK_CALLS):
                bad.append(f"{f.name}:{node.lineno} time.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "time":
                bad += [f"{f.name}:{node.lineno} from time import {a.name}"
                        for a in node.names if a.name in CLOCK_CALLS]
    assert not bad, bad
