"""The scan pipeline: targets → host discovery → port scan → service scan → reporters.

One-way flow, streaming at every stage: hosts are generated lazily from the target list and
scanned a group at a time; each open port goes to the service engine the moment the port scan
finds it (one long-running `run_service_scan` fed through a queue, so services of many hosts
share the engine's parallelism); each finished service goes to the reporters at once; a host
is reported when its port scan is over and its last service is identified.

Stopping (Ctrl-C, SIGTERM, --host-timeout) never loses a finding: a host cut short is
reported with what it has — open ports whose service scan did not finish keep their port-table
name (method "table") — and the reporters still get `finish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from servprobe.engine.options import ServiceTarget
from servprobe.report.base import COLLAPSE_THRESHOLD, Outputs, collapse_ports
from servprobe.result import HostResult, ScanRun, ServiceResult
from servprobe.scan.ports import PortSelection
from servprobe.scan.portscan import HostPorts, PortScanConfig, PortScanner
from servprobe.scan.services import service_name
from servprobe.scan.targets import HostTarget, TargetList, reverse_dns
from servprobe.timing import TIMINGS

# (targets, on_result) → runs the service scan until `targets` is exhausted
ServiceScan = Callable[
    [AsyncIterator[ServiceTarget], Callable[[ServiceResult], None]], Awaitable[None]
]

HOSTGROUP_BY_TIMING = {t: row.hostgroup for t, row in TIMINGS.items()}  # the timing table's


@dataclass
class RunConfig:
    ports: PortSelection
    portscan: PortScanConfig = field(default_factory=PortScanConfig)
    skip_discovery: bool = False  # -Pn
    list_only: bool = False  # -sL: name the targets, send nothing
    reverse_dns: bool = True  # not -n
    host_timeout: float | None = None
    hostgroup: int = 256
    collapse_threshold: int = COLLAPSE_THRESHOLD
    open_only: bool = False  # --open: list only open ports, report only hosts having some
    # per-port inputs: connect-scan the listed ports first (-p given) instead of trusting them
    verify_listed: bool = False


@dataclass
class Stats:
    """Live counters for the progress display."""

    hosts_total: int = 0
    hosts_done: int = 0
    hosts_up: int = 0
    ports_total: int = 0
    ports_done: int = 0
    services_total: int = 0
    services_done: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def services_inflight(self) -> int:
        return self.services_total - self.services_done


class _Host:
    def __init__(self, target: HostTarget) -> None:
        self.target = target
        self.result = HostResult(address=target.address, starttime=time.time())
        if target.hostname:
            self.result.hostnames.append(target.hostname)
            self.result.hostname_types.append("user")
        self.ports = HostPorts(target.address)
        self.services: dict[tuple[str, int], ServiceResult] = {}
        self.pending: set[tuple[str, int]] = set()
        # open ports found but not yet handed to the engine: the engine pulls them as it has
        # room, so a fast port scan never piles up targets (memory stays flat)
        self.todo: deque[tuple[str, int, str | None]] = deque()  # proto, port, port-scan state
        self.in_engine = 0  # handed to the engine, result not back yet
        self.deadline: float | None = None  # the host timeout, on the event loop's clock
        self.portscan_done = False
        self.idle = asyncio.Event()
        self.reported = False
        self.finished = asyncio.Event()
        # set once reported and nothing of it is left in the engine: a later mention of the
        # same address starts only then, so no late result is credited to it
        self.drained = asyncio.Event()


class ScanRunner:
    """Runs one scan; `stop()` ends it early (the report is still complete and well-formed)."""

    def __init__(
        self,
        targets: TargetList,
        config: RunConfig,
        outputs: Outputs,
        run: ScanRun,
        service_scan: ServiceScan | None = None,
        on_discovered: Callable[[str, str, int, str], None] | None = None,
    ) -> None:
        self.on_discovered = on_discovered  # -v: (address, proto, port, state) as found
        self.targets = targets
        self.config = config
        self.outputs = outputs
        self.run = run
        self.service_scan = service_scan
        self.run.service_scan = service_scan is not None
        self.stats = Stats()
        self.scanner: PortScanner | None = None
        self._hosts: dict[str, _Host] = {}
        self._ready: deque[_Host] = deque()  # hosts with open ports waiting for the engine
        self._ready_event = asyncio.Event()
        self._feed_closed = False
        self._hosts_up = 0  # reported hosts that were up (run.hosts is not kept: memory)
        self._stop = asyncio.Event()
        self.stop_reason: str | None = None
        try:
            self.stats.hosts_total = self.targets.count()
        except (OSError, ValueError):
            self.stats.hosts_total = 0
        per_host = self.config.ports.total()
        # per-port inputs (servprobe.scan.inputs) know their own count
        ports_count = getattr(self.targets, "ports_count", None)
        try:
            self.stats.ports_total = (
                ports_count(per_host) if ports_count else self.stats.hosts_total * per_host
            )
        except (OSError, ValueError):
            self.stats.ports_total = 0

    # -- control ------------------------------------------------------------------------------

    def stop(self, reason: str = "interrupted") -> None:
        self.stop_reason = self.stop_reason or reason
        if self.scanner is not None:
            self.scanner.abort()
        self._stop.set()

    async def execute(self) -> ScanRun:
        """Run the scan to the end (or until stop()); reporters get every event."""
        self.outputs.start(self.run)
        main = asyncio.create_task(self._scan_all())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if self._stop.is_set():
                # the scanner's abort may have ended `main` already: still an interrupted run
                self.run.interrupted = True
            if not main.done():
                self.run.interrupted = True
                main.cancel()
            results = await asyncio.gather(main, return_exceptions=True)
            # hosts cut short: report what they have
            for host in list(self._hosts.values()):
                if not host.reported and (host.portscan_done or len(host.ports) or host.services):
                    host.result.partial = True
                    self._finish_host(host)
            self.run.end = time.time()
            # counts of reported hosts; hosts themselves went to the reporters, not into run.hosts
            self.run.hosts_total = self.stats.hosts_done
            self.run.hosts_up = self._hosts_up
            if self.scanner is not None:
                self.scanner.close()
            self.outputs.finish(self.run)
        err = results[0]
        if isinstance(err, BaseException) and not isinstance(err, asyncio.CancelledError):
            raise err
        return self.run

    # -- the pipeline -------------------------------------------------------------------------

    async def _feed(self) -> AsyncIterator[ServiceTarget]:
        """Open ports for the engine, pulled as it has room; hosts take turns, and a host
        reported (timed out, stopped) is skipped with whatever it still had queued."""
        while True:
            while self._ready:
                host = self._ready.popleft()
                if host.reported or not host.todo:
                    continue
                proto, port, seen = host.todo.popleft()
                if host.todo:
                    self._ready.append(host)
                host.in_engine += 1
                yield ServiceTarget(
                    host.target.address, port, proto, host.target.hostname, deadline=host.deadline,  # type: ignore[arg-type]
                    state=seen,  # a UDP port that answered the port scan stays open
                )
            if self._feed_closed:
                return
            self._ready_event.clear()
            await self._ready_event.wait()

    def _close_feed(self) -> None:
        self._feed_closed = True
        self._ready_event.set()

    async def _scan_all(self) -> None:
        self.scanner = PortScanner(self.config.portscan)
        engine: asyncio.Task[None] | None = None
        if self.service_scan is not None:
            engine = asyncio.create_task(self.service_scan(self._feed(), self._on_service))
        group = asyncio.Semaphore(max(1, self.config.hostgroup))
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        # a streamed input (servprobe.scan.inputs, `-iL -`) hands over what arrived so far,
        # possibly nothing yet ([]), so a pipe is scanned while it is still open
        chunks = getattr(self.targets, "chunks", None)
        source = chunks(256) if chunks is not None else None
        it = iter(self.targets) if source is None else iter(())

        def next_chunk() -> list[HostTarget] | None:
            if source is not None:
                return next(source, None)
            return list(itertools.islice(it, 256)) or None

        try:
            while True:
                # name resolution happens while iterating: keep it off the event loop
                chunk = await loop.run_in_executor(None, next_chunk)
                if chunk is None:
                    break
                for target in chunk:
                    await group.acquire()
                    task = asyncio.create_task(self._host_task(target, group))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    if engine is not None and engine.done():
                        engine.result()  # an engine failure ends the scan with its error
            if tasks:
                hosts_done = asyncio.gather(*tasks)
                # retrieved here if this coroutine is cancelled first (no "never retrieved")
                hosts_done.add_done_callback(lambda f: f.cancelled() or f.exception())
                if engine is not None:
                    # an engine that fails must end the scan, not leave hosts waiting for it
                    await asyncio.wait({hosts_done, engine}, return_when=asyncio.FIRST_COMPLETED)
                    if engine.done() and not hosts_done.done():
                        engine.result()
                        raise RuntimeError("the service scan ended before every host was done")
                await hosts_done
            if engine is not None:
                self._close_feed()
                # every host is reported by now; a service still running belongs to a host
                # that timed out, and its result would be dropped: do not wait long for it
                done, _ = await asyncio.wait({engine}, timeout=2.0)
                if done:
                    engine.result()
        finally:
            for t in tasks:
                t.cancel()
            if engine is not None and not engine.done():
                engine.cancel()
            pending = [*tasks, *([engine] if engine is not None else [])]
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _host_task(self, target: HostTarget, group: asyncio.Semaphore) -> None:
        try:
            # the same address twice in the target list (nmap scans it twice): one at a time,
            # since engine results are routed to hosts by address
            while (earlier := self._hosts.get(target.address)) is not None:
                await earlier.finished.wait()
                # its services still in the engine were aborted at its deadline: their results
                # come back at once; an engine that never answers must not block this mention
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await earlier.drained.wait()
                if self._hosts.get(target.address) is earlier:
                    del self._hosts[target.address]
            host = _Host(target)
            self._hosts[target.address] = host
            try:
                if self.config.host_timeout:
                    # the one host-timeout clock: the engine gets this deadline with each of
                    # the host's services and aborts them when it passes
                    host.deadline = asyncio.get_running_loop().time() + self.config.host_timeout
                    async with asyncio.timeout_at(host.deadline):
                        await self._scan_host(host)
                else:
                    await self._scan_host(host)
            except TimeoutError:
                host.result.timedout = True
            if not host.reported:
                self._finish_host(host)
        finally:
            group.release()

    async def _scan_host(self, host: _Host) -> None:
        assert self.scanner is not None
        address, family = host.target.address, host.target.family
        loop = asyncio.get_running_loop()
        if self.config.list_only:
            host.result.status, host.result.reason = "unknown", "user-set"
            self._finish_host(host)
            return
        listed = None if host.target.ports is None else dict(host.target.ports)
        if self.config.skip_discovery or listed is not None:
            # a per-port input already found these ports open: no discovery
            host.result.status, host.result.reason = "up", "user-set"
            self.stats.hosts_up += 1
        else:
            up, reason, latency = await self.scanner.discover(
                address, family, self.config.ports.get("tcp")
            )
            host.result.status = "up" if up else "down"
            host.result.reason = reason
            host.result.latency = latency
            if not up:
                self.stats.ports_done += self.config.ports.total()
                self._finish_host(host)
                return
            self.stats.hosts_up += 1
        rdns = (
            loop.run_in_executor(None, reverse_dns, address) if self.config.reverse_dns else None
        )

        def on_port(proto: str, port: int, state: str, reason: str) -> None:
            if host.reported:
                return  # a connect still in flight when the host timed out: not this scan's
            self.stats.ports_done += 1
            if self.on_discovered is not None and state == "open":
                self.on_discovered(address, proto, port, state)
            if self.service_scan is None or state not in ("open", "open|filtered"):
                return
            host.pending.add((proto, port))
            self.stats.services_total += 1
            if not host.todo:
                self._ready.append(host)
                self._ready_event.set()
            host.todo.append((proto, port, state if reason != "user-set" else None))

        if listed is not None and not self.config.verify_listed:
            # per-port input without -p: the listed ports are taken as open, no port scan
            for proto, plist in listed.items():
                for port in plist:
                    host.ports.record(proto, port, "open", "user-set")
                    on_port(proto, port, "open", "user-set")
        else:
            await self.scanner.scan_host(
                address,
                {p: list(v) for p, v in listed.items()} if listed is not None else self.config.ports.ports,
                family, on_port, result=host.ports,
            )
        host.portscan_done = True
        if rdns is not None:
            try:
                async with asyncio.timeout(3.0):
                    name = await rdns
            except (TimeoutError, OSError):
                name = None
            if name and name not in host.result.hostnames:
                host.result.hostnames.append(name)
                host.result.hostname_types.append("PTR")
        if host.pending:
            host.idle.clear()
            await host.idle.wait()

    def _on_service(self, result: ServiceResult) -> None:
        self.stats.services_done += 1
        host = self._hosts.get(result.address)
        if host is None:
            return
        host.in_engine -= 1
        if host.reported:
            self._maybe_drained(host)
            return
        key = (result.proto, result.port)
        host.pending.discard(key)
        if not result.reason:
            found = host.ports.notable.get(key)
            if found is not None:
                result.reason = found[1]
        if not result.hostnames:
            result.hostnames = list(host.result.hostnames)
        if result.finished is None:
            result.finished = time.time()
        host.services[key] = result
        self.outputs.port(result)
        if not host.pending and host.portscan_done:
            host.idle.set()

    # -- reporting ----------------------------------------------------------------------------

    def _table_result(self, host: _Host, proto: str, port: int, state: str, reason: str) -> ServiceResult:
        return ServiceResult(
            address=host.target.address,
            port=port,
            proto=proto,  # type: ignore[arg-type]
            state=state,  # type: ignore[arg-type]
            reason=reason,
            service=service_name(port, proto, keep_unknown=True),
            method="table",
            conf=3,
            hostnames=list(host.result.hostnames),
            finished=time.time(),
        )

    def _maybe_drained(self, host: _Host) -> None:
        if host.reported and host.in_engine <= 0 and not host.drained.is_set():
            host.drained.set()
            if self._hosts.get(host.target.address) is host:
                del self._hosts[host.target.address]

    def _finish_host(self, host: _Host) -> None:
        """Build the HostResult (nmap's folding of big non-open groups) and report it."""
        if host.reported:
            return
        host.reported = True
        host.finished.set()
        host.todo.clear()
        res = host.result
        res.endtime = time.time()
        self.stats.hosts_done += 1
        self._maybe_drained(host)
        results = list(host.services.values())
        results.extend(
            self._table_result(host, proto, port, state, reason)
            for (proto, port), (state, reason) in host.ports.notable.items()
            if (proto, port) not in host.services
        )
        bulk = [(proto, state, reason, ports) for (proto, state, reason), ports in host.ports.bulk.items()]
        listed, extra = collapse_ports(
            results,
            bulk,
            make=lambda proto, port, state, reason: self._table_result(host, proto, port, state, reason),
            threshold=self.config.collapse_threshold,
            open_only=self.config.open_only,
        )
        if self.service_scan is not None and (res.partial or res.timedout):
            for r in listed:
                if r.method == "table" and r.state in ("open", "open|filtered"):
                    r.unfinished = True  # cut short: the port-table name is only a guess
        res.ports = listed
        res.extra = extra
        res.extraports = {}
        for e in extra:
            res.extraports[e.state] = res.extraports.get(e.state, 0) + e.count
        if res.status == "up":
            self._hosts_up += 1
        streamed = {s.key for s in host.services.values()}
        for r in listed:
            if r.key not in streamed:
                self.outputs.port(r)
        if self.config.open_only and not any(r.state in ("open", "open|filtered") for r in listed):
            return
        self.outputs.host(res)


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
