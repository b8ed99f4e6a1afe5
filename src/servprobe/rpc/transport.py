"""Thin asyncio I/O for ONC RPC: drive a sans-IO Grinder over TCP or UDP, and single calls.

All decisions live in grind.Grinder and protocol.RecordReader; this module only moves bytes,
waits until the machine's next deadline, and reports connection events.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from .grind import Grinder
from .protocol import DEFAULT_MAX_RECORD, RecordReader, RpcError, peek_xid, record_mark

# A NULL reply is ~28 bytes; a grind never needs more per record than this.
GRIND_MAX_RECORD = 64 * 1024


def _now() -> float:
    return time.monotonic()


async def _open_tcp(
    address: str, port: int, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(address, port), timeout)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def grind_tcp(
    machine: Grinder,
    address: str,
    port: int,
    *,
    connect_timeout: float = 5.0,
    max_record: int = GRIND_MAX_RECORD,
) -> None:
    """Run the machine over one TCP connection (reconnecting when the machine asks)."""
    while not machine.done:
        try:
            reader, writer = await _open_tcp(address, port, connect_timeout)
        except (OSError, TimeoutError) as exc:
            machine.unreachable(f"connect: {exc.__class__.__name__}: {exc}")
            return
        records = RecordReader(max_record)
        lost = False
        try:
            while not machine.done:
                out = machine.poll(_now())
                if out:
                    writer.write(b"".join(record_mark(m) for m in out))
                    await writer.drain()
                if machine.done:
                    break
                deadline = machine.next_deadline()
                wait = None if deadline is None else max(0.0, deadline - _now())
                if wait is None and not out:
                    # Nothing outstanding and nothing to send: the machine is settling.
                    wait = 0.05
                try:
                    data = await asyncio.wait_for(reader.read(65536), wait)
                except TimeoutError:
                    continue
                if not data:
                    lost = True
                    break
                try:
                    for rec in records.feed(data):
                        machine.receive(rec, _now())
                except RpcError as exc:
                    machine.malformed(str(exc))
        except (ConnectionError, OSError):
            lost = True
        finally:
            _close(writer)
        if lost and not machine.connection_lost(_now()):
            return


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        self._waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)
        self._wake()

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)
        self._wake()

    def wakeup(self) -> asyncio.Future[None]:
        """A future done when the next datagram (or error) arrives."""
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter


async def _open_udp(address: str, port: int) -> tuple[asyncio.DatagramTransport, _Datagrams]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(
        _Datagrams, remote_addr=(address, port), family=family
    )
    return transport, proto


async def grind_udp(machine: Grinder, address: str, port: int) -> None:
    """Run the machine over a connected UDP socket (retransmits are the machine's)."""
    try:
        transport, proto = await _open_udp(address, port)
    except OSError as exc:
        machine.unreachable(f"udp: {exc}")
        return
    refused = 0
    try:
        while not machine.done:
            for msg in machine.poll(_now()):
                transport.sendto(msg)
            if machine.done:
                break
            deadline = machine.next_deadline()
            wait = 0.05 if deadline is None else max(0.0, deadline - _now())
            if proto.queue.empty():
                try:
                    await asyncio.wait_for(proto.wakeup(), wait)
                except TimeoutError:
                    continue
            # Take every datagram already here before polling again: one poll per batch
            # keeps the window full without a scheduler round trip per reply.
            while not proto.queue.empty() and not machine.done:
                item = proto.queue.get_nowait()
                if isinstance(item, Exception):
                    # ICMP port unreachable. One could be stale (from an earlier scan of
                    # the port); a few in a row mean nobody listens.
                    refused += 1
                    if isinstance(item, ConnectionRefusedError) and refused >= 3:
                        machine.unreachable("udp port unreachable")
                    continue
                machine.receive(item, _now())
    finally:
        transport.close()


async def call_tcp(
    address: str,
    port: int,
    msg: bytes,
    *,
    timeout: float = 3.0,
    max_record: int = DEFAULT_MAX_RECORD,
) -> bytes:
    """One call on a fresh TCP connection; returns the reply with the same xid."""
    xid = peek_xid(msg)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(address, port)
        try:
            writer.write(record_mark(msg))
            await writer.drain()
            records = RecordReader(max_record)
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed before the reply")
                for rec in records.feed(data):
                    if peek_xid(rec) == xid:
                        return rec
        finally:
            _close(writer)


async def call_udp(
    address: str,
    port: int,
    msg: bytes,
    *,
    timeout: float = 3.0,
    tries: int = 3,
) -> bytes:
    """One call over UDP with retransmits (same xid); returns the matching reply."""
    xid = peek_xid(msg)
    transport, proto = await _open_udp(address, port)
    try:
        per_try = timeout / max(1, tries)
        for _ in range(max(1, tries)):
            transport.sendto(msg)
            end = _now() + per_try
            while (left := end - _now()) > 0:
                try:
                    item = await asyncio.wait_for(proto.queue.get(), left)
                except TimeoutError:
                    break
                if isinstance(item, Exception):
                    raise item
                if peek_xid(item) == xid:
                    return item
        raise TimeoutError(f"no UDP reply from {address}:{port}")
    finally:
        transport.close()
