"""A user-space network-delay proxy on loopback (the test kernel has no netem).

`DelayProxies` runs one asyncio loop in a background thread and, per target, listens on a
free 127.0.0.1 port and forwards to the target on 127.0.0.1:

  * every chunk (TCP) or datagram (UDP) is delayed by `base` ± `jitter` seconds (uniform),
    per direction; a chunk is never delivered before the one received ahead of it on the same
    direction (the delay of a later chunk is stretched instead), so bytes are never reordered;
  * TCP: the connection to the target is opened `base` (± jitter) after the client connected
    (the SYN's travel), and a close is forwarded after the data before it, delayed too;
  * UDP: each datagram is dropped with probability `drop` (per direction), else delayed; one
    upstream socket per client address.

So a client sees a banner about 2·base after connecting and an answer about 2·base after a
request, like a path with base seconds of one-way delay. Random draws come from a seeded
`random.Random`, so a run is reproducible. Used by tests/test_engine_delay.py and bench/.

    with DelayProxies(base=0.15, jitter=0.1) as px:
        port = px.add(daemon_port, "tcp")      # connect to 127.0.0.1:port instead
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"


class _Direction:
    """One direction of one flow: a FIFO; each item is due after its own delay, but never
    before the item ahead of it (the loop's timers alone would not keep equal times in order)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: Callable[[], float],
                 deliver: Callable[[Any], None]) -> None:
        self.loop = loop
        self.delay = delay
        self.deliver = deliver
        self.queue: deque[tuple[float, Any]] = deque()
        self.last = 0.0

    def push(self, item: Any) -> None:
        at = max(self.loop.time() + self.delay(), self.last)
        self.last = at
        self.queue.append((at, item))
        if len(self.queue) == 1:
            self.loop.call_at(at, self._run)

    def _run(self) -> None:
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now + 1e-4:
            _, item = self.queue.popleft()
            with contextlib.suppress(Exception):
                self.deliver(item)
        if self.queue:
            self.loop.call_at(self.queue[0][0], self._run)


_EOF = object()  # the sender half-closed
_GONE = object()  # the client's connection is gone (closed or reset): close upstream too


class _TcpSide(asyncio.Protocol):
    def __init__(self, on_data: Callable[[Any], None]) -> None:
        self.on_data = on_data
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.on_data(data)

    def eof_received(self) -> bool:
        self.on_data(_EOF)
        return True  # keep the other half open until the EOF is forwarded

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_data(_EOF)


class _TcpFlow:
    """One client connection and its upstream one."""

    def __init__(self, px: DelayProxies, target: int, client: asyncio.Transport) -> None:
        self.px = px
        self.client = client
        self.upstream: asyncio.Transport | None = None
        self.pending: list[Any] = []  # client data before the upstream connection exists
        self.closed = False
        loop = px.loop
        self.up = _Direction(loop, px.delay, self._to_upstream)
        self.down = _Direction(loop, px.delay, self._to_client)
        px.flows.add(self)
        loop.call_later(px.delay(), lambda: loop.create_task(self._connect(target)))

    async def _connect(self, target: int) -> None:
        try:
            tr, _ = await self.px.loop.create_connection(lambda: _TcpSide(self.down.push), HOST, target)
        except OSError:
            self.client.abort()
            return
        self.upstream = tr  # type: ignore[assignment]
        if self.px.closing:  # the proxy closed while this connect was under way
            tr.close()
            return
        pending, self.pending = self.pending, []
        for item in pending:
            self._to_upstream(item)

    def _to_upstream(self, item: Any) -> None:
        up = self.upstream
        if up is None:
            self.pending.append(item)
        elif item is _GONE:
            up.close()
            self.px.flows.discard(self)
        elif up.is_closing():
            return
        elif item is _EOF:
            if up.can_write_eof():
                with contextlib.suppress(OSError):  # the upstream may be gone already
                    up.write_eof()
        else:
            up.write(item)

    def shut(self) -> None:
        """Close both sides now (the proxy is closing: delayed closes would never be sent)."""
        self.client.abort()
        if self.upstream is not None:
            self.upstream.close()

    def _to_client(self, item: Any) -> None:
        if item is _EOF:
            if not self.client.is_closing():
                self.client.close()
            if self.upstream is not None:
                self.upstream.close()
            self.px.flows.discard(self)
        elif not self.client.is_closing():
            self.client.write(item)


class _ClientSide(asyncio.Protocol):
    def __init__(self, px: DelayProxies, target: int) -> None:
        self.px, self.target = px, target
        self.flow: _TcpFlow | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.flow = _TcpFlow(self.px, self.target, transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None
        self.flow.up.push(data)

    def eof_received(self) -> bool:
        assert self.flow is not None
        self.flow.up.push(_EOF)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.flow is not None:
            self.flow.up.push(_GONE)


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, px: DelayProxies, target: int) -> None:
        self.px, self.target = px, target
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, tuple[_Direction, Any]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        px = self.px
        if px.rng.random() < px.drop:
            px.dropped += 1
            return
        flow = self.flows.get(addr)
        if flow is None:
            back = _UdpBack(self, addr)
            up = _Direction(px.loop, px.delay, back.send)
            self.flows[addr] = flow = (up, back)
            px.loop.create_task(back.open(self.target))
        flow[0].push(data)


class _UdpBack(asyncio.DatagramProtocol):
    def __init__(self, front: _UdpFront, client: Any) -> None:
        self.front, self.client = front, client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        px = front.px
        self.down = _Direction(px.loop, px.delay, self._to_client)

    async def open(self, target: int) -> None:
        await self.front.px.loop.create_datagram_endpoint(lambda: self, remote_addr=(HOST, target))
        for d in self.pending:
            self.send(d)
        self.pending.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        px = self.front.px
        if px.rng.random() < px.drop:
            px.dropped += 1
            return
        self.down.push(data)

    def _to_client(self, data: bytes) -> None:
        if self.front.transport is not None:
            self.front.transport.sendto(data, self.client)


class DelayProxies:
    """Delay proxies for many targets, one background event loop (see the module docstring)."""

    def __init__(self, base: float, jitter: float = 0.0, drop: float = 0.0, seed: int = 1) -> None:
        if base < 0 or jitter < 0 or not 0 <= drop < 1:
            raise ValueError("base and jitter must be >= 0, drop in [0, 1)")
        self.base, self.jitter, self.drop = base, jitter, drop
        self.rng = random.Random(seed)
        self.dropped = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._servers: list[Any] = []
        # TCP flows not yet closed on both sides: close() shuts them, or the server would
        # keep serving connections whose delayed close died with the loop (dnsmasq, which
        # serves 20 TCP clients at a time, then left later runs' connections unread)
        self.flows: set[_TcpFlow] = set()
        self.closing = False

    def delay(self) -> float:
        return max(0.0, self.base + self.rng.uniform(-self.jitter, self.jitter))

    def __enter__(self) -> DelayProxies:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, target_port: int, proto: str = "tcp") -> int:
        """Start a proxy for 127.0.0.1:target_port; returns the port to use instead."""
        async def make() -> int:
            if proto == "tcp":
                srv = await self.loop.create_server(lambda: _ClientSide(self, target_port), HOST, 0)
                self._servers.append(srv)
                return srv.sockets[0].getsockname()[1]
            tr, _ = await self.loop.create_datagram_endpoint(
                lambda: _UdpFront(self, target_port), local_addr=(HOST, 0))
            self._servers.append(tr)
            return tr.get_extra_info("sockname")[1]

        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            self.closing = True
            for s in self._servers:
                s.close()
            for flow in list(self.flows):
                flow.shut()
            self.flows.clear()
            for s in self._servers:
                front = s.get_protocol() if isinstance(s, asyncio.DatagramTransport) else None
                for _, back in getattr(front, "flows", {}).values():
                    if back.transport is not None:
                        back.transport.close()
            await asyncio.sleep(0)  # let the transports' closes run

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.loop.close()
