"""Where a scan store goes when `--store` is not given: the user's state dir, named by time."""

from __future__ import annotations

import os
import time
from pathlib import Path


def default_store_dir() -> Path:
    """$SERVPROBE_STORE_DIR, else the platform's user state dir (~/.local/state/servprobe/scans)."""
    env = os.environ.get("SERVPROBE_STORE_DIR")
    if env:
        return Path(env)
    try:
        from platformdirs import user_state_dir

        return Path(user_state_dir("servprobe")) / "scans"
    except ImportError:  # platformdirs is a dependency, but a store must never stop a scan
        return Path.home() / ".local" / "state" / "servprobe" / "scans"


def default_store_path(now: float | None = None) -> Path:
    """A new, unused file name like scan-20261124-232600.sqlite (suffixed -2, -3 on clashes)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    base = default_store_dir()
    path = base / f"scan-{stamp}.sqlite"
    n = 2
    while path.exists():
        path = base / f"scan-{stamp}-{n}.sqlite"
        n += 1
    return path
