"""Where servprobe keeps what it derives from a probe file (check results, prefilter
databases): the user cache directory, or SERVPROBE_CACHE_DIR. Shared by the loader and the
prefilter, so neither imports the other."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """servprobe's user cache dir (created), or None when there is no writable one."""
    override = os.environ.get("SERVPROBE_CACHE_DIR")
    try:
        if override:
            d = Path(override)
        else:
            import platformdirs

            d = Path(platformdirs.user_cache_dir("servprobe", appauthor=False))
        d.mkdir(parents=True, exist_ok=True)
        return d
    except Exception:
        return None
