"""The contract of a post-processor: a sans-IO machine, its trigger, and what it finds.

A post-processor runs after the walk (engine/) has decided a service. Its machine never
touches a socket or a clock: the runner (servprobe.post.runner) opens the one connection the
machine asks for (TCP, TLS when the service is tunnelled, or UDP), sends what `start` and
`feed` return, feeds every chunk received with the current unix time, tells it about EOF, and
stops it at its deadline. `finish()` then returns a Finding (or None: nothing learnt).

Rules every machine keeps: bounded buffers (MAX_BUFFER), no exception on any input (a
malformed answer ends the exchange with what was learnt so far), text from the service only
through `text()` (printable, length-limited).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from servprobe.escape import printable_bytes
from servprobe.result import ScriptResult, ServiceResult

if TYPE_CHECKING:
    from servprobe.engine.options import EngineOptions
    from servprobe.engine.transport import Transport

MAX_BUFFER = 65536  # bytes a machine keeps from one exchange
POST_DEADLINE = 3.0  # seconds per post-processor exchange, connect included
# UDP post-processors that also try every port the walk could not name: a silent port must
# not hold its result back long (an answer on a LAN takes milliseconds; one resend fits)
UNKNOWN_UDP_DEADLINE = 1.5
FIELD_LIMITS = {
    "product": 80,
    "version": 80,
    "hostname": 80,
    "extrainfo": 256,
    "ostype": 32,
    "devicetype": 32,
}  # nmap's truncation of the version fields


def text(data: bytes | str, limit: int = 1024) -> str:
    """Service bytes as printable text (non-printables as \\xHH), at most `limit` chars."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    return printable_bytes(data[:limit])


@dataclass(slots=True)
class Finding:
    """What a post-processor learnt: fields that refine the result, and its script output."""

    script: ScriptResult | None = None
    fields: dict[str, str] = field(default_factory=dict)  # product/version/...; "" clears
    cpes: list[str] = field(default_factory=list)
    service: str | None = None  # a service name, only used when the walk found none
    tunnel: Literal["ssl"] | None = None  # the service really lives inside TLS
    more: list[ScriptResult] = field(default_factory=list)  # further script outputs
    # result attributes set as they are (a post-processor that redefines the service, like
    # rpc-grind: service, version, rpc, method... exactly as its own rule says)
    overrides: dict[str, Any] = field(default_factory=dict)


class Machine:
    """Base class of post-processor machines: one exchange on one connection."""

    proto: Literal["tcp", "udp"] = "tcp"
    follow_tunnel = True  # speak TLS when the service was found inside TLS
    source_port: int | None = None  # send from this local port (ike-version: 500)

    def __init__(self, result: ServiceResult) -> None:
        self.result = result
        self.done = False

    def start(self, now: float) -> list[bytes]:
        """What to send once connected (empty: wait for the server to speak first)."""
        return []

    def feed(self, data: bytes, now: float) -> list[bytes]:
        """Bytes received; returns more to send. Sets `done` when the exchange is over."""
        return []

    def eof(self, now: float) -> None:
        """The server closed the connection."""
        self.done = True

    def finish(self) -> Finding | None:
        """What was learnt (called once, after done, EOF, the deadline, or a failed connect)."""
        return None


class Buffered(Machine):
    """A machine that keeps everything received (up to MAX_BUFFER) and parses it whole."""

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.buf = b""

    def feed(self, data: bytes, now: float) -> list[bytes]:
        self.buf += data[: MAX_BUFFER - len(self.buf)]
        out = self.parse(now)
        if len(self.buf) >= MAX_BUFFER:
            self.done = True
        return out

    def parse(self, now: float) -> list[bytes]:
        return []


@dataclass(frozen=True, slots=True)
class PostEnv:
    """What a running post-processor may use: the scan's options, the transport."""

    options: EngineOptions | None
    transport: Transport


class Driven(Machine):
    """A machine that needs more than one connection (rpc-grind: the portmapper, then the
    port, reconnecting): it drives the transport itself, still without sockets or clocks of
    its own. The runner calls `begin(env, log, done)`, then `done(error)` comes once (unless
    `stop()` came first: the deadline); `finish()` as for every machine."""

    def begin(
        self, env: PostEnv, log: Callable[[str], None], done: Callable[[BaseException | None], None]
    ) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Close everything (the deadline passed, or the scan is cancelled)."""


@dataclass(frozen=True, slots=True)
class PostContext:
    """What the driver hands the post runner beyond refine()'s arguments: the options, a
    wake-up for the engine machine a freed connection slot belongs to, the transport."""

    options: EngineOptions | None = None
    wake: Callable[[int], None] | None = None
    transport: Transport | None = None


# set by the driver around refine() (servprobe.net.driver); run_post reads it
POST_CONTEXT: ContextVar[PostContext | None] = ContextVar("servprobe_post_context", default=None)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Which results a post-processor applies to.

    It applies when the protocol fits and any of: the service name is in `services`, the port
    is in `ports`, or `when(result)` says so. `tunnel` None accepts both plain and TLS.
    """

    proto: Literal["tcp", "udp"] = "tcp"
    services: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset()
    tunnel: Literal["ssl", "plain"] | None = None
    when: Callable[[ServiceResult], bool] | None = None

    def fits(self, r: ServiceResult) -> bool:
        if r.proto != self.proto or r.state not in ("open", "open|filtered"):
            return False
        if self.tunnel == "ssl" and r.tunnel != "ssl":
            return False
        if self.tunnel == "plain" and r.tunnel == "ssl":
            return False
        if r.service in self.services or r.port in self.ports:
            return True
        return self.when is not None and self.when(r)


@dataclass(frozen=True, slots=True)
class PostProcessor:
    """One registered post-processor: its id (nmap's script name where nmap has one)."""

    id: str
    trigger: Trigger
    machine: Callable[[ServiceResult], Machine]
    summary: str  # one line for --help and the docs
    offline: bool = False  # needs no connection (reads the result only)
    deadline: float = POST_DEADLINE  # seconds for its exchange, connect included
    # whether the scan's options allow it at all (rpc-grind: --version-intensity >= 7)
    enabled: Callable[[EngineOptions | None], bool] | None = None


def target_name(result: ServiceResult) -> str:
    """The name the target was given by (for Host headers, XMPP `to`, SNI), else its address."""
    return result.hostnames[0] if result.hostnames else result.address


def responses(result: ServiceResult) -> list[bytes]:
    """The responses kept in an unrecognized result's SF- fingerprint (empty without one)."""
    if not result.fingerprint:
        return []
    from servprobe.probes.fpreader import FingerprintError, parse_fingerprint
    from servprobe.report.base import unwrap_fingerprint

    try:
        return [r.data for r in parse_fingerprint(unwrap_fingerprint(result.fingerprint)).responses]
    except FingerprintError:
        return []


def format_output(elements: dict[str, Any], indent: int = 1) -> str:
    """Structured elements as nmap prints a script's table: "\\n  key: value" lines.

    Nested dicts become indented blocks under "key: ", lists one item per line.
    """
    lines: list[str] = []
    _format(elements, indent, lines)
    return "".join("\n" + line for line in lines)


def _format(value: Any, depth: int, lines: list[str]) -> None:
    pad = "  " * depth
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list):
                lines.append(f"{pad}{k}: ")
                _format(v, depth + 1, lines)
            else:
                lines.append(f"{pad}{k}: {v}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict | list):
                _format(v, depth + 1, lines)
            else:
                lines.append(f"{pad}{v}")
    else:
        lines.append(f"{pad}{value}")


def apply(result: ServiceResult, finding: Finding) -> None:
    """Refine `result` in place with what a post-processor found."""
    for name, value in finding.overrides.items():
        setattr(result, name, value)
    for name, value in finding.fields.items():
        if name in FIELD_LIMITS:  # "" clears a field: a guess the service contradicts
            setattr(result, name, value[: FIELD_LIMITS[name]] or None)
    for cpe in finding.cpes:
        if cpe not in result.cpes:
            result.cpes.append(cpe)
    learnt_name = bool(finding.service and not result.service)
    if learnt_name:
        result.service = finding.service
    if (finding.fields or learnt_name) and result.method == "table" and result.service:
        # the service answered its own protocol: as sure as a probe match
        result.method = "probed"
        result.conf = 10
    if finding.fields and result.proto == "udp" and result.state == "open|filtered":
        result.state, result.reason = "open", "udp-response"  # it answered our datagram
    if finding.tunnel is not None:
        result.tunnel = finding.tunnel
    for script in ([finding.script] if finding.script is not None else []) + finding.more:
        result.scripts = [s for s in result.scripts if s.id != script.id]
        result.scripts.append(script)
