"""A virtual-time simulator for the sans-IO service machine (tests, debugging, what-ifs).

`simulate(machine, server)` runs a `ServiceMachine` against a scripted server model without
sockets or real time: a server model says, per connection, what it sends on connect and in
answer to each payload, after which delay, and when it closes. The simulator returns the
ServiceResult, the virtual time it took and a log of connections, so tests can assert the
same result with and without speculation and how long each would take.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from servprobe.engine.state import (
    Close,
    Closed,
    Connect,
    Connected,
    ConnectFailed,
    Data,
    Note,
    Report,
    Send,
    ServiceMachine,
    Timeout,
    TlsFailed,
    Wait,
)

if TYPE_CHECKING:
    from servprobe.result import ServiceResult

CLOSE = object()  # in a reply list: the server closes the connection
RESET = object()


class ServerModel:
    """Override to script a server. Replies are lists of (delay_seconds, bytes | CLOSE | RESET)."""

    refuse = False
    tls_min_level: int | None = None  # None: speaks no TLS; else lowest client level it accepts

    def on_connect(self, conn: int, tls: bool) -> list[tuple[float, object]]:
        return []

    def on_data(self, conn: int, payload: bytes, since_connect: float, tls: bool) -> list[tuple[float, object]]:
        return []

    def on_close(self, conn: int) -> None:
        """The connection ended (either side closed it): for servers that count clients."""


@dataclass
class SimRun:
    result: ServiceResult
    elapsed: float
    connections: int
    max_parallel: int
    sent: list[tuple[int, bytes]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def simulate(
    machine: ServiceMachine,
    server: ServerModel,
    rtt: float = 0.001,
    limit: float = 3600.0,
    early: float = 0.0,
) -> SimRun:
    """Run `machine` against `server`; `early` makes every timer fire that much too soon."""
    now = 0.0
    seq = itertools.count()
    queue: list[tuple[float, int, object]] = []
    open_conns: dict[int, tuple[float, bool]] = {}  # conn -> (connected_at, tls)
    deadline: float | None = None
    connections = 0
    max_parallel = 0
    sent: list[tuple[int, bytes]] = []
    notes: list[str] = []
    result: ServiceResult | None = None

    def push(at: float, ev: object) -> None:
        heapq.heappush(queue, (at, next(seq), ev))

    def run(actions: list) -> None:
        nonlocal deadline, connections, max_parallel, result
        for a in actions:
            if isinstance(a, Connect):
                connections += 1
                tls = a.tls_level is not None
                if server.refuse:
                    push(now + rtt, ConnectFailed(a.conn, "refused"))
                elif tls and (server.tls_min_level is None or a.tls_level < server.tls_min_level):
                    push(now + rtt, TlsFailed(a.conn, "handshake failure"))
                else:
                    push(now + rtt, ("connected", a.conn, tls))
            elif isinstance(a, Send):
                sent.append((a.conn, a.data))
                if a.conn in open_conns:
                    at, tls = open_conns[a.conn]
                    for delay, what in server.on_data(a.conn, a.data, now - at, tls):
                        push(now + rtt + delay, ("out", a.conn, what))
            elif isinstance(a, Close):
                if open_conns.pop(a.conn, None) is not None:
                    server.on_close(a.conn)
            elif isinstance(a, Wait):
                deadline = a.deadline
            elif isinstance(a, Report):
                result = a.result
            elif isinstance(a, Note):
                notes.append(f"{now:8.3f} {a.text}")

    run(machine.start(now))
    while result is None:
        nxt = queue[0][0] if queue else None
        if deadline is not None and (nxt is None or deadline <= nxt):
            now = max(now, deadline - early)
            deadline = None
            run(machine.handle(Timeout(), now))
            continue
        if nxt is None:
            raise RuntimeError("simulation stalled: no event and no deadline")
        at, _, ev = heapq.heappop(queue)
        now = at
        if now > limit:
            raise RuntimeError("simulation ran past its time limit")
        if isinstance(ev, tuple) and ev[0] == "connected":
            _, conn, tls = ev
            open_conns[conn] = (now, tls)
            max_parallel = max(max_parallel, len(open_conns))
            run(machine.handle(Connected(conn), now))
            for delay, what in server.on_connect(conn, tls):
                push(now + delay, ("out", conn, what))
        elif isinstance(ev, tuple) and ev[0] == "out":
            _, conn, what = ev
            if conn not in open_conns:
                continue
            if what is CLOSE or what is RESET:
                open_conns.pop(conn, None)
                server.on_close(conn)
                run(machine.handle(Closed(conn, reset=what is RESET), now))
            else:
                run(machine.handle(Data(conn, what), now))
        else:
            run(machine.handle(ev, now))  # type: ignore[arg-type]
    return SimRun(result, now, connections, max_parallel, sent, notes)
