"""The one transport interface (engine.transport) on real sockets: asyncio TCP, UDP and TLS.

`AsyncioTransport(loop)` is what the service driver, the post-processor runner and RPC
grinding all use on a real network (the simulator, engine.sim.SimTransport, is the other
implementation). A connect runs as a task; its events reach the sink through the protocols
of net.conn, which hold anything that arrives before Connected has been delivered (a TLS
server may speak right after its handshake) and replay it in order.

Connect rules kept here, once: IPv4/IPv6 by the address's form; a `source_port` that
cannot be bound (below 1024 without root, or in use) is said once on stderr and replaced by
an ephemeral port; a TLS handshake has its own time limit after the TCP connect (a stalled
handshake is TlsFailed, not a connect failure, so the permissive retry still runs); closing a
TCP link aborts it (no FIN_WAIT/TLS shutdown dance for a probe socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from servprobe.engine.events import Connected, ConnectFailed, TlsFailed
from servprobe.net.conn import TcpProtocol, UdpProtocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.events import Event
    from servprobe.engine.transport import Dial


class _AsyncioLink:
    __slots__ = ("closed", "dial", "proto", "task")

    def __init__(self, dial: Dial) -> None:
        self.dial = dial
        self.proto: Any = None  # set once connected
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def send(self, data: bytes) -> bool:
        proto = self.proto
        if self.closed or proto is None or proto.transport is None or proto.gone:
            return False
        try:
            if isinstance(proto, UdpProtocol):
                proto.transport.sendto(data)
            else:
                proto.transport.write(data)
        except (OSError, RuntimeError):
            return False
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        proto = self.proto
        if proto is not None:
            proto.gone = True
            tr = proto.transport
            if tr is not None:
                with contextlib.suppress(Exception):
                    tr.abort() if isinstance(proto, TcpProtocol) else tr.close()


class AsyncioTransport:
    """engine.transport.Transport over an asyncio event loop (the running one by default)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()

    def now(self) -> float:
        return self.loop.time()

    def wall(self) -> float:
        return time.time()

    def call_at(self, when: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self.loop.call_at(when, fn)

    def call_soon(self, fn: Callable[[], None]) -> None:
        self.loop.call_soon(fn)

    def connect(self, dial: Dial, sink: Callable[[Event], None]) -> _AsyncioLink:
        link = _AsyncioLink(dial)
        link.task = self.loop.create_task(self._connect(link, sink))
        return link

    async def _connect(self, link: _AsyncioLink, sink: Callable[[Event], None]) -> None:
        loop = self.loop
        d = link.dial
        conn = d.conn
        proto: Any
        try:
            async with asyncio.timeout(d.timeout) as budget:
                family = socket.AF_INET6 if ":" in d.address else socket.AF_INET
                local = source_address(d.source_port, family)
                if d.proto == "udp":
                    proto = UdpProtocol(conn, sink)
                    try:
                        await loop.create_datagram_endpoint(
                            lambda: proto,
                            remote_addr=(d.address, d.port),
                            family=family,
                            local_addr=local,
                            reuse_port=True if local is not None else None,
                        )
                    except OSError as exc:
                        if local is None:
                            raise
                        _note_once(
                            f"cannot send from source port {d.source_port} ({exc.strerror or exc}); "
                            "sending from an ephemeral port"
                        )
                        await loop.create_datagram_endpoint(
                            lambda: proto, remote_addr=(d.address, d.port), family=family
                        )
                else:
                    proto = TcpProtocol(conn, sink)
                    try:
                        tr, _ = await loop.create_connection(
                            lambda: proto, d.address, d.port, local_addr=local
                        )
                    except OSError as exc:
                        if local is None:
                            raise
                        _note_once(
                            f"cannot connect from source port {d.source_port} ({exc.strerror or exc}); "
                            "connecting from an ephemeral port"
                        )
                        tr, _ = await loop.create_connection(lambda: proto, d.address, d.port)
                    if d.tls_level is not None:
                        # the handshake's own limit (plus a margin) replaces the connect's
                        budget.reschedule(loop.time() + (d.tls_timeout or d.timeout) + 1.0)
                        from servprobe.net.tls import client_context, sni_name

                        try:
                            new = await loop.start_tls(
                                tr,
                                proto,
                                client_context(d.tls_level),
                                server_hostname=sni_name(d.server_hostname),
                                ssl_handshake_timeout=d.tls_timeout or d.timeout,
                            )
                        except (OSError, EOFError, TimeoutError, ConnectionError) as exc:
                            proto.gone = True
                            proto.held = None
                            tr.abort()
                            if not link.closed:
                                link.closed = True
                                sink(TlsFailed(conn, repr(exc)))
                            return
                        if new is None:
                            proto.gone = True
                            if not link.closed:
                                link.closed = True
                                sink(TlsFailed(conn, "connection closed during handshake"))
                            return
                        proto.transport = new
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            if not link.closed:
                link.closed = True
                sink(ConnectFailed(conn, str(exc) or type(exc).__name__))
            return
        link.proto = proto
        if link.closed:  # closed while the connect was finishing
            link.closed = False
            link.close()
            return
        sink(Connected(conn))
        proto.go_live()


_NOTED: set[str] = set()


def _note_once(text: str) -> None:
    """A note for the user on stderr, once per process (e.g. a source port we cannot use)."""
    if text in _NOTED:
        return
    _NOTED.add(text)
    import sys

    with contextlib.suppress(OSError, ValueError):
        print(f"servprobe: note: {text}", file=sys.stderr, flush=True)


def source_address(
    port: int | None, family: int, euid: int | None = None
) -> tuple[str, int] | None:
    """Where to bind a probe's socket for its `source=N` option, or None (any port).

    Binding below 1024 needs root (CAP_NET_BIND_SERVICE): without it, say so once and let
    the kernel pick an ephemeral port (the probe still goes out; a peer that answers only
    to port N stays silent)."""
    if port is None:
        return None
    if port < 1024 and (os.geteuid() if euid is None else euid) != 0:
        _note_once(
            f"probes with source={port} need root to bind a port below 1024; "
            "sending them from an ephemeral port"
        )
        return None
    return ("::" if family == socket.AF_INET6 else "0.0.0.0", port)
