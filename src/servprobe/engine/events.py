"""What flows between the service machine and whoever runs it: events in, actions out.

Plain frozen data, no behaviour. A driver (the asyncio one in servprobe.net.driver, the
virtual-time simulator in engine.sim) turns actions into I/O and I/O into events, and passes
the current time (any monotonic clock, in seconds) with every event: the engine reads no
clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from servprobe.result import ServiceResult

# ---------------------------------------------------------------- events ---------------------


@dataclass(frozen=True, slots=True)
class Connected:
    conn: int


@dataclass(frozen=True, slots=True)
class Data:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    conn: int
    reset: bool = False


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    conn: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class TlsFailed:
    conn: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Timeout:
    """The deadline of the last Wait passed, or something else may have changed (a Wake)."""


Event = Connected | Data | Closed | ConnectFailed | TlsFailed | Timeout

# ---------------------------------------------------------------- actions --------------------


@dataclass(frozen=True, slots=True)
class Connect:
    conn: int
    proto: Literal["tcp", "udp"]
    tls_level: int | None = None  # None: plain; else a TLS context level (net.tls)
    timeout: float = 5.0  # for the TCP (or UDP) connect
    tls_timeout: float = 3.0  # for the TLS handshake after it, counted separately
    source_port: int | None = None  # the probe's `source=N`: bind the local end to port N


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes
    probe: str = ""


@dataclass(frozen=True, slots=True)
class Close:
    conn: int


@dataclass(frozen=True, slots=True)
class Wait:
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Report:
    result: ServiceResult


@dataclass(frozen=True, slots=True)
class Note:
    text: str


@dataclass(frozen=True, slots=True)
class Wake:
    """A connection budget freed a slot another machine waits for: deliver a Timeout() to the
    machine whose `key` this is (soon, not from inside this call)."""

    key: int


@dataclass(frozen=True, slots=True)
class Fault:
    """The machine hit an internal error; it reported the service unidentified. For -d output
    and the summary's count of failed services."""

    error: str


Action = Connect | Send | Close | Wait | Report | Note | Wake | Fault
