"""Where a scan store goes when `--store` is not given, and how many such stores are kept.

Default stores live in the user's state dir (`$SERVPROBE_STORE_DIR` overrides it), named by
time (scan-YYYYmmdd-HHMMSS.sqlite). Only the newest `keep` of them are kept
(`--store-keep N`, `$SERVPROBE_STORE_KEEP`, default DEFAULT_KEEP): an afternoon of scans
does not leave dozens of files behind. Stores given with `--store FILE` are never pruned.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

DEFAULT_KEEP = 10
_DEFAULT_NAME = re.compile(r"^scan-\d{8}-\d{6}(?:-\d+)?\.sqlite$")


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


def default_keep() -> int:
    """How many default stores to keep: $SERVPROBE_STORE_KEEP, else DEFAULT_KEEP."""
    text = os.environ.get("SERVPROBE_STORE_KEEP", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_KEEP


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


def prune_default_stores(keep: int, directory: Path | None = None) -> list[Path]:
    """Delete all but the newest `keep` default-named stores (and their -wal/-shm files) in
    the default dir; returns what was deleted. Other files there are never touched."""
    d = directory or default_store_dir()
    try:
        stores = [p for p in d.iterdir() if _DEFAULT_NAME.match(p.name) and p.is_file()]
    except OSError:
        return []
    stores.sort(key=lambda p: (p.stat().st_mtime, p.name), reverse=True)
    removed = []
    for p in stores[max(0, keep):]:
        for f in (p, p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
            try:
                f.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                break
            if f == p:
                removed.append(p)
    return removed
