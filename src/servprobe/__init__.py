"""servprobe: what really runs behind open ports, on nmap's probe-file language.

Library entry points:
    db = servprobe.load_db()                 # nmap's file if installed, else the bundled one
    ident = db.match("GetRequest", b"HTTP/1.1 200 OK\\r\\nServer: nginx/1.22.1\\r\\n\\r\\n")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from servprobe.probes.model import ProbeDB


def load_db(path: str | None = None, *, prefilter: bool | None = None) -> ProbeDB:
    """Load a probe database: a PATH, "bundled", "nmap", or None for the default choice."""
    from servprobe.probes.loader import load_db as _load

    return _load(path, prefilter=prefilter)


__all__ = ["__version__", "load_db"]
