"""The virtual-time transport (engine.transport's interface) and the simulator built on it.

`SimTransport` implements the one transport interface without sockets or real time: a heap
of timed callbacks, and `ServerModel`s that say, per connection, what the server sends on
connect and in answer to each payload, after which delay, and when it closes. Anything
written for the interface — the service machine's runner, a post-processor's exchange, RPC
grinding — runs on it unchanged, in virtual time (`run_until(done)`).

`simulate(machine, server)` runs a `ServiceMachine` through engine.transport.ServiceRunner,
the same runner the asyncio driver uses, and returns the ServiceResult, the virtual time it
took and a log of connections, so tests can assert the same result with and without
speculation and how long each would take.

Ordering: at equal times a timer fires before network events (a deadline that falls on a
reply's arrival time wins, as a service machine's wait would on a real loop's tie).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from servprobe.engine.events import Closed, Connected, ConnectFailed, Data, TlsFailed
from servprobe.engine.transport import Dial, ServiceRunner

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.events import Connect, Event, Send
    from servprobe.engine.state import ServiceMachine
    from servprobe.result import ServiceResult

CLOSE = object()  # in a reply list: the server closes the connection
RESET = object()
SIM_EPOCH = 1_700_000_000.0  # wall() at virtual time 0: a fixed, plausible unix time


class ServerModel:
    """Override to script a server. Replies are lists of (delay_seconds, bytes | CLOSE | RESET).

    One model answers every connection of a simulation; `on_connect`/`on_data` get the
    connection number. UDP links use the same calls (each payload is one datagram)."""

    refuse = False
    tls_min_level: int | None = None  # None: speaks no TLS; else lowest client level it accepts

    def on_connect(self, conn: int, tls: bool) -> list[tuple[float, object]]:
        return []

    def on_data(
        self, conn: int, payload: bytes, since_connect: float, tls: bool
    ) -> list[tuple[float, object]]:
        return []

    def on_close(self, conn: int) -> None:
        """The connection ended (either side closed it): for servers that count clients."""


class _Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _SimLink:
    """One simulated connection: delivers the server model's replies to the sink."""

    __slots__ = ("at", "dial", "net", "open", "sink", "up")

    def __init__(self, net: SimTransport, dial: Dial, sink: Callable[[Event], None]) -> None:
        self.net = net
        self.dial = dial
        self.sink = sink
        self.open = True  # not closed by the client
        self.up = False  # connected and not closed by the server
        self.at = 0.0

    def send(self, data: bytes) -> bool:
        if not (self.open and self.up):
            return False
        server = self.net.server_for(self.dial)
        tls = self.dial.tls_level is not None
        for delay, what in server.on_data(self.dial.conn, data, self.net.now() - self.at, tls):
            self.net._push(self.net.rtt + delay, self._out, what)
        return True

    def close(self) -> None:
        if self.open:
            self.open = False
            if self.up:
                self.up = False
                self.net._gone(self)

    def _connected(self) -> None:
        if not self.open:
            return  # the client gave up before the handshake ended: no server sees it
        self.up = True
        self.at = self.net.now()
        self.net._came(self)
        self.sink(Connected(self.dial.conn))
        if self.up:
            server = self.net.server_for(self.dial)
            for delay, what in server.on_connect(self.dial.conn, self.dial.tls_level is not None):
                self.net._push(delay, self._out, what)

    def _out(self, what: object) -> None:
        if not (self.open and self.up):
            return
        if what is CLOSE or what is RESET:
            self.up = False
            self.net._gone(self)
            self.sink(Closed(self.dial.conn, reset=what is RESET))
        else:
            self.sink(Data(self.dial.conn, what))  # type: ignore[arg-type]

    def _fail(self, ev: Event) -> None:
        if self.open:
            self.open = False
            self.sink(ev)


class SimTransport:
    """engine.transport.Transport in virtual time. `servers`: one ServerModel for every
    connection, or a mapping (proto, port) -> ServerModel (unlisted ports refuse)."""

    def __init__(
        self,
        servers: ServerModel | dict[tuple[str, int], ServerModel],
        rtt: float = 0.001,
        early: float = 0.0,
        limit: float = 3600.0,
    ) -> None:
        self.servers = servers
        self.rtt = rtt
        self.early = early  # every timer fires this much too soon (fuzzing the waits)
        self.limit = limit
        self.clock = 0.0
        self._seq = itertools.count()
        self._queue: list[tuple[float, int, int, Callable[[], None]]] = []
        self.connections = 0
        self.max_parallel = 0
        self._open = 0

    # -- the interface ------------------------------------------------------------------
    def now(self) -> float:
        return self.clock

    def wall(self) -> float:
        return SIM_EPOCH + self.clock

    def call_at(self, when: float, fn: Callable[[], None]) -> _Timer:
        timer = _Timer()

        def fire() -> None:
            if not timer.cancelled:
                fn()

        heapq.heappush(self._queue, (max(self.clock, when - self.early), 0, next(self._seq), fire))
        return timer

    def call_soon(self, fn: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (self.clock, 1, next(self._seq), fn))

    def connect(self, dial: Dial, sink: Callable[[Event], None]) -> _SimLink:
        link = _SimLink(self, dial, sink)
        self.connections += 1
        server = self.server_for(dial)
        tls = dial.tls_level is not None
        if server.refuse:
            self._push(self.rtt, link._fail, ConnectFailed(dial.conn, "refused"))
        elif tls and (server.tls_min_level is None or dial.tls_level < server.tls_min_level):  # type: ignore[operator]
            self._push(self.rtt, link._fail, TlsFailed(dial.conn, "handshake failure"))
        else:
            self._push(self.rtt, link._connected)
        return link

    # -- running ------------------------------------------------------------------------
    def run_until(self, done: Callable[[], bool]) -> float:
        """Run callbacks in time order until done() holds; the virtual time then."""
        while not done():
            if not self._queue:
                raise RuntimeError("simulation stalled: no event and no deadline")
            at, _, _, fn = heapq.heappop(self._queue)
            if at > self.limit:
                raise RuntimeError("simulation ran past its time limit")
            self.clock = max(self.clock, at)
            fn()
        return self.clock

    # -- bookkeeping --------------------------------------------------------------------
    def server_for(self, dial: Dial) -> ServerModel:
        if isinstance(self.servers, ServerModel):
            return self.servers
        return self.servers.get((dial.proto, dial.port)) or _REFUSING

    def _push(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        heapq.heappush(self._queue, (self.clock + delay, 1, next(self._seq), lambda: fn(*args)))

    def _came(self, link: _SimLink) -> None:
        self._open += 1
        self.max_parallel = max(self.max_parallel, self._open)

    def _gone(self, link: _SimLink) -> None:
        self._open -= 1
        self.server_for(link.dial).on_close(link.dial.conn)


class _Refusing(ServerModel):
    refuse = True


_REFUSING = _Refusing()


@dataclass
class SimRun:
    result: ServiceResult
    elapsed: float
    connections: int
    max_parallel: int
    sent: list[tuple[int, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _SimRunner(ServiceRunner):
    """The shared service runner, recording what a simulation reports."""

    def __init__(self, machine: ServiceMachine, net: SimTransport) -> None:
        super().__init__(machine, net, "sim", 0)
        self.sent: list[tuple[int, bytes]] = []
        self.notes: list[str] = []
        self.result: ServiceResult | None = None

    def on_connect(self, a: Connect) -> None:
        pass

    def on_send(self, a: Send, sent: bool) -> None:
        self.sent.append((a.conn, a.data))

    def on_note(self, text: str) -> None:
        self.notes.append(f"{self.transport.now():8.3f} {text}")

    def on_report(self, result: ServiceResult) -> None:
        self.result = result


def simulate(
    machine: ServiceMachine,
    server: ServerModel,
    rtt: float = 0.001,
    limit: float = 3600.0,
    early: float = 0.0,
) -> SimRun:
    """Run `machine` against `server`; `early` makes every timer fire that much too soon."""
    net = SimTransport(server, rtt=rtt, early=early, limit=limit)
    runner = _SimRunner(machine, net)
    runner.start()
    elapsed = net.run_until(lambda: runner.result is not None)
    assert runner.result is not None
    return SimRun(
        runner.result, elapsed, net.connections, net.max_parallel, runner.sent, runner.notes
    )
