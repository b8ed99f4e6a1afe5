"""Optional extras in tests: the one allowed kind of skip (see tests/README.md).

Owns: `require(module, extra, dist)`, which imports a module of an optional extra or skips
with a reason naming the extra, and `skip_allowed(reason)`, with which conftest decides
whether a skip may pass: only when it names an extra that `make test` does not install on
this machine (the extra is not among the Makefile's `pip install -e '.[...]'` extras, or the
requirement's marker excludes this platform, e.g. hyperscan off x86_64). Every other skip
fails the run.
"""

from __future__ import annotations

import functools
import importlib
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# "optional extra 'fast' (hyperscan) not installed: ..." -- require() writes it, conftest reads it
_REASON = re.compile(r"optional extra '([\w-]+)' \(([\w.-]+)\) not installed")


@functools.cache
def make_test_extras() -> frozenset[str]:
    """The extras `make test` installs: every `-e '.[a,b]'` of the Makefile."""
    text = (ROOT / "Makefile").read_text()
    return frozenset(x.strip() for group in re.findall(r"-e\s+'\.\[([^\]]+)\]'", text)
                     for x in group.split(","))


def _installed_by_make_test(extra: str, dist: str) -> bool:
    """Whether `make test` installs `dist` here: it is in pyproject.toml's `extra` (read
    from the file, not from possibly stale installed metadata) with a marker true here."""
    if extra not in make_test_extras():
        return False
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project.get("optional-dependencies", {}).get(extra, []):
        req = Requirement(spec)
        if req.name.lower() == dist.lower() and (req.marker is None or req.marker.evaluate()):
            return True
    return False


def skip_allowed(reason: str) -> bool:
    """Whether a skip with this reason may pass (else conftest turns it into a failure)."""
    m = _REASON.search(reason)
    return bool(m) and not _installed_by_make_test(m.group(1), m.group(2))


def require(module: str, extra: str, dist: str) -> ModuleType:
    """Import `module` of PyPI distribution `dist` from optional extra `extra`, or skip
    naming the extra. (A skip where `make test` installs it still fails: conftest.)"""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        # allow_module_level: also usable at the top of a test module (conftest fails a
        # module skipped for any other reason as well)
        pytest.skip(f"optional extra '{extra}' ({dist}) not installed: {e}",
                    allow_module_level=True)
