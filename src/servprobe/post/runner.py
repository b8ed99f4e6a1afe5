"""The asyncio runner of the post-processors: their connections, deadlines and trace.

Every post-processor that applies to a service runs at once, each on its own connection,
each within its deadline (POST_DEADLINE, shorter for the UDP ones that also try ports the walk
could not name) and never past the host's --host-timeout. Connections come from the host's
ConnBudget (the driver's per-host and global limits); when the budget
is spent (or zero, at -T0/-T1), a post-processor waits for the service's own slot — the one
its walk no longer uses — so they run one after the other instead of never.
Findings are applied in registry order, so the result does not depend on who answered first.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING, Any

from servprobe.engine.state import describe
from servprobe.post.base import (
    MAX_BUFFER,
    POST_DEADLINE,
    Finding,
    Machine,
    PostProcessor,
    apply,
    target_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.state import ConnBudget
    from servprobe.result import ServiceResult

CONNECT_TIMEOUT = 2.0
UDP_RESEND = 0.8  # seconds without any answer before a UDP post-processor sends again


class _Pipe(asyncio.Protocol, asyncio.DatagramProtocol):
    """Bytes (TCP chunks or datagrams) into a queue; None marks EOF/error."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def eof_received(self) -> bool:
        self.queue.put_nowait(None)
        return False

    def error_received(self, exc: Exception) -> None:
        self.queue.put_nowait(None)  # ICMP unreachable on a connected UDP socket

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)


class _Slots:
    """Connection slots of one service's post-processors (see module docstring)."""

    def __init__(self, budget: ConnBudget | None) -> None:
        self.budget = budget
        self.own = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self):  # type: ignore[no-untyped-def]
        if self.budget is None:  # a library caller without limits
            yield
            return
        if self.budget.try_acquire():
            try:
                yield
            finally:
                self.budget.release()
            return
        async with self.own:
            yield


async def run_post(
    result: ServiceResult,
    chosen: list[PostProcessor],
    budget: ConnBudget | None = None,
    deadline: float | None = None,
    trace: Callable[[str], None] | None = None,
    post_deadline: float = POST_DEADLINE,
) -> ServiceResult:
    """Run `chosen` on `result` in parallel; return it refined (the same object)."""
    if not chosen:
        return result
    loop = asyncio.get_running_loop()
    # each post-processor has its own deadline once it holds a connection; waiting for one
    # (a spent budget runs them one after another) is bounded by the sum of them all
    own = [min(post_deadline, p.deadline) for p in chosen]
    end = loop.time() + sum(own)
    if deadline is not None:
        end = min(end, deadline)
    slots = _Slots(budget)
    findings = await asyncio.gather(
        *(_one(result, p, slots, end, limit, trace) for p, limit in zip(chosen, own, strict=True)),
        return_exceptions=True,
    )
    for p, f in zip(chosen, findings, strict=True):
        if isinstance(f, BaseException):
            if isinstance(f, asyncio.CancelledError):
                raise f
            if trace is not None:
                trace(f"post {p.id} failed: {f!r}")
            continue
        if f is not None:
            apply(result, f)
            if trace is not None:
                trace(f"post {p.id} found: {_summary(f)}")
    return result


def _summary(f: Finding) -> str:
    parts = [f"{k}={v!r}" for k, v in f.fields.items()]
    if f.script is not None:
        parts.append(f"script {f.script.id}")
    return ", ".join(parts) or "nothing"


async def _one(
    result: ServiceResult,
    p: PostProcessor,
    slots: _Slots,
    end: float,
    limit: float,
    trace: Callable[[str], None] | None,
) -> Finding | None:
    m = p.machine(result)
    if p.offline:
        return m.finish()

    def log(text: str) -> None:
        if trace is not None:
            trace(f"post {p.id} {text}")

    loop = asyncio.get_running_loop()
    remaining = end - loop.time()
    if remaining <= 0:
        return None
    try:
        async with asyncio.timeout(remaining):
            async with slots.slot():
                async with asyncio.timeout(min(limit, end - loop.time())):
                    await _exchange(result, m, log)
    except TimeoutError:
        log("deadline reached")
    except (OSError, EOFError, ValueError) as exc:
        log(f"connection failed: {exc!r}")
    return m.finish()


async def _exchange(result: ServiceResult, m: Machine, log: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    pipe = _Pipe()
    addr, port = result.address, result.port
    tls = m.follow_tunnel and result.tunnel == "ssl" and m.proto == "tcp"
    log(f"{'TLS' if tls else m.proto.upper()} connection requested")
    async with asyncio.timeout(CONNECT_TIMEOUT):
        if m.proto == "udp":
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            tr, _ = await loop.create_datagram_endpoint(lambda: pipe, remote_addr=(addr, port), family=family)
        else:
            tr, _ = await loop.create_connection(lambda: pipe, addr, port)
            if tls:
                from servprobe.net.tls import client_context, sni_name

                new = await loop.start_tls(tr, pipe, client_context(1), server_hostname=sni_name(target_name(result)))
                if new is None:
                    raise EOFError("connection closed during the TLS handshake")
                tr = new
    pipe.transport = tr
    try:
        first = send = m.start(time.time())
        got = 0
        while True:
            for data in send:
                log(f"SEND {len(data)} bytes: {describe(data)}")
                if m.proto == "udp":
                    tr.sendto(data)
                else:
                    tr.write(data)
            if m.done:
                return
            if m.proto == "udp" and got == 0:
                # a datagram (or its answer) may be lost: resend the first ones until the
                # deadline, as a UDP client does
                try:
                    chunk = await asyncio.wait_for(pipe.queue.get(), UDP_RESEND)
                except TimeoutError:
                    log("no answer yet: resending")
                    send = first
                    continue
            else:
                chunk = await pipe.queue.get()
            if chunk is None:
                log("EOF")
                m.eof(time.time())
                return
            log(f"READ {len(chunk)} bytes: {describe(chunk)}")
            got += len(chunk)
            send = m.feed(chunk, time.time())
            if got > MAX_BUFFER:
                return
    finally:
        if m.proto == "tcp":
            tr.abort()
        else:
            tr.close()
