"""The asyncio driver of the service scan: runs thousands of state machines at once.

Public API (the CLI and benchmarks call these):

    await run_service_scan(db, targets, options, on_result, trace=None)
    scan_services(db, targets, options=None) -> list[ServiceResult]       # sync convenience

Each service is a `ServiceMachine` (engine.state) plus a `_Runner` here that carries out its
actions: connects (TCP, TLS via start_tls, connected UDP sockets; IPv4 and IPv6), sends,
closes, and one timer per service for the machine's `Wait(deadline)`. No service has a task
of its own except while a connect is in flight; socket callbacks feed the machine directly.

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
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from servprobe.engine.events import Fault
from servprobe.engine.plan import Planner
from servprobe.engine.state import (
    Close,
    ConnBudget,
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
    Wake,
    describe,
)
from servprobe.net.conn import TcpProtocol, UdpProtocol
from servprobe.net.hostinfo import with_host_facts
from servprobe.net.loop import new_event_loop
from servprobe.post import refine as post_refine
from servprobe.resources import nofile_limit
from servprobe.scan.services import service_name
from servprobe.timing import timing

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterable

    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.engine.state import Action, Event
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


class _Runner:
    """Carries out one machine's actions; feeds it socket events and timer expiries."""

    def __init__(
        self,
        machine: ServiceMachine,
        target: ServiceTarget,
        tracer: _Tracer,
        host_deadline: float | None,
    ) -> None:
        self.m = machine
        self.t = target
        self.loop = asyncio.get_running_loop()
        self.tracer = tracer if tracer.trace is not None else None
        self.conns: dict[int, Any] = {}  # conn -> protocol
        self.tls: dict[int, bool] = {}
        self.connecting: dict[int, asyncio.Task[None]] = {}
        self.timer: asyncio.TimerHandle | None = None
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

    def start(self) -> None:
        now = self.loop.time()
        self.step(lambda: self.m.start(now))

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
            self._do(fn())
            return
        if not offload and not self.queued and st.lock.acquire(blocking=False):
            try:
                actions = fn()
            finally:
                st.lock.release()
            self._do(actions)
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
            self._do(actions)

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

    def _do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                proto = self.conns.get(a.conn)
                if proto is not None and proto.transport is not None and not proto.gone:
                    if self.tracer is not None:
                        self._log(f"conn {a.conn} SEND {a.probe} {len(a.data)} bytes: {describe(a.data)}")
                    try:
                        if isinstance(proto, UdpProtocol):
                            proto.transport.sendto(a.data)
                        else:
                            proto.transport.write(a.data)
                    except (OSError, RuntimeError) as exc:
                        self._log(f"conn {a.conn} SEND failed: {exc}")
            elif isinstance(a, Connect):
                self.tls[a.conn] = a.tls_level is not None
                if self.tracer is not None:
                    mode = f"TLS level {a.tls_level}" if a.tls_level is not None else a.proto.upper()
                    self._log(f"conn {a.conn} {mode} connection requested (timeout {a.timeout:.1f}s)")
                self.connecting[a.conn] = self.loop.create_task(self._connect(a))
            elif isinstance(a, Close):
                self._close(a.conn)
            elif isinstance(a, Wait):
                if self.timer is not None:
                    self.timer.cancel()
                    self.timer = None
                if a.deadline is not None:
                    self.timer = self.loop.call_at(a.deadline, self._on_timer)
            elif isinstance(a, Note):
                self._log(a.text)
            elif isinstance(a, Report):
                self._finish(a.result)
            elif isinstance(a, Wake):
                other = self.wakers.get(a.key) if self.wakers is not None else None
                if other is not None:
                    other.wake()
            elif isinstance(a, Fault):
                # one service's internal error ends only that service (issue 11, bug 8)
                self.faults.append(a.error)
                if self.debug:
                    _stderr_trace(f"servprobe: {a.error}")

    wakers: dict[int, _Runner] | None = None  # machine key -> runner, for Wake actions
    debug = 0
    faults: list[str] = []

    def wake(self) -> None:
        """A connection budget freed up: let the machine try to speculate again (soon)."""
        if not self.done.done():
            self.loop.call_soon(self.feed, Timeout())

    def _on_timer(self) -> None:
        self.timer = None
        self.feed(Timeout())

    def _host_timeout(self) -> None:
        self.host_timer = None
        if not self.done.done():
            self._log("host timeout")
            now = self.loop.time()
            self.step(lambda: self.m.abort(now, "host timeout"))

    def _close(self, conn: int) -> None:
        task = self.connecting.pop(conn, None)
        if task is not None:
            task.cancel()
        proto = self.conns.pop(conn, None)
        self.tls.pop(conn, None)
        if proto is not None:
            proto.gone = True
            tr = proto.transport
            if tr is not None:
                if isinstance(proto, TcpProtocol):
                    tr.abort()  # no lingering FIN_WAIT/TLS shutdown dance for a probe socket
                else:
                    tr.close()

    def cancel(self) -> None:
        """Release everything (normal end, cancellation, error)."""
        self.cancelled = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.host_timer is not None:
            self.host_timer.cancel()
            self.host_timer = None
        for conn in list(self.conns) + list(self.connecting):
            self._close(conn)

    def _finish(self, result: ServiceResult) -> None:
        self.cancel()
        if not self.done.done():
            self.done.set_result(result)

    async def _connect(self, a: Connect) -> None:
        loop = self.loop
        conn = a.conn
        t = self.t
        proto: Any
        try:
            async with asyncio.timeout(a.timeout) as budget:
                family = socket.AF_INET6 if ":" in t.address else socket.AF_INET
                local = source_address(a.source_port, family)
                if a.proto == "udp":
                    proto = UdpProtocol(conn, self.feed)
                    try:
                        await loop.create_datagram_endpoint(
                            lambda: proto, remote_addr=(t.address, t.port), family=family,
                            local_addr=local, reuse_port=True if local is not None else None,
                        )
                    except OSError as exc:
                        if local is None:
                            raise
                        _note_once(f"cannot send from source port {a.source_port} ({exc.strerror or exc}); "
                                   "sending from an ephemeral port")
                        await loop.create_datagram_endpoint(
                            lambda: proto, remote_addr=(t.address, t.port), family=family
                        )
                else:
                    proto = TcpProtocol(conn, self.feed)
                    try:
                        tr, _ = await loop.create_connection(lambda: proto, t.address, t.port, local_addr=local)
                    except OSError as exc:
                        if local is None:
                            raise
                        _note_once(f"cannot connect from source port {a.source_port} ({exc.strerror or exc}); "
                                   "connecting from an ephemeral port")
                        tr, _ = await loop.create_connection(lambda: proto, t.address, t.port)
                    if a.tls_level is not None:
                        budget.reschedule(loop.time() + (a.tls_timeout or a.timeout) + 1.0)
                        from servprobe.net.tls import client_context, sni_name

                        try:
                            new = await loop.start_tls(
                                tr,
                                proto,
                                client_context(a.tls_level),
                                server_hostname=sni_name(t.hostname),
                                ssl_handshake_timeout=a.tls_timeout or a.timeout,
                            )
                        except (OSError, EOFError, TimeoutError, ConnectionError) as exc:
                            proto.gone = True
                            proto.held = None
                            tr.abort()
                            self.connecting.pop(conn, None)
                            self.feed(TlsFailed(conn, repr(exc)))
                            return
                        if new is None:
                            proto.gone = True
                            self.connecting.pop(conn, None)
                            self.feed(TlsFailed(conn, "connection closed during handshake"))
                            return
                        proto.transport = new
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            self.connecting.pop(conn, None)
            self.feed(ConnectFailed(conn, str(exc) or type(exc).__name__))
            return
        self.connecting.pop(conn, None)
        if self.done.done():
            with contextlib.suppress(Exception):
                proto.transport.abort() if isinstance(proto, TcpProtocol) else proto.transport.close()
            return
        self.conns[conn] = proto
        self.feed(Connected(conn))
        proto.go_live()


async def _aiter(targets: Iterable[ServiceTarget] | AsyncIterable[ServiceTarget]):
    if hasattr(targets, "__aiter__"):
        async for t in targets:  # type: ignore[union-attr]
            yield t
    else:
        for t in targets:  # type: ignore[union-attr]
            yield t


_NOTED: set[str] = set()


def _note_once(text: str) -> None:
    """A note for the user on stderr, once per process (e.g. a source port we cannot use)."""
    if text in _NOTED:
        return
    _NOTED.add(text)
    import sys

    with contextlib.suppress(OSError, ValueError):
        print(f"servprobe: note: {text}", file=sys.stderr, flush=True)


def source_address(port: int | None, family: int, euid: int | None = None) -> tuple[str, int] | None:
    """Where to bind a probe's socket for its `source=N` option, or None (any port).

    Binding below 1024 needs root (CAP_NET_BIND_SERVICE): without it, say so once and let
    the kernel pick an ephemeral port (the probe still goes out; a peer that answers only
    to port N stays silent)."""
    if port is None:
        return None
    if port < 1024 and (os.geteuid() if euid is None else euid) != 0:
        _note_once(f"probes with source={port} need root to bind a port below 1024; "
                   "sending them from an ephemeral port")
        return None
    return ("::" if family == socket.AF_INET6 else "0.0.0.0", port)


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


def _grinder() -> Any:
    try:
        from servprobe.rpc import grinder
    except ImportError:
        return None
    if not hasattr(grinder, "wants_grind") or not hasattr(grinder, "grind_result"):
        return None
    return grinder


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
    grinder = _grinder() if options.rpc_grind else None
    tasks: set[asyncio.Task[None]] = set()
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()

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
        runner = _Runner(machine, target, tracer, deadline)
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
        # RPC grinding is part of the service's scan: it holds the service's slot (its machine's
        # connections are closed by now, so it uses the service's own descriptors) and stops at
        # the host timeout like the rest, keeping the result it has
        if grinder is not None:
            try:
                if grinder.wants_grind(result):
                    async with asyncio.timeout_at(deadline):
                        result = await grinder.grind_result(result, options)
            except TimeoutError:
                tracer(runner.where, "host timeout during RPC grinding")
            except Exception as exc:  # the grinder must not lose the result
                tracer(runner.where, f"RPC grinding failed: {exc!r}")
        # post-processors (servprobe.post, issue 12): nmap's version scripts, natively
        result = await post_refine(result, options, host.budget, deadline,
                                   (lambda text: tracer(runner.where, text)) if tracer.trace else None)
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
    return [found[(t.address, t.proto, t.port)] for t in targets if (t.address, t.proto, t.port) in found]
