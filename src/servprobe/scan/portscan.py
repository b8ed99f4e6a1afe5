"""Port scan without privileges: TCP connect scan, connected-socket UDP scan, host discovery.

TCP: a non-blocking connect() per port. Success → open (syn-ack); ECONNREFUSED → closed
(conn-refused); no answer within the timeout, after `retries` more tries → filtered
(no-response); ICMP errors → filtered (host-unreach, net-unreach, admin-prohibited).
A connect that lands on its own source port (possible when scanning the ephemeral range on
loopback: TCP simultaneous open) is not a service and counts as closed.

UDP: an empty datagram on a connected socket. The kernel turns an ICMP port-unreachable into
ECONNREFUSED on the socket → closed (port-unreach); a reply → open (udp-response); silence →
open|filtered (no-response). The service probes decide open|filtered ports later.

Host discovery (skipped with -Pn): like nmap without root, a TCP connect to 80 and 443 — and
to the scanned TCP ports when there are few of them — a host is up if any connect succeeds or
is refused.

Concurrency: one ConnectPool (an epoll set watched by the event loop) bounds TCP connects in
flight for the whole scan, across hosts, under the file-descriptor limit; EMFILE/ENOBUFS or a
lack of ephemeral ports make a probe wait and retry without counting a try. UDP sockets are
bounded by a semaphore of the same size.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from servprobe.resources import nofile_limit
from servprobe.timing import TIMINGS

# per timing template: (connect timeout s, retries, sockets in flight), from the timing table
TIMING = {t: (row.connect_timeout, row.retries, row.sockets) for t, row in TIMINGS.items()}

_ICMP_REASONS = {
    errno.EHOSTUNREACH: "host-unreach",
    errno.ENETUNREACH: "net-unreach",
    errno.EACCES: "admin-prohibited",
    errno.EPERM: "admin-prohibited",
}
_TRANSIENT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL, errno.EAGAIN}

# non-blocking from socket() on (Linux): one fcntl syscall less per port
_NONBLOCK_FLAG = getattr(socket, "SOCK_NONBLOCK", 0)
_STREAM_NONBLOCK = socket.SOCK_STREAM | _NONBLOCK_FLAG

PortCallback = Callable[[str, int, str, str], None]  # proto, port, state, reason


@dataclass
class PortScanConfig:
    timeout: float = 1.0
    retries: int = 1
    concurrency: int = 512
    discovery_ports: tuple[int, ...] = (80, 443)
    discovery_extra_max: int = 10  # scanned TCP ports also used for discovery, if this few


def config_for_timing(timing: int, max_parallelism: int | None = None) -> PortScanConfig:
    timeout, retries, conc = TIMING.get(timing, TIMING[3])
    if max_parallelism:
        conc = min(conc, max_parallelism) if timing < 3 else max(1, max_parallelism)
    return PortScanConfig(timeout=timeout, retries=retries, concurrency=fd_budget(conc))


def fd_budget(wanted: int) -> int:
    """Sockets in flight the descriptor limit allows (raised first); headroom for the engine."""
    soft, _ = nofile_limit()
    return max(1, min(wanted, (soft - 256) // 2))


class HostPorts:
    """What the port scan found on one host.

    Closed and filtered ports are the bulk of any scan (65,535 per host with -p-), so they
    are kept as 2-byte port numbers per (proto, state, reason) instead of dict entries: a
    hostgroup of hundreds of -p- hosts then costs megabytes, not gigabytes.
    """

    BULK_STATES = frozenset({"closed", "filtered"})

    def __init__(self, address: str) -> None:
        self.address = address
        self.up = True
        self.reason = ""
        self.latency: float | None = None
        self.notable: dict[tuple[str, int], tuple[str, str]] = {}
        self.bulk: dict[tuple[str, str, str], array[int]] = {}
        self._n = 0

    def record(self, proto: str, port: int, state: str, reason: str) -> None:
        self._n += 1
        if state in self.BULK_STATES:
            key = (proto, state, reason)
            ports = self.bulk.get(key)
            if ports is None:
                ports = self.bulk[key] = array("H")
            ports.append(port)
        else:
            self.notable[(proto, port)] = (state, reason)

    def __len__(self) -> int:
        return self._n

    def get(self, key: tuple[str, int]) -> tuple[str, str] | None:
        found = self.notable.get(key)
        if found is not None:
            return found
        proto, port = key
        for (pr, state, reason), ports in self.bulk.items():
            if pr == proto and port in ports:
                return (state, reason)
        return None

    def items(self) -> Iterator[tuple[tuple[str, int], tuple[str, str]]]:
        yield from self.notable.items()
        for (proto, state, reason), ports in self.bulk.items():
            for port in ports:
                yield (proto, port), (state, reason)

    @property
    def states(self) -> dict[tuple[str, int], tuple[str, str]]:
        """Every port as a dict (convenient for small scans and tests)."""
        return dict(self.items())

    def count(self, proto: str, state: str) -> int:
        n = sum(1 for (pr, _), (st, _) in self.notable.items() if pr == proto and st == state)
        return n + sum(len(p) for (pr, st, _), p in self.bulk.items() if pr == proto and st == state)


class ConnectPool:
    """Many non-blocking TCP connects watched by one epoll set (itself watched by asyncio).

    Why not a task per port: on loopback a scan is bound by per-port overhead, and a future,
    a task and a selector registration in asyncio per port cost more than the connect. Here
    a port costs socket(), connect(), one epoll registration and getsockopt(SO_ERROR).
    Timeouts: every connect has the same timeout, so a FIFO of deadlines is enough.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._ep = select.epoll()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ep.fileno(), self._drain)
        self._inflight: dict[int, tuple[socket.socket, Callable[[tuple[str, str] | None], None]]] = {}
        self._deadlines: deque[tuple[float, int, socket.socket]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self.limit = 1 << 30
        self.sent = 0

    def __len__(self) -> int:
        return len(self._inflight)

    def close(self) -> None:
        self._loop.remove_reader(self._ep.fileno())
        for sock, _ in self._inflight.values():
            sock.close()
        self._inflight.clear()
        self._ep.close()
        if self._timer:
            self._timer.cancel()

    def start(
        self,
        address: str,
        port: int,
        family: int,
        done: Callable[[tuple[str, str] | None], None],
    ) -> None:
        """Begin one connect; `done((state, reason))` later, or `done(None)` if it must be
        retried for lack of resources (EMFILE, no ephemeral port)."""
        try:
            sock = socket.socket(family, _STREAM_NONBLOCK)
        except OSError as exc:
            if exc.errno in _TRANSIENT:
                done(None)
                return
            raise
        if not _STREAM_NONBLOCK & _NONBLOCK_FLAG:
            sock.setblocking(False)
        self.sent += 1
        err = sock.connect_ex((address, port))
        if err == errno.EINPROGRESS:
            # a local refusal (loopback, own addresses) has usually arrived already: one
            # getsockopt saves the epoll round trip for most ports of a local scan
            early = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if early:
                err = early
        if err != errno.EINPROGRESS:
            result = _finish(sock, err)
            sock.close()
            done(result)
            return
        fd = sock.fileno()
        self._ep.register(fd, select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)
        self._inflight[fd] = (sock, done)
        self._deadlines.append((time.monotonic() + self.timeout, fd, sock))
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout, self._expire)

    def _complete(self, fd: int, result: tuple[str, str] | None) -> None:
        sock, done = self._inflight.pop(fd)
        sock.close()  # closing the only reference also drops it from the epoll set
        done(result)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def changed(self) -> None:
        """Return after the next connect completes (or fails)."""
        fut = self._loop.create_future()
        self._waiters.append(fut)
        await fut

    def _drain(self) -> None:
        for fd, _ in self._ep.poll(0, 4096):
            entry = self._inflight.get(fd)
            if entry is None:
                continue
            sock = entry[0]
            self._complete(fd, _finish(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, fd, sock = self._deadlines.popleft()
            entry = self._inflight.get(fd)
            if entry is not None and entry[0] is sock:
                self._complete(fd, ("filtered", "no-response"))
        if self._deadlines:
            delay = max(0.01, self._deadlines[0][0] - now)
            self._timer = self._loop.call_later(delay, self._expire)


def _finish(sock: socket.socket, err: int) -> tuple[str, str] | None:
    """(state, reason) from a connect's outcome; None for a transient local shortage."""
    if err == 0:
        try:
            if sock.getsockname()[:2] == sock.getpeername()[:2]:
                return ("closed", "self-connect")
        except OSError:
            return ("closed", "reset")
        return ("open", "syn-ack")
    if err == errno.ECONNREFUSED:
        return ("closed", "conn-refused")
    if err in _TRANSIENT:
        return None
    if err == errno.ECONNRESET:
        return ("closed", "reset")
    return ("filtered", _ICMP_REASONS.get(err, "unreach"))


class PortScanner:
    """Connect scans with one shared bound on sockets in flight (across hosts)."""

    def __init__(self, config: PortScanConfig | None = None) -> None:
        self.config = config or PortScanConfig()
        self._sem = asyncio.Semaphore(self.config.concurrency)  # UDP sockets
        self._pool: ConnectPool | None = None
        self.udp_sent = 0
        self._closed_sent = 0
        self.aborted = False  # set by abort(): stop launching at once (Ctrl-C)

    @property
    def probes_sent(self) -> int:
        return (self._pool.sent if self._pool is not None else 0) + self.udp_sent + self._closed_sent

    def pool(self) -> ConnectPool:
        if self._pool is None:
            self._pool = ConnectPool(self.config.timeout)
            self._pool.limit = self.config.concurrency
        return self._pool

    def abort(self) -> None:
        """Stop every scan loop at its next step (a cancelled scan of hundreds of hosts would
        otherwise take a full round of the event loop per host to notice)."""
        self.aborted = True

    def close(self) -> None:
        if self._pool is not None:
            self._closed_sent += self._pool.sent
            self._pool.close()
            self._pool = None

    # -- TCP ----------------------------------------------------------------------------------

    async def tcp_ports(
        self,
        address: str,
        ports: Iterable[int],
        family: int,
        record: Callable[[int, str, str], None],
    ) -> None:
        """Connect-scan `ports`, calling record(port, state, reason) as each is known."""
        pool = self.pool()
        queue = deque(ports)
        tries_left: dict[int, int] = {}
        retry: deque[int] = deque()
        outstanding = len(queue)
        short = False  # the kernel ran out of descriptors or ephemeral ports

        def make_done(port: int) -> Callable[[tuple[str, str] | None], None]:
            def done(result: tuple[str, str] | None) -> None:
                nonlocal outstanding, short
                if result is None:
                    short = True
                    retry.append(port)  # resource shortage: not a try
                elif result[1] == "no-response" and tries_left.setdefault(port, self.config.retries) > 0:
                    tries_left[port] -= 1
                    retry.append(port)
                else:
                    outstanding -= 1
                    record(port, *result)

            return done

        launched = 0
        while outstanding:
            if self.aborted:
                raise asyncio.CancelledError
            while (retry or queue) and len(pool) < pool.limit and not short and not self.aborted:
                port = retry.popleft() if retry else queue.popleft()
                pool.start(address, port, family, make_done(port))
                launched += 1
                if launched % 128 == 0:
                    # keep the loop responsive (signals, progress, other hosts); on loopback
                    # every connect answers at once, so nothing else would ever yield
                    await asyncio.sleep(0)
                    if self.aborted:
                        raise asyncio.CancelledError
            if not outstanding:
                break
            if short:
                short = False
                await asyncio.sleep(0.02)
            elif (retry or queue) and len(pool) < pool.limit:
                continue
            else:
                await pool.changed()

    async def tcp_port(self, address: str, port: int, family: int = socket.AF_INET) -> tuple[str, str]:
        """(state, reason) of one TCP port, with retries on silence."""
        out: list[tuple[str, str]] = []
        await self.tcp_ports(address, [port], family, lambda _p, st, rs: out.append((st, rs)))
        return out[0]

    # -- UDP ----------------------------------------------------------------------------------

    async def udp_port(self, address: str, port: int, family: int = socket.AF_INET) -> tuple[str, str]:
        """(state, reason) of one UDP port from an empty datagram."""
        loop = asyncio.get_running_loop()
        async with self._sem:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                try:
                    sock.connect((address, port))
                except OSError as exc:
                    return ("filtered", _ICMP_REASONS.get(exc.errno or 0, "unreach"))
                for _ in range(self.config.retries + 1):
                    try:
                        sock.send(b"")
                        self.udp_sent += 1
                        async with asyncio.timeout(self.config.timeout):
                            await loop.sock_recv(sock, 1)
                        return ("open", "udp-response")
                    except TimeoutError:
                        continue
                    except ConnectionRefusedError:
                        return ("closed", "port-unreach")
                    except OSError as exc:
                        return ("filtered", _ICMP_REASONS.get(exc.errno or 0, "unreach"))
                return ("open|filtered", "no-response")
            finally:
                sock.close()

    # -- hosts --------------------------------------------------------------------------------

    async def discover(
        self, address: str, family: int = socket.AF_INET, scanned_tcp: Iterable[int] = ()
    ) -> tuple[bool, str, float | None]:
        """(up, reason, latency): connect to 80/443 (and a few scanned ports) in parallel."""
        ports = list(self.config.discovery_ports)
        scanned = list(scanned_tcp)
        if len(scanned) <= self.config.discovery_extra_max:
            ports += [p for p in scanned if p not in ports]
        started = time.monotonic()
        pool = self.pool()
        wake = asyncio.Event()
        tries = dict.fromkeys(ports, self.config.retries)
        retry: list[int] = []
        found: list[tuple[bool, str, float | None]] = []
        remaining = len(ports)
        finished = False

        # callbacks on the shared pool, no task per probe: a /16 sweep is mostly this
        def make_done(port: int) -> Callable[[tuple[str, str] | None], None]:
            def done(result: tuple[str, str] | None) -> None:
                nonlocal remaining
                if finished:
                    return
                if result is None or (result[1] == "no-response" and tries[port] > 0):
                    if result is not None:
                        tries[port] -= 1
                    retry.append(port)
                elif result[0] in ("open", "closed") and result[1] != "self-connect":
                    found.append((True, result[1], time.monotonic() - started))
                else:
                    remaining -= 1
                wake.set()

            return done

        async def launch(todo: list[int]) -> None:
            for port in todo:
                while len(pool) >= pool.limit:
                    await pool.changed()
                if found or finished:
                    return
                pool.start(address, port, family, make_done(port))

        try:
            await launch(ports)
            while True:
                if found:
                    return found[0]
                if remaining <= 0:
                    return (False, "no-response", None)
                if retry:
                    todo, retry[:] = list(retry), []
                    await launch(todo)
                    continue
                wake.clear()
                await wake.wait()
        finally:
            finished = True  # answers still in flight are ignored

    async def scan_host(
        self,
        address: str,
        ports: dict[str, list[int]],
        family: int = socket.AF_INET,
        on_port: PortCallback | None = None,
        result: HostPorts | None = None,
    ) -> HostPorts:
        """Scan every port of one host; `on_port` hears each as soon as it is known.

        Pass `result` to keep partial findings if this coroutine is cancelled.
        """
        hp = result if result is not None else HostPorts(address)

        def record(proto: str, port: int, state: str, reason: str) -> None:
            hp.record(proto, port, state, reason)
            if on_port is not None:
                on_port(proto, port, state, reason)

        async def udp() -> None:
            async def one(port: int) -> None:
                record("udp", port, *await self.udp_port(address, port, family))

            # a bounded window of tasks: -sU -p- must not create 65,535 coroutines at once
            pending: set[asyncio.Task[None]] = set()
            try:
                for port in ports.get("udp", []):
                    if len(pending) >= self.config.concurrency:
                        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        for t in done:
                            t.result()
                    pending.add(asyncio.create_task(one(port)))
                if pending:
                    await asyncio.gather(*pending)
            finally:
                for t in pending:
                    t.cancel()

        jobs = []
        if ports.get("tcp"):
            jobs.append(
                self.tcp_ports(
                    address, ports["tcp"], family, lambda p, st, rs: record("tcp", p, st, rs)
                )
            )
        if ports.get("udp"):
            jobs.append(udp())
        if len(jobs) == 1:
            await jobs[0]  # no gather: a task per host less in a sweep
        else:
            await asyncio.gather(*jobs)
        return hp
