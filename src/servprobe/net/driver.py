"""The asyncio driver of the service scan: runs thousands of state machines at once.

Public API (the CLI and benchmarks call these):

    await run_service_scan(db, targets, options, on_result, trace=None)
    scan_services(db, targets, options=None) -> list[ServiceResult]       # sync convenience

Each service is a `ServiceMachine` (engine.state) plus a `_Runner` here: the shared
engine.transport.ServiceRunner on the one transport interface (net.transport's asyncio
sockets: TCP, TLS, connected UDP; IPv4 and IPv6), with one timer per service for the
machine's `Wait(deadline)`. No service has a task of its own except while a connect is in
flight; socket callbacks feed the machine directly. After the walk, the post-processors
(servprobe.post, rpc-grind among them) run on the same transport, inside the host timeout
and the host's connection budget.

Limits: services in progress (global and per host), speculative connections (per host and
global, from RLIMIT_NOFILE, whose soft limit is raised to the hard one), a per-host timeout
(the scan runner's deadline, ServiceTarget.deadline), bytes kept per response (the machine),
regex time per call (EngineOptions.regex_timeout, every line). Steps that read data — and so
run the patterns — go to one engine thread (_Stepper), so a slow match never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from servprobe.engine.plan import Planner
from servprobe.engine.state import (
    ConnBudget,
    Connected,
    ConnectFailed,
    Data,
    ServiceMachine,
    Timeout,
    TlsFailed,
    describe,
)
from servprobe.engine.transport import ServiceRunner
from servprobe.net.hostinfo import with_host_facts
from servprobe.net.loop import new_event_loop
from servprobe.net.transport import AsyncioTransport, source_address  # noqa: F401  (re-exported)
from servprobe.post import refine as post_refine
from servprobe.post.base import POST_CONTEXT, PostContext
from servprobe.resources import nofile_limit
from servprobe.scan.services import service_name
from servprobe.timing import timing

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable

    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.engine.state import Action, Connect, Event, Send
    from servprobe.probes.model import ProbeDB
    from servprobe.result import ServiceResult

FD_RESERVE = 128  # descriptors kept free for the rest of the process (files, DNS, stdout)


def raise_nofile_limit() -> int:
    """The soft RLIMIT_NOFILE after raising it (servprobe.resources.nofile_limit, the one raiser)."""
    return nofile_limit()[0]


class Limits:
    """How many services and connections may be in flight (see module docstring)."""

    def __init__(self, options: EngineOptions) -> None:
        nofile = raise_nofile_limit()
        fds = max(16, nofile - FD_RESERVE)
        row = timing(options.timing)
        services = options.max_parallelism or row.services
        # every service in progress may hold 2 connections of its own (NULL + a retry); keep
        # at least half the descriptors for speculation unless running sequentially
        share = 2 if options.sequential else 4
        self.services = max(1, min(services, fds // share))
        self.per_host = max(1, options.per_host_parallelism or row.services_per_host)
        spare = max(0, fds - 2 * self.services)
        self.speculative = spare
        per_host_conns = options.per_host_connections
        if per_host_conns is None:
            per_host_conns = row.conns_per_host
        self.per_host_connections = per_host_conns


class _Host:
    """Per-host queue of services, its workers, its connection budget (and, without the scan
    runner, its timeout clock); dropped when the host has no work left."""

    __slots__ = ("address", "budget", "deadline", "queue", "workers")

    def __init__(self, address: str, limits: Limits, global_budget: ConnBudget) -> None:
        self.address = address
        self.queue: deque[ServiceTarget] = deque()
        self.workers = 0
        self.budget = ConnBudget(limits.per_host_connections, global_budget)
        # EngineOptions.host_timeout's deadline, for callers without the scan runner
        self.deadline: float | None = None


class _Tracer:
    def __init__(self, trace: Callable[[str], None] | None, enabled: bool) -> None:
        self.trace = trace if trace is not None else (_stderr_trace if enabled else None)
        self.t0 = time.monotonic()

    def __call__(self, where: str, text: str) -> None:
        if self.trace is not None:
            self.trace(f"SERVPROBE ({time.monotonic() - self.t0:.4f}s) {where} {text}")


def _stderr_trace(line: str) -> None:
    import sys

    from servprobe.escape import terminal_safe

    print(terminal_safe(line), file=sys.stderr, flush=True)


class _Stepper:
    """Runs the scan's machine steps one at a time, keeping regex matching off the loop.

    A step that reads data (a Data event) may run many patterns (up to the per-call regex
    timeout each), so it goes to one engine thread (`regex` releases the GIL while it
    searches: the loop keeps reading sockets and stamping times). Other steps run on the
    loop when no step is running there; one lock makes steps of all machines mutually
    exclusive (they share connection budgets), and a machine's steps stay in order (once one
    of its steps waits for the engine thread, the following ones queue behind it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="servprobe-match")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Runner(ServiceRunner):
    """The shared ServiceRunner (engine.transport) on the asyncio transport, plus what a real
    scan needs: tracing, the host timer, the engine thread for steps that match, a future."""

    wakers: dict[int, _Runner] | None = None  # machine key -> runner, for Wake actions
    debug = 0
    faults: list[str] = []

    def __init__(
        self,
        machine: ServiceMachine,
        target: ServiceTarget,
        transport: AsyncioTransport,
        tracer: _Tracer,
        host_deadline: float | None,
    ) -> None:
        super().__init__(machine, transport, target.address, target.port, target.hostname)
        self.t = target
        self.loop = transport.loop
        self.tracer = tracer if tracer.trace is not None else None
        self.tls: dict[int, bool] = {}
        self.host_timer: asyncio.TimerHandle | None = None
        self.done: asyncio.Future[ServiceResult] = self.loop.create_future()
        self.stepper: _Stepper | None = None
        self.queued = 0  # steps of this machine waiting for (or on) the engine thread
        self.cancelled = False
        addr = target.address
        self.where = f"[{addr}]:{target.port}" if ":" in addr else f"{addr}:{target.port}"
        if host_deadline is not None:
            self.host_timer = self.loop.call_at(host_deadline, self._host_timeout)

    def _log(self, text: str) -> None:
        if self.tracer is not None:
            self.tracer(self.where, text)

    def feed(self, ev: Event) -> None:
        if self.done.done():
            return
        if self.tracer is not None:
            self._trace_event(ev)
        now = self.loop.time()  # the event's time, whenever its step runs
        self.step(lambda: self.m.handle(ev, now), offload=isinstance(ev, Data))

    def step(self, fn: Callable[[], list[Action]], offload: bool = False) -> None:
        """Run one machine step (see _Stepper) and carry out its actions on the loop."""
        st = self.stepper
        if st is None:
            self.do(fn())
            return
        if not offload and not self.queued and st.lock.acquire(blocking=False):
            try:
                actions = fn()
            finally:
                st.lock.release()
            self.do(actions)
            return
        self.queued += 1
        try:
            st.pool.submit(self._off_loop, st, fn)
        except RuntimeError:  # the scan is shutting down
            self.queued -= 1

    def _off_loop(self, st: _Stepper, fn: Callable[[], list[Action]]) -> None:
        actions: list[Action] | None = None
        error: BaseException | None = None
        if not self.cancelled and not self.done.done():
            with st.lock:
                try:
                    actions = fn()
                except BaseException as exc:  # raised on the loop, as an inline step would
                    error = exc
        with contextlib.suppress(RuntimeError):  # loop closed: nothing left to do
            self.loop.call_soon_threadsafe(self._back, actions, error)

    def _back(self, actions: list[Action] | None, error: BaseException | None) -> None:
        self.queued -= 1
        if error is not None:
            raise error
        if actions and not self.cancelled and not self.done.done():
            self.do(actions)

    def _trace_event(self, ev: Event) -> None:
        from servprobe.engine.state import Closed, Data

        if isinstance(ev, Data):
            self._log(f"conn {ev.conn} READ {len(ev.data)} bytes: {describe(ev.data)}")
        elif isinstance(ev, Closed):
            self._log(f"conn {ev.conn} {'RESET' if ev.reset else 'EOF'}")
        elif isinstance(ev, Connected):
            self._log(f"conn {ev.conn} CONNECT SUCCESS{' (TLS)' if self.tls.get(ev.conn) else ''}")
        elif isinstance(ev, ConnectFailed):
            self._log(f"conn {ev.conn} CONNECT FAILED: {ev.error}")
        elif isinstance(ev, TlsFailed):
            self._log(f"conn {ev.conn} TLS FAILED: {ev.error}")
        elif isinstance(ev, Timeout):
            pass  # the machine notes which reads timed out

    # -- ServiceRunner hooks ----------------------------------------------------------------
    def on_connect(self, a: Connect) -> None:
        self.tls[a.conn] = a.tls_level is not None
        if self.tracer is not None:
            mode = f"TLS level {a.tls_level}" if a.tls_level is not None else a.proto.upper()
            self._log(f"conn {a.conn} {mode} connection requested (timeout {a.timeout:.1f}s)")

    def on_send(self, a: Send, sent: bool) -> None:
        if sent and self.tracer is not None:
            self._log(f"conn {a.conn} SEND {a.probe} {len(a.data)} bytes: {describe(a.data)}")

    def on_note(self, text: str) -> None:
        self._log(text)

    def on_report(self, result: ServiceResult) -> None:
        self.cancel()
        if not self.done.done():
            self.done.set_result(result)

    def on_wake(self, key: int) -> None:
        other = self.wakers.get(key) if self.wakers is not None else None
        if other is not None:
            other.wake()

    def on_fault(self, error: str) -> None:
        # one service's internal error ends only that service (issue 11, bug 8)
        self.faults.append(error)
        if self.debug:
            _stderr_trace(f"servprobe: {error}")

    def close_conn(self, conn: int) -> None:
        self.tls.pop(conn, None)
        super().close_conn(conn)

    def wake(self) -> None:
        """A connection budget freed up: let the machine try to speculate again (soon)."""
        if not self.done.done():
            self.loop.call_soon(self.feed, Timeout())

    def _host_timeout(self) -> None:
        self.host_timer = None
        if not self.done.done():
            self._log("host timeout")
            now = self.loop.time()
            self.step(lambda: self.m.abort(now, "host timeout"))

    def cancel(self) -> None:
        """Release everything (normal end, cancellation, error)."""
        self.cancelled = True
        if self.host_timer is not None:
            self.host_timer.cancel()
            self.host_timer = None
        self.close_all()


async def _aiter(targets: Iterable[ServiceTarget] | AsyncIterable[ServiceTarget]):
    if hasattr(targets, "__aiter__"):
        async for t in targets:  # type: ignore[union-attr]
            yield t
    else:
        for t in targets:  # type: ignore[union-attr]
            yield t


class _TimedDB:
    """The database as the engine sees it: every regex call under EngineOptions.regex_timeout."""

    __slots__ = ("_db", "_timeout")

    def __init__(self, db: ProbeDB, timeout: float) -> None:
        self._db = db
        self._timeout = timeout

    def match(self, probe_name: str, data: bytes, proto: Any = "tcp") -> Any:
        return self._db.match(probe_name, data, proto, self._timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def run_service_scan(
    db: ProbeDB,
    targets: Iterable[ServiceTarget] | AsyncIterable[ServiceTarget],
    options: EngineOptions,
    on_result: Callable[[ServiceResult], None],
    trace: Callable[[str], None] | None = None,
) -> None:
    """Identify every target; call on_result(result) as each one finishes (any order)."""
    options = with_host_facts(options, asyncio.get_running_loop().time())
    limits = Limits(options)
    planner = Planner(db)
    timed_db = _TimedDB(db, options.regex_timeout)
    stepper = _Stepper()  # matching off the loop (issue 11, bug 10)
    wakers: dict[int, _Runner] = {}
    faults: list[str] = []
    tracer = _Tracer(trace, options.version_trace)
    if trace is not None and not options.version_trace:
        tracer.trace = None
    global_budget = ConnBudget(limits.speculative)
    hosts: dict[str, _Host] = {}
    services = asyncio.Semaphore(limits.services)
    # targets read ahead of the scan: bounds memory for huge target lists
    queued = asyncio.Semaphore(max(10_000, 4 * limits.services))
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    transport = AsyncioTransport(loop)  # the one transport interface (engine.transport)

    def _wake(key: int) -> None:
        runner = wakers.get(key)
        if runner is not None:
            runner.wake()

    async def one(target: ServiceTarget, host: _Host) -> ServiceResult:
        now = loop.time()
        # one host-timeout clock: the scan runner's deadline comes with the target; only a
        # library caller without a runner gets the per-host clock of EngineOptions.host_timeout
        deadline = target.deadline
        if deadline is None and options.host_timeout is not None:
            if host.deadline is None:
                host.deadline = now + options.host_timeout
            deadline = host.deadline
        if target.table_name is None:  # the engine looks nothing up itself
            target = dataclasses.replace(target, table_name=service_name(target.port, target.proto))
        machine = ServiceMachine(target, timed_db, planner, options, host.budget)
        runner = _Runner(machine, target, transport, tracer, deadline)
        runner.stepper = stepper
        runner.wakers, runner.debug, runner.faults = wakers, options.debug, faults
        wakers[machine.key] = runner
        try:
            if deadline is not None and now >= deadline:
                runner.step(lambda: machine.abort(now, "host timeout"))
            else:
                runner.start()
            result = await runner.done
        finally:
            runner.cancel()
            wakers.pop(machine.key, None)
        # post-processors (servprobe.post, issue 12): nmap's version scripts, natively,
        # rpc-grind among them; on the scan's transport, their freed connection slots
        # waking this host's waiting machines at once
        POST_CONTEXT.set(PostContext(options, _wake, transport))
        result = await post_refine(
            result,
            options,
            host.budget,
            deadline,
            (lambda text: tracer(runner.where, text)) if tracer.trace else None,
        )
        return result

    async def worker(host: _Host) -> None:
        try:
            while host.queue:
                target = host.queue.popleft()
                queued.release()
                async with services:
                    result = await one(target, host)
                on_result(result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors.append(exc)
        finally:
            host.workers -= 1
            # the per-host record lives only while the host has work: a later mention of the
            # same address starts afresh (no inherited deadline, no stale budget)
            if not host.workers and not host.queue and hosts.get(host.address) is host:
                del hosts[host.address]

    try:
        async for target in _aiter(targets):
            await queued.acquire()
            host = hosts.get(target.address)
            if host is None:
                host = hosts[target.address] = _Host(target.address, limits, global_budget)
            host.queue.append(target)
            if host.workers < limits.per_host:
                host.workers += 1
                task = loop.create_task(worker(host))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if errors:
                break
        while tasks and not errors:
            await asyncio.wait(list(tasks), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        stepper.close()
    if errors:
        raise errors[0]


def scan_services(
    db: ProbeDB,
    targets: Iterable[ServiceTarget],
    options: EngineOptions | None = None,
    trace: Callable[[str], None] | None = None,
) -> list[ServiceResult]:
    """Synchronous convenience: results in the order of `targets`."""
    from servprobe.engine.options import EngineOptions as _Opts

    opts = options or _Opts()
    targets = list(targets)
    found: dict[tuple[str, str, int], ServiceResult] = {}

    def keep(r: ServiceResult) -> None:
        found[r.key] = r

    loop = new_event_loop()
    try:
        loop.run_until_complete(run_service_scan(db, targets, opts, keep, trace))
    finally:
        loop.close()
    return [
        found[(t.address, t.proto, t.port)]
        for t in targets
        if (t.address, t.proto, t.port) in found
    ]
