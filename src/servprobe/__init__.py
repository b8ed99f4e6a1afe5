"""servprobe: what really runs behind open ports, on nmap's probe-file language.

Library entry points:
    db = servprobe.load_db()                 # nmap's file if installed, else the bundled one
    ident = db.match("GetRequest", b"HTTP/1.1 200 OK\\r\\nServer: nginx/1.22.1\\r\\n\\r\\n")
    for r in servprobe.scan("127.0.0.1", ports="22,80"):   # or: async for r in servprobe.ascan(...)
        print(r.to_dict())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from servprobe.probes.model import ProbeDB
    from servprobe.result import ServiceResult


def load_db(path: str | None = None, *, prefilter: bool | None = None) -> ProbeDB:
    """Load a probe database: a PATH, "bundled", "nmap", or None for the default choice."""
    from servprobe.probes.loader import load_db as _load

    return _load(path, prefilter=prefilter)


# `servprobe.scan(targets, ports=..., **options)`: the servprobe.scan package is callable
# (servprobe.api.scan): an iterator of ServiceResult as they arrive, the CLI's options as
# keywords with the same names and defaults; leaving the loop stops the scan
from servprobe import scan  # noqa: E402


def ascan(targets: str | Iterable[str] | None = None, ports: str | None = None,
          **options: Any) -> AsyncIterator[ServiceResult]:
    """Async form of `scan`, in the running event loop (`async for r in servprobe.ascan(...)`)."""
    from servprobe.api import ascan as _ascan

    return _ascan(targets, ports, **options)


__all__ = ["__version__", "ascan", "load_db", "scan"]
