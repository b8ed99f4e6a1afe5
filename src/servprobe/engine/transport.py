"""The one transport interface, and the runner of a service machine over it.

Every exchange in servprobe — the service walk (engine.state), the post-processors
(servprobe.post) and RPC grinding (servprobe.rpc) — talks to the network through a
`Transport`, never through sockets or an event loop of its own (dnspython keeps its protocol
code apart from its backends the same way). Two implementations exist:

    servprobe.net.transport.AsyncioTransport   real sockets on an asyncio loop (TCP, UDP, TLS)
    servprobe.engine.sim.SimTransport          virtual time against scripted server models

The interface is callbacks, not coroutines, so the virtual-time one needs no event loop:

    transport.now()                  monotonic seconds (virtual in the simulator)
    transport.wall()                 unix time matching now() (for machines that print dates)
    transport.call_at(when, fn)      a Timer (fn() at `when`; .cancel() stops it)
    transport.call_soon(fn)          fn() after the current callback, never inside it
    transport.connect(dial, sink)    a Link at once; the connection's events go to sink:
                                     Connected, then Data/Closed; or ConnectFailed/TlsFailed
    link.send(data)                  bytes (TCP) or one datagram (UDP); False when the link
                                     cannot send (not connected yet, gone, a socket error)
    link.close()                     abort; no event for this link after it

The events are engine.events' (Connected, Data, Closed, ConnectFailed, TlsFailed), with the
`conn` number given in the Dial. This module does no I/O itself (engine/ stays sans-IO):
`ServiceRunner` only turns a ServiceMachine's actions into calls on the transport it is
handed and the transport's callbacks into the machine's events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from servprobe.engine.events import (
    Close,
    Connect,
    Fault,
    Note,
    Report,
    Send,
    Timeout,
    Wait,
    Wake,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.events import Action, Event
    from servprobe.engine.state import ServiceMachine
    from servprobe.result import ServiceResult


@dataclass(frozen=True, slots=True)
class Dial:
    """One connection to open: where, how (TLS level of net.tls, or None), time limits."""

    conn: int
    address: str
    port: int
    proto: Literal["tcp", "udp"] = "tcp"
    tls_level: int | None = None
    server_hostname: str | None = None  # for SNI (the transport drops IP literals)
    timeout: float = 5.0  # the TCP connect (or UDP socket setup)
    tls_timeout: float = 3.0  # the TLS handshake after it, counted separately
    source_port: int | None = None  # bind the local end to this port (a probe's `source=N`)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Link(Protocol):
    def send(self, data: bytes) -> bool: ...

    def close(self) -> None: ...


class Transport(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    def call_at(self, when: float, fn: Callable[[], None]) -> Timer: ...

    def call_soon(self, fn: Callable[[], None]) -> None: ...

    def connect(self, dial: Dial, sink: Callable[[Event], None]) -> Link: ...


class ServiceRunner:
    """Carries out one ServiceMachine's actions on a Transport; feeds it the transport's events.

    Hooks for the drivers (the asyncio driver adds tracing, a host timer and the engine
    thread; the simulator records what was sent): `step` runs one machine step and then its
    actions (override to run steps elsewhere), `on_send`, `on_note`, `on_wake`, `on_fault`,
    `on_report`.
    """

    def __init__(
        self,
        machine: ServiceMachine,
        transport: Transport,
        address: str,
        port: int,
        hostname: str | None = None,
    ) -> None:
        self.m = machine
        self.transport = transport
        self.address = address
        self.port = port
        self.hostname = hostname
        self.links: dict[int, Link] = {}
        self.timer: Timer | None = None
        self.finished = False

    # -- driving ------------------------------------------------------------------------
    def start(self) -> None:
        now = self.transport.now()
        self.step(lambda: self.m.start(now))

    def feed(self, ev: Event) -> None:
        if self.finished:
            return
        now = self.transport.now()  # the event's time, whenever its step runs
        self.step(lambda: self.m.handle(ev, now))

    def abort(self, why: str) -> None:
        if self.finished:
            return
        now = self.transport.now()
        self.step(lambda: self.m.abort(now, why))

    def step(self, fn: Callable[[], list[Action]]) -> None:
        self.do(fn())

    def _on_timer(self) -> None:
        self.timer = None
        self.feed(Timeout())

    def do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                link = self.links.get(a.conn)
                self.on_send(a, link is not None and link.send(a.data))
            elif isinstance(a, Connect):
                self.on_connect(a)
                dial = Dial(
                    a.conn,
                    self.address,
                    self.port,
                    a.proto,
                    a.tls_level,
                    self.hostname,
                    a.timeout,
                    a.tls_timeout,
                    a.source_port,
                )
                self.links[a.conn] = self.transport.connect(dial, self.feed)
            elif isinstance(a, Close):
                self.close_conn(a.conn)
            elif isinstance(a, Wait):
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                if a.deadline is not None:
                    self.timer = self.transport.call_at(a.deadline, self._on_timer)
            elif isinstance(a, Note):
                self.on_note(a.text)
            elif isinstance(a, Report):
                self.close_all()
                self.finished = True
                self.on_report(a.result)
            elif isinstance(a, Wake):
                self.on_wake(a.key)
            elif isinstance(a, Fault):
                self.on_fault(a.error)

    def close_conn(self, conn: int) -> None:
        link = self.links.pop(conn, None)
        if link is not None:
            link.close()

    def close_all(self) -> None:
        """Release everything (normal end, cancellation, error)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for conn in list(self.links):
            self.close_conn(conn)

    # -- hooks --------------------------------------------------------------------------
    def on_connect(self, a: Connect) -> None:
        pass

    def on_send(self, a: Send, sent: bool) -> None:
        pass

    def on_note(self, text: str) -> None:
        pass

    def on_wake(self, key: int) -> None:
        pass

    def on_fault(self, error: str) -> None:
        pass

    def on_report(self, result: ServiceResult) -> None:
        pass
