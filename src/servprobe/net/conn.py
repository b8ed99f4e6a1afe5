"""asyncio protocols for one engine connection: TCP (optionally upgraded to TLS) and UDP.

A protocol turns socket callbacks into engine events for its service runner. Events that
happen before the runner has been told the connection is up (a TLS server may speak right
after its handshake, before our connect task resumes) are held and replayed in order.
Bytes are never accumulated here: each chunk goes straight to the state machine, which keeps
at most options.max_read bytes per response.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from servprobe.engine.state import Closed, Data

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.state import Event


class _Base:
    def __init__(self, conn: int, sink: Callable[[Event], None]) -> None:
        self.conn = conn
        self.sink = sink
        self.live = False
        self.held: list[Event] | None = []
        self.transport: Any = None
        self.gone = False

    def go_live(self) -> None:
        self.live = True
        held, self.held = self.held, None
        for ev in held or ():
            if self.gone and not isinstance(ev, Closed):
                continue
            self.sink(ev)

    def _emit(self, ev: Event) -> None:
        if self.live:
            self.sink(ev)
        elif self.held is not None:
            self.held.append(ev)


class TcpProtocol(_Base, asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.gone:
            self._emit(Data(self.conn, data))

    def eof_received(self) -> bool:
        return False  # close our side too: the engine treats EOF as the end of the response

    def connection_lost(self, exc: Exception | None) -> None:
        if self.gone:
            return
        self.gone = True
        self._emit(Closed(self.conn, reset=isinstance(exc, ConnectionResetError)))


class UdpProtocol(_Base, asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.gone:
            self._emit(Data(self.conn, data))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable shows up as ConnectionRefusedError on a connected socket
        if not self.gone:
            self.gone = True
            self._emit(Closed(self.conn, reset=True))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.gone:
            self.gone = True
            self._emit(Closed(self.conn, reset=exc is not None))
