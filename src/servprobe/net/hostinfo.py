"""What the sans-IO engine must be told about this machine (it may not look for itself).

Owns the platform probing and clock reading the engine used to do inside engine/: nmap's
platform triplet for SF- fingerprints, whether TLS is available (Python built with OpenSSL),
and the offset from the driver's monotonic clock to wall-clock (unix) time, so results and
fingerprints carry real dates while the engine only ever sees the times passed with events.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servprobe.engine.options import EngineOptions


def platform_triplet() -> str:
    """Something like nmap's NMAP_PLATFORM (x86_64-pc-linux-gnu)."""
    machine = platform.machine() or "unknown"
    system = sys.platform
    if system.startswith("linux"):
        return f"{machine}-pc-linux-gnu"
    if system == "darwin":
        return f"{machine}-apple-darwin"
    if system == "win32":
        return f"{machine}-pc-windows-windows"
    return f"{machine}-unknown-{system}"


def tls_available() -> bool:
    try:
        import ssl  # noqa: F401
    except ImportError:  # Python built without OpenSSL: report plain "ssl" like nmap
        return False
    return True


def with_host_facts(options: EngineOptions, monotonic_now: float) -> EngineOptions:
    """`options` completed with this machine's facts; `monotonic_now` is the driver's clock."""
    return dataclasses.replace(
        options,
        platform=options.platform or platform_triplet(),
        tls=options.tls and tls_available(),
        clock_offset=time.time() - monotonic_now
        if options.clock_offset is None
        else options.clock_offset,
    )
