"""The timing table: every per-template (-T0 … -T5) number of a scan, in one place.

nmap's own figures where servprobe follows nmap (services in progress: 1 at T0–T2, 20/30/40
at T3/T4/T5 for the RPC grinder, which has nmap's single-threaded cost model); the event-loop
engine's figures where it is not bound by nmap's single thread (services and connections in
flight, host groups). Read by the port scanner, the service driver, the runner, the RPC
grinder and the descriptor preflight; nothing else defines a per-template number.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    services: int  # services in progress, whole scan (engine driver)
    services_per_host: int  # of one host at once
    conns_per_host: int  # speculative connections per host (0: one probe at a time, like nmap)
    hostgroup: int  # hosts scanned at once (runner)
    connect_timeout: float  # port scan: connect timeout, seconds
    retries: int  # port scan: retries of an unanswered port
    sockets: int  # port scan: connects in flight
    rpc_window: int  # RPC grinder: calls in flight per port
    nmap_parallelism: int  # nmap's services in progress (RPC scan, -sR)


TIMINGS: dict[int, Timing] = {
    0: Timing(1, 1, 0, 1, 5.0, 2, 1, 1, 1),
    1: Timing(1, 1, 0, 1, 3.0, 2, 1, 1, 1),
    2: Timing(8, 2, 8, 16, 2.0, 2, 10, 4, 1),
    3: Timing(1000, 32, 256, 256, 1.0, 1, 512, 32, 20),
    4: Timing(2000, 64, 512, 512, 0.5, 1, 1024, 64, 30),
    5: Timing(4000, 128, 1024, 1024, 0.3, 0, 2048, 64, 40),
}
DEFAULT_TIMING = 3


def timing(template: int | None) -> Timing:
    """The row of a template; out-of-range values clamp to -T0/-T5, None is -T3."""
    if template is None:
        return TIMINGS[DEFAULT_TIMING]
    return TIMINGS[min(max(int(template), 0), 5)]
