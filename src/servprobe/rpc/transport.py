"""ONC RPC over the one transport interface (engine.transport): grinds, single calls, flows.

All decisions live in grind.Grinder, protocol.RecordReader and the identification flow of
grinder.py; this module only moves their bytes over a Transport (real sockets or the
simulator, the same code for both), keeps the timers each machine asks for, and reports
connection events to them.

Pieces (each an *operation*: `op.start(transport, done)` then `done(value, error)` exactly
once, unless `op.cancel()` came first; cancel closes every link and timer):

    GrindOp(machine, address, port, proto)   a Grinder over one TCP connection (reconnecting
                                             when the machine asks) or one UDP socket
    CallOp(address, port, proto, msg)        one call; TCP record-marked, UDP retransmitted
    FlowOp(generator)                        a sans-IO flow: a generator that yields
                                             operations and receives their values (or their
                                             errors, thrown in), and returns its answer

`run(op)` awaits an operation on the running asyncio loop (AsyncioTransport): the async API
of grinder.py is built on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from servprobe.engine.events import Closed, Connected, ConnectFailed, Data, TlsFailed
from servprobe.engine.transport import Dial

from .protocol import DEFAULT_MAX_RECORD, RecordReader, RpcError, peek_xid, record_mark

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from servprobe.engine.events import Event
    from servprobe.engine.transport import Link, Timer, Transport

    from .grind import Grinder

    Done = Callable[[Any, BaseException | None], None]

# A NULL reply is ~28 bytes; a grind never needs more per record than this.
GRIND_MAX_RECORD = 64 * 1024
SETTLE = 0.05  # nothing outstanding and nothing to send: look again this soon
UDP_REFUSALS = 3  # ICMP port unreachables in a row that mean nobody listens


class Op:
    """Base of the operations (see module docstring)."""

    def __init__(self) -> None:
        self.transport: Transport | None = None
        self._done: Done | None = None
        self.link: Link | None = None
        self.timer: Timer | None = None

    def start(self, transport: Transport, done: Done) -> None:
        self.transport = transport
        self._done = done
        self.begin()

    def begin(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.link is not None:
            self.link.close()
            self.link = None

    def finish(self, value: Any = None, error: BaseException | None = None) -> None:
        self._release()
        done, self._done = self._done, None
        if done is not None:
            done(value, error)

    def cancel(self) -> None:
        self._done = None
        self._release()

    def _arm(self, when: float | None, fn: Callable[[], None]) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if when is not None:
            assert self.transport is not None
            self.timer = self.transport.call_at(when, fn)


class GrindOp(Op):
    """A Grinder on one port; `value` is None (the machine holds the result).

    `timeout` bounds the whole grind: past it the machine is told the port is unreachable
    (it keeps a hit it already has)."""

    def __init__(
        self,
        machine: Grinder,
        address: str,
        port: int,
        proto: str,
        *,
        connect_timeout: float = 5.0,
        timeout: float | None = None,
        max_record: int = GRIND_MAX_RECORD,
    ) -> None:
        super().__init__()
        self.m = machine
        self.address = address
        self.port = port
        self.proto = "udp" if proto == "udp" else "tcp"
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_record = max_record
        self.records = RecordReader(max_record)
        self.refused = 0
        self.conn = 0
        self.pending_pump = False
        self.armed = 0.0
        self.overall: Timer | None = None

    def begin(self) -> None:
        assert self.transport is not None
        if self.timeout is not None:
            self.overall = self.transport.call_at(
                self.transport.now() + self.timeout, self._timed_out
            )
        self._open()

    def _release(self) -> None:
        super()._release()
        if self.overall is not None:
            self.overall.cancel()
            self.overall = None

    def _timed_out(self) -> None:
        self.overall = None
        self.m.unreachable(f"grind timed out after {self.timeout:g}s")
        self.finish()

    def _open(self) -> None:
        assert self.transport is not None
        self.conn += 1
        self.records = RecordReader(self.max_record)
        dial = Dial(
            self.conn,
            self.address,
            self.port,
            self.proto,  # type: ignore[arg-type]
            timeout=self.connect_timeout,
        )
        self.link = self.transport.connect(dial, self._event)

    def _event(self, ev: Event) -> None:
        if self._done is None or getattr(ev, "conn", self.conn) != self.conn:
            return
        assert self.transport is not None
        now = self.transport.now()
        if isinstance(ev, Connected):
            self._pump()
        elif isinstance(ev, ConnectFailed | TlsFailed):
            self.link = None
            what = "udp" if self.proto == "udp" else "connect"
            self.m.unreachable(f"{what}: {ev.error}")
            self.finish()
        elif isinstance(ev, Data):
            if self.proto == "udp":
                self.refused = 0
                self.m.receive(ev.data, now)
                self._pump_soon()  # one poll per batch of datagrams already here
                return
            try:
                for rec in self.records.feed(ev.data):
                    self.m.receive(rec, now)
            except RpcError as exc:
                self.m.malformed(str(exc))
            self._pump()
        elif isinstance(ev, Closed):
            self.link = None
            if self.proto == "udp":
                # ICMP port unreachable (one may be stale, from an earlier scan of the port);
                # a few in a row mean nobody listens. A fresh socket goes on.
                self.refused += 1
                if self.refused >= UDP_REFUSALS:
                    self.m.unreachable("udp port unreachable")
                    self.finish()
                    return
                self._open()
                return
            if self.m.connection_lost(now) and not self.m.done:
                self._open()
            else:
                self.finish()

    def _pump_soon(self) -> None:
        # two hops: the poll runs after the datagrams the loop's next look at the socket
        # finds, so each poll takes a batch of replies and refills the window once
        if not self.pending_pump:
            self.pending_pump = True
            assert self.transport is not None
            transport = self.transport
            transport.call_soon(lambda: transport.call_soon(self._pump))

    def _pump(self) -> None:
        self.pending_pump = False
        if self._done is None:
            return
        assert self.transport is not None
        if self.m.done:
            self.finish()
            return
        out = self.m.poll(self.transport.now())
        if out and self.link is not None:
            if self.proto == "udp":
                for msg in out:
                    self.link.send(msg)
            else:
                self.link.send(b"".join(record_mark(msg) for msg in out))
        if self.m.done:
            self.finish()
            return
        deadline = self.m.next_deadline()
        if deadline is None and (not out or self.proto == "udp"):
            deadline = self.transport.now() + SETTLE  # the machine is settling
        if deadline is None:
            self._arm(None, self._pump)
        elif self.timer is None or deadline < self.armed:
            # one timer, moved only when the machine's deadline comes sooner: a timer that
            # fires early just polls (and re-arms), cheaper than re-arming on every reply
            self.armed = deadline
            self._arm(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self._pump()


class CallOp(Op):
    """One call; `value` is the reply with the call's xid (TimeoutError, ConnectionError or
    the socket's error otherwise). UDP resends the same message `tries` times."""

    def __init__(
        self,
        address: str,
        port: int,
        proto: str,
        msg: bytes,
        *,
        timeout: float = 3.0,
        tries: int = 3,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        super().__init__()
        self.address = address
        self.port = port
        self.proto = "udp" if proto == "udp" else "tcp"
        self.msg = msg
        self.xid = peek_xid(msg)
        self.timeout = timeout
        self.tries = max(1, tries) if self.proto == "udp" else 1
        self.sent = 0
        self.records = RecordReader(max_record)

    def begin(self) -> None:
        assert self.transport is not None
        dial = Dial(1, self.address, self.port, self.proto, timeout=self.timeout)  # type: ignore[arg-type]
        self.link = self.transport.connect(dial, self._event)
        if self.proto == "tcp":
            self._arm(self.transport.now() + self.timeout, self._expired)

    def _expired(self) -> None:
        self.timer = None
        self.finish(None, TimeoutError(f"no reply from {self.address}:{self.port}"))

    def _send(self) -> None:
        assert self.transport is not None and self.link is not None
        if self.sent >= self.tries:
            self._expired()
            return
        self.sent += 1
        self.link.send(self.msg)
        self._arm(self.transport.now() + self.timeout / self.tries, self._send)

    def _event(self, ev: Event) -> None:
        if self._done is None:
            return
        if isinstance(ev, Connected):
            if self.proto == "udp":
                self._send()
            else:
                assert self.link is not None
                self.link.send(record_mark(self.msg))
        elif isinstance(ev, ConnectFailed | TlsFailed):
            self.link = None
            self.finish(None, ConnectionRefusedError(ev.error))
        elif isinstance(ev, Closed):
            self.link = None
            if self.proto == "udp":
                self.finish(None, ConnectionRefusedError("udp port unreachable"))
            else:
                self.finish(None, ConnectionError("closed before the reply"))
        elif isinstance(ev, Data):
            if self.proto == "udp":
                if peek_xid(ev.data) == self.xid:
                    self.finish(ev.data)
                return
            try:
                recs = self.records.feed(ev.data)
            except RpcError as exc:
                self.finish(None, exc)
                return
            for rec in recs:
                if peek_xid(rec) == self.xid:
                    self.finish(rec)
                    return


class FlowOp(Op):
    """Runs a generator flow: each yielded Op is started on the same transport; its value is
    sent back in (its error thrown in); the generator's return value is this op's value."""

    def __init__(self, flow: Generator[Op, Any, Any]) -> None:
        super().__init__()
        self.flow = flow
        self.current: Op | None = None

    def begin(self) -> None:
        self._step(None, None)

    def _step(self, value: Any, error: BaseException | None) -> None:
        if self._done is None:
            return
        try:
            op = self.flow.throw(error) if error is not None else self.flow.send(value)
        except StopIteration as stop:
            self.current = None
            self.finish(stop.value)
            return
        except Exception as exc:  # the flow's own error ends it, as an exception would
            self.current = None
            self.finish(None, exc)
            return
        self.current = op
        assert self.transport is not None
        transport = self.transport

        def back(v: Any, e: BaseException | None) -> None:
            # never inside the callback that finished the op: the next op starts afresh
            transport.call_soon(lambda: self._step(v, e))

        op.start(transport, back)

    def cancel(self) -> None:
        super().cancel()
        if self.current is not None:
            self.current.cancel()
            self.current = None
        self.flow.close()


async def run(op: Op, transport: Transport | None = None) -> Any:
    """Await `op` on the running loop (or the given transport); cancelling it cancels op."""
    if transport is None:
        from servprobe.net.transport import AsyncioTransport

        transport = AsyncioTransport()
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(value: Any, error: BaseException | None) -> None:
        if not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

    op.start(transport, done)
    try:
        return await fut
    finally:
        if not fut.done():
            op.cancel()


async def call_tcp(
    address: str,
    port: int,
    msg: bytes,
    *,
    timeout: float = 3.0,
    max_record: int = DEFAULT_MAX_RECORD,
) -> bytes:
    """One call on a fresh TCP connection; returns the reply with the same xid."""
    return await run(CallOp(address, port, "tcp", msg, timeout=timeout, max_record=max_record))


async def call_udp(
    address: str, port: int, msg: bytes, *, timeout: float = 3.0, tries: int = 3
) -> bytes:
    """One call over UDP with retransmits (same xid); returns the matching reply."""
    return await run(CallOp(address, port, "udp", msg, timeout=timeout, tries=tries))
