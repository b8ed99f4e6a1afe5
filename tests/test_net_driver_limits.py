"""The service driver's limits over real loopback sockets: the host timeout covers RPC
grinding, and a finished host's record does not outlive it (issue 11, bugs 5 and 7)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpcservers import RpcTestServer
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import run_service_scan, scan_services
from servprobe.result import ServiceResult

NMAP_DB = "/usr/share/nmap/nmap-service-probes"


@pytest.fixture(scope="module")
def db():
    import servprobe

    return servprobe.load_db(NMAP_DB)


class AnswersOnce(RpcTestServer):
    """A portmapper that answers the version probe, then goes silent: grinding it drags on
    (retransmits) until the grinder gives up, seconds later."""

    def answer(self, msg: bytes) -> bytes | None:
        if self.calls >= 1:
            self.calls += 1
            return None
        return super().answer(msg)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_rpc_grinding_stops_at_the_host_timeout(db, proto: str) -> None:
    # bug 7 (issue 11): grinding ran after the service's runner was cancelled, so outside the
    # host timeout: ~3.5 s (TCP) / ~4.5 s (UDP) with a 1 s host timeout before the fix
    with AnswersOnce({100000: (2, 4)}, proto=proto) as srv:
        t = time.monotonic()
        (r,) = scan_services(db, [ServiceTarget("127.0.0.1", srv.port, proto)],  # type: ignore[arg-type]
                             EngineOptions(rpc_portmapper=False, host_timeout=1.0))
        elapsed = time.monotonic() - t
        assert srv.calls > 1  # the grinder did start
    assert elapsed < 1.8, elapsed
    assert r.service == "rpcbind" and r.rpc is None  # the version scan's answer is kept


def test_a_repeated_host_gets_a_fresh_timeout(db) -> None:
    # bug 5 (issue 11): the driver's per-host record was never pruned, so a host scanned again
    # later (a duplicated target) inherited the first scan's expired deadline and every one of
    # its services was aborted at once. Before the fix the second result was "host timeout".
    with RpcTestServer({100000: (2, 4)}, proto="udp") as srv:
        target = ServiceTarget("127.0.0.1", srv.port, "udp")
        results: list[ServiceResult] = []
        first_done = asyncio.Event()

        async def targets() -> AsyncIterator[ServiceTarget]:
            yield target
            await first_done.wait()
            await asyncio.sleep(0.6)  # past the first scan's deadline
            yield target

        def on_result(r: ServiceResult) -> None:
            results.append(r)
            first_done.set()

        async def go() -> None:
            await run_service_scan(db, targets(), EngineOptions(rpc_portmapper=False, host_timeout=0.5), on_result)

        asyncio.run(go())
    assert [(r.service, r.version) for r in results] == [("rpcbind", "2-4"), ("rpcbind", "2-4")]


# is_linear() judges this shape safe ("linear": anchored, ≤ 2**18 paths), and the matcher
# used to run such lines with no time limit; on 4,000 word bytes it backtracks for ~3 ms
SLOW_LINE = rb"^\w{0,500}\w{0,500}[^\w]"
SLOW_DB = b"Probe TCP NULL q||\ntotalwaitms 1000\nmatch slow m|" + SLOW_LINE + b"|\n"


def _slow_db():
    from servprobe.probes.parser import parse_bytes

    db, errors = parse_bytes(SLOW_DB, "slow-probes")
    assert not [e for e in errors if not e.is_warning], errors
    return db


def test_every_line_runs_under_the_regex_timeout() -> None:
    # bug 10 (issue 11): lines judged "linear" ran without the per-call timeout
    db = _slow_db()
    assert db.match("NULL", b"a" * 4000, "tcp", timeout=1e-5) is None
    assert db.matcher.timeouts == 1  # before the fix: 0 (searched to the end)


def test_engine_options_regex_timeout_reaches_the_matcher() -> None:
    # bug 10 (issue 11): EngineOptions.regex_timeout was read by nothing
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.sendall(b"a" * 4000)
        conns.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    db = _slow_db()
    try:
        (r,) = scan_services(db, [ServiceTarget("127.0.0.1", srv.getsockname()[1], "tcp")],
                             EngineOptions(regex_timeout=1e-5, sequential=True))
    finally:
        srv.close()
        thread.join()
        for c in conns:
            c.close()
    assert db.matcher.timeouts >= 1
    assert r.service is None or r.method != "probed" or r.service != "slow"


def test_a_slow_match_does_not_stall_the_event_loop() -> None:
    # bug 10 (issue 11): regex matching ran on the event-loop thread, so one hostile response
    # stalled every connection (and every latency the speculation rules read) for up to the
    # regex timeout. This line backtracks exponentially on 40 "a"s and a "b": each search
    # runs its full 0.5 s. Before the fix the loop's heartbeat stopped for ≥ 0.5 s.
    import socket
    import threading

    from servprobe.probes.parser import parse_bytes

    db, errors = parse_bytes(b"Probe TCP NULL q||\ntotalwaitms 2000\nmatch slow m%^(a|aa)+$%\n", "slow-probes")
    assert not [e for e in errors if not e.is_warning], errors
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.05)
    conns: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            conn.sendall(b"a" * 40 + b"b")
            conns.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    gaps: list[float] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def heartbeat() -> None:
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        target = ServiceTarget("127.0.0.1", srv.getsockname()[1], "tcp")
        await run_service_scan(db, [target], EngineOptions(regex_timeout=0.5, sequential=True), lambda r: None)
        stop.set()
        await beat

    try:
        t = time.monotonic()
        asyncio.run(go())
        elapsed = time.monotonic() - t
    finally:
        done.set()
        thread.join()
        srv.close()
        for c in conns:
            c.close()
    assert db.matcher.timeouts >= 1 and elapsed >= 0.5  # the slow search did run
    assert max(gaps) < 0.15, max(gaps)  # before the fix: the whole search (0.25-0.5 s)
