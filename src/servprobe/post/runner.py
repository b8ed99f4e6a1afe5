"""The runner of the post-processors: their connections, deadlines and trace.

Exchanges run on the one transport interface (engine.transport): `Exchange` carries one
machine's connection on any transport (real sockets or the simulator, the same code); the
asyncio part here only schedules them, holds the connection slots and applies the findings.

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
from typing import TYPE_CHECKING

from servprobe.engine.events import Closed, Connected, ConnectFailed, Data, TlsFailed
from servprobe.engine.state import describe
from servprobe.engine.transport import Dial
from servprobe.post.base import (
    MAX_BUFFER,
    POST_CONTEXT,
    Driven,
    Finding,
    Machine,
    PostEnv,
    PostProcessor,
    apply,
    target_name,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.events import Event
    from servprobe.engine.options import EngineOptions
    from servprobe.engine.state import ConnBudget
    from servprobe.engine.transport import Link, Timer, Transport
    from servprobe.result import ServiceResult

CONNECT_TIMEOUT = 2.0
UDP_RESEND = 0.8  # seconds without any answer before a UDP post-processor sends again


class _Slots:
    """Connection slots of one service's post-processors (see module docstring)."""

    def __init__(self, budget: ConnBudget | None, wake: Callable[[int], None] | None) -> None:
        self.budget = budget
        self.wake = wake
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
                # the slot goes to the machine that waits longest for one, at once: without
                # the wake-up it would only notice at its own next deadline
                woken = self.budget.release()
                if woken is not None and self.wake is not None:
                    self.wake(woken)
            return
        async with self.own:
            yield


async def run_post(
    result: ServiceResult,
    chosen: list[PostProcessor],
    budget: ConnBudget | None = None,
    deadline: float | None = None,
    trace: Callable[[str], None] | None = None,
    post_deadline: float | None = None,
    *,
    options: EngineOptions | None = None,
    wake: Callable[[int], None] | None = None,
    transport: Transport | None = None,
) -> ServiceResult:
    """Run `chosen` on `result` in parallel; return it refined (the same object).

    `post_deadline` caps every post-processor's own deadline (tests); `options`, `wake` (a
    budget wake-up for the driver's machines) and `transport` default to the driver's
    PostContext (post.base.POST_CONTEXT), then to none and the running loop's sockets."""
    ctx = POST_CONTEXT.get()
    if ctx is not None:
        options = options if options is not None else ctx.options
        wake = wake if wake is not None else ctx.wake
        transport = transport if transport is not None else ctx.transport
    chosen = [p for p in chosen if p.enabled is None or p.enabled(options)]
    if not chosen:
        return result
    loop = asyncio.get_running_loop()
    if transport is None:
        from servprobe.net.transport import AsyncioTransport

        transport = AsyncioTransport(loop)
    # each post-processor has its own deadline once it holds a connection; waiting for one
    # (a spent budget runs them one after another) is bounded by the sum of them all
    own = [p.deadline if post_deadline is None else min(post_deadline, p.deadline) for p in chosen]
    end = loop.time() + sum(own)
    if deadline is not None:
        end = min(end, deadline)
    slots = _Slots(budget, wake)
    env = PostEnv(options, transport)
    findings = await asyncio.gather(
        *(
            _one(result, p, slots, end, limit, trace, env)
            for p, limit in zip(chosen, own, strict=True)
        ),
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
    parts += [f"{k}={v!r}" for k, v in f.overrides.items() if k not in ("finished", "rpc")]
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
    env: PostEnv,
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
                    await _await(m, result, env, log)
    except TimeoutError:
        log("deadline reached")
    except (OSError, EOFError, ValueError) as exc:
        log(f"connection failed: {exc!r}")
    return m.finish()


async def _await(
    m: Machine, result: ServiceResult, env: PostEnv, log: Callable[[str], None]
) -> None:
    """Run the machine's exchange on the transport until it ends; cancelling stops it."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(error: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(None)

    ex: Exchange | Driven = m if isinstance(m, Driven) else Exchange(m, result, log)
    ex.begin(env, log, done)
    try:
        await fut
    finally:
        ex.stop()


class Exchange:
    """One post-processor machine's exchange on one connection of the transport.

    Connect (TLS when the service is tunnelled and the machine follows it, UDP for UDP
    machines), send what `start`/`feed` return, feed every chunk with the transport's unix
    time, tell the machine about EOF; UDP sends the first datagrams again after UDP_RESEND
    without an answer (a datagram or its answer may be lost). `done(error)` once at the end:
    the machine is done, the server closed, the connection failed (logged, no error), or the
    machine raised (the error)."""

    def __init__(self, m: Machine, result: ServiceResult, log: Callable[[str], None]) -> None:
        self.m = m
        self.result = result
        self.log = log
        self.link: Link | None = None
        self.timer: Timer | None = None
        self.first: list[bytes] = []
        self.got = 0
        self._done: Callable[[BaseException | None], None] | None = None
        self.transport: Transport | None = None

    def begin(
        self, env: PostEnv, log: Callable[[str], None], done: Callable[[BaseException | None], None]
    ) -> None:
        self.transport = env.transport
        self._done = done
        m, r = self.m, self.result
        tls = m.follow_tunnel and r.tunnel == "ssl" and m.proto == "tcp"
        self.log(f"{'TLS' if tls else m.proto.upper()} connection requested")
        dial = Dial(
            1,
            r.address,
            r.port,
            m.proto,
            tls_level=1 if tls else None,
            server_hostname=target_name(r),
            timeout=CONNECT_TIMEOUT,
            tls_timeout=CONNECT_TIMEOUT,
            source_port=m.source_port,  # net.transport falls back when not root or busy
        )
        self.link = env.transport.connect(dial, self._event)

    def stop(self) -> None:
        self._done = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.link is not None:
            self.link.close()
            self.link = None

    def _end(self, error: BaseException | None = None) -> None:
        done = self._done
        self.stop()
        if done is not None:
            done(error)

    def _send(self, out: list[bytes]) -> None:
        for data in out:
            self.log(f"SEND {len(data)} bytes: {describe(data)}")
            if self.link is not None:
                self.link.send(data)

    def _resend(self) -> None:
        self.timer = None
        if self._done is None:
            return
        self.log("no answer yet: resending")
        self._send(self.first)
        self._arm_resend()

    def _arm_resend(self) -> None:
        if self.m.proto == "udp" and self.got == 0 and self.transport is not None:
            self.timer = self.transport.call_at(self.transport.now() + UDP_RESEND, self._resend)

    def _event(self, ev: Event) -> None:
        if self._done is None or self.transport is None:
            return
        m = self.m
        try:
            if isinstance(ev, Connected):
                self.first = m.start(self.transport.wall())
                self._send(self.first)
                if m.done:
                    self._end()
                    return
                self._arm_resend()
            elif isinstance(ev, ConnectFailed | TlsFailed):
                self.link = None
                self.log(f"connection failed: {ev.error}")
                self._end()
            elif isinstance(ev, Closed):
                self.link = None
                self.log("EOF")
                m.eof(self.transport.wall())
                self._end()
            elif isinstance(ev, Data):
                chunk = ev.data
                self.log(f"READ {len(chunk)} bytes: {describe(chunk)}")
                self.got += len(chunk)
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                self._send(m.feed(chunk, self.transport.wall()))
                if m.done or self.got > MAX_BUFFER:
                    self._end()
        except Exception as exc:  # a machine's bug ends its exchange; the runner traces it
            self._end(exc)
