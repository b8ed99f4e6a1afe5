"""Knobs of the service scan and what the engine is asked to look at.

Shared contract between the CLI (which fills EngineOptions from nmap-style flags), the
asyncio driver (`servprobe.net.driver.run_service_scan`) and the sans-IO state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """One open (or open|filtered) port to identify."""

    address: str  # numeric IPv4/IPv6 address
    port: int
    proto: Literal["tcp", "udp"]
    hostname: str | None = None  # for TLS SNI and reports
    # what the engine may not look up itself (sans-IO): the port table's name for the port
    # (the "http?" guess of an unidentified service; the driver fills it in when None) and
    # what the port scan saw ("open": it answered, so a UDP port stays open without answers)
    table_name: str | None = None
    state: str | None = None
    # the host timeout's deadline on the event loop's clock (loop.time()), set by the scan
    # runner, whose clock is the only one: the driver aborts the service when it passes
    deadline: float | None = None


@dataclass(slots=True)
class EngineOptions:
    intensity: int = 7  # 0..9; --version-light 2, --version-all 9
    allports: bool = False  # ignore the file's Exclude
    timing: int = 3  # -T0..-T5
    max_parallelism: int | None = None  # services in progress, global
    per_host_parallelism: int | None = None
    probe_parallelism: int = 32  # speculative connections per service (issue 6)
    sequential: bool = False  # nmap's exact one-probe-at-a-time behaviour
    connect_timeout: float = 5.0
    host_timeout: float | None = None  # seconds per host, None = unbounded
    version_trace: bool = False
    fingerprints: bool = True  # build SF- fingerprints for unrecognized services
    rpc_grind: bool = True
    rpc_portmapper: bool = True  # RPC grinder may ask the host's portmapper (111) first (H6)
    version_scripts: str = "all"  # post-processors (servprobe.post): all, none or ID,ID...
    max_read: int = 4096  # bytes kept per response (nmap: 4096)
    regex_timeout: float = 0.5  # seconds per regex call; a timeout counts as no match
    # speculation (engine.state): how long NULL must stay silent beyond a speculative answer's
    # latency before a service counts as request-first
    speculation_grace: float = 0.5
    speculation_delay: float = 0.2  # NULL listens alone this long before speculation starts
    per_host_connections: int | None = None  # speculative connections per host (None: by timing)
    debug: int = 0  # -d: internal errors of a service are printed
    # facts about the machine, filled in by the driver (servprobe.net.hostinfo): the engine
    # reads no clock and probes no platform
    tls: bool = True  # TLS available (Python built with OpenSSL)
    platform: str | None = None  # nmap's platform triplet for SF- fingerprints
    clock_offset: float | None = None  # wall-clock time minus the driver's clock
