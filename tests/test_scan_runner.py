"""The scan pipeline with a stand-in service engine: streaming order, nmap's collapsing of
closed ports, several hosts, stop() mid-scan, host timeout."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable

from servprobe.engine.options import ServiceTarget
from servprobe.report.base import Outputs
from servprobe.result import HostResult, ScanRun, ServiceResult
from servprobe.scan.ports import PortSelection
from servprobe.scan.portscan import PortScanConfig
from servprobe.scan.runner import RunConfig, ScanRunner
from servprobe.scan.targets import build_target_list


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def start(self, run: ScanRun) -> None:
        self.events.append(("start", run))

    def port(self, r: ServiceResult) -> None:
        self.events.append(("port", r))

    def host(self, h: HostResult) -> None:
        self.events.append(("host", h))

    def finish(self, run: ScanRun) -> None:
        self.events.append(("finish", run))


def fake_engine(delay: float = 0.0, hang_ports: frozenset[int] = frozenset()):
    seen: list[ServiceTarget] = []

    async def scan(targets: AsyncIterator[ServiceTarget], on_result: Callable[[ServiceResult], None]) -> None:
        tasks = []

        async def one(t: ServiceTarget) -> None:
            if t.port in hang_ports:
                await asyncio.sleep(3600)
            await asyncio.sleep(delay)
            on_result(ServiceResult(t.address, t.port, t.proto, "open", "", "fake", "FakeD", "1.0", method="probed", conf=10))

        async for t in targets:
            seen.append(t)
            tasks.append(asyncio.create_task(one(t)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    return scan, seen


def listener() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def make(targets: list[str], ports: list[int], engine, **cfg) -> tuple[ScanRunner, Recorder]:
    rec = Recorder()
    run = ScanRun(args=[], start=time.time())
    config = RunConfig(
        ports=PortSelection({"tcp": ports}),
        portscan=PortScanConfig(timeout=0.5, retries=0, concurrency=64),
        reverse_dns=False,
        **cfg,
    )
    return ScanRunner(build_target_list(targets), config, Outputs([rec]), run, engine), rec


def test_pipeline_streams_services_then_reports_hosts() -> None:
    srv = listener()
    srv2 = socket.socket()
    try:
        port = srv.getsockname()[1]
        srv2.bind(("127.0.0.2", port))
        srv2.listen(16)
        closed = _closed_tcp_ports(40)  # 40 closed: collapsed
        engine, seen = fake_engine(0.05)
        runner, rec = make(["127.0.0.1", "127.0.0.2"], [port, *closed], engine)
        run = asyncio.run(runner.execute())
    finally:
        srv.close()
        srv2.close()
    kinds = [k for k, _ in rec.events]
    assert kinds[0] == "start" and kinds[-1] == "finish"
    hosts = [h for k, h in rec.events if k == "host"]
    assert sorted(h.address for h in hosts) == ["127.0.0.1", "127.0.0.2"]
    for h in hosts:
        assert h.status == "up"
        assert [(p.port, p.product) for p in h.ports] == [(port, "FakeD")]
        assert h.ports[0].reason == "syn-ack"  # filled from the port scan
        assert [(e.state, e.count, e.reasons) for e in h.extra] == [("closed", 40, {"conn-refused": 40})]
        assert h.extraports == {"closed": 40}
        # the service was streamed before its host was reported
        i_port = next(i for i, (k, r) in enumerate(rec.events) if k == "port" and r.address == h.address)
        i_host = next(i for i, (k, r) in enumerate(rec.events) if k == "host" and r.address == h.address)
        assert i_port < i_host
    assert len(seen) == 2 and run.hosts_total == 2 and run.hosts_up == 2 and not run.interrupted


def test_few_closed_ports_are_listed_with_table_names() -> None:
    runner, rec = make(["127.0.0.1"], [1, 2, 3], None)
    asyncio.run(runner.execute())
    (host,) = [h for k, h in rec.events if k == "host"]
    assert [(p.port, p.state, p.reason, p.method) for p in host.ports] == [
        (1, "closed", "conn-refused", "table"), (2, "closed", "conn-refused", "table"), (3, "closed", "conn-refused", "table")]
    assert host.extra == []


def test_stop_mid_scan_reports_partial_hosts() -> None:
    a, b = listener(), listener()
    try:
        pa, pb = a.getsockname()[1], b.getsockname()[1]
        engine, _ = fake_engine(0.0, hang_ports=frozenset({pb}))
        runner, rec = make(["127.0.0.1"], [pa, pb], engine)

        async def go() -> ScanRun:
            task = asyncio.create_task(runner.execute())
            for _ in range(200):
                await asyncio.sleep(0.02)
                if any(k == "port" for k, _ in rec.events):
                    break
            runner.stop("SIGINT")
            return await task

        run = asyncio.run(go())
    finally:
        a.close()
        b.close()
    assert run.interrupted and rec.events[-1][0] == "finish"
    (host,) = [h for k, h in rec.events if k == "host"]
    by_port = {p.port: p for p in host.ports}
    assert by_port[pa].product == "FakeD"
    assert by_port[pb].state == "open" and by_port[pb].method == "table"  # found, not identified


def test_host_timeout_cuts_the_service_phase() -> None:
    a = listener()
    try:
        pa = a.getsockname()[1]
        engine, _ = fake_engine(0.0, hang_ports=frozenset({pa}))
        runner, rec = make(["127.0.0.1"], [pa], engine, host_timeout=0.5)
        t = time.monotonic()
        asyncio.run(runner.execute())
        elapsed = time.monotonic() - t
    finally:
        a.close()
    (host,) = [h for k, h in rec.events if k == "host"]
    assert host.timedout and [p.port for p in host.ports] == [pa]
    assert elapsed < 20


def test_a_repeated_address_is_scanned_once_per_mention() -> None:
    srv = listener()
    try:
        port = srv.getsockname()[1]
        engine, seen = fake_engine(0.05)
        runner, rec = make(["127.0.0.1", "127.0.0.1"], [port], engine)
        run = asyncio.run(runner.execute())
    finally:
        srv.close()
    hosts = [h for k, h in rec.events if k == "host"]
    assert len(hosts) == 2 and len(seen) == 2
    assert all([(p.port, p.product) for p in h.ports] == [(port, "FakeD")] for h in hosts)
    assert run.hosts_total == 2


def test_stop_halts_a_big_port_scan_at_once() -> None:
    # 64 hosts x 65535 ports on loopback: every connect answers at once, so only the scanner's
    # abort flag keeps the scan from running on for a full event-loop round per host
    runner, rec = make(["127.0.0.0/26"], list(range(1, 65536)), None)

    async def go() -> tuple[int, int, ScanRun]:
        task = asyncio.create_task(runner.execute())
        await asyncio.sleep(1.0)
        assert runner.scanner is not None
        before = runner.scanner.probes_sent
        runner.stop("SIGINT")
        run = await task
        return before, runner.scanner.probes_sent, run

    before, after, run = asyncio.run(go())
    assert run.interrupted
    assert after - before <= 64 * 128  # at most one step per host, not thousands of ports each
    hosts = [h for k, h in rec.events if k == "host"]
    assert hosts and all(h.partial for h in hosts)
    assert rec.events[-1][0] == "finish"


def _free_udp_ports(n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    return socks


def _closed_tcp_ports(n: int) -> list[int]:
    """n TCP ports nobody listens on, on any address (bound to 0.0.0.0, then released)."""
    out: list[int] = []
    while len(out) < n:
        s = socket.socket()
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in out:
            out.append(port)
    return sorted(out)


def _nmap_layout(tcp: list[int], udp: list[int]) -> tuple[dict[str, str], list[tuple[int, str, str, str]]]:
    """nmap 7.93's own folding of the same ports: ({proto/state: count}, listed ports)."""
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    nmap = shutil.which("nmap")
    assert nmap, "nmap is installed by make test (APT_PACKAGES)"
    spec = f"T:{','.join(map(str, tcp))}" + (f",U:{','.join(map(str, udp))}" if udp else "")
    scans = ["-sT"] + (["-sU"] if udp else [])
    out = subprocess.run([nmap, *scans, "-n", "-Pn", "--max-retries", "1", "-p", spec, "-oX", "-", "127.0.0.1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    host = ET.fromstring(out).find("host")
    assert host is not None
    ports_el = host.find("ports")
    assert ports_el is not None
    shown = {}
    for e in ports_el.findall("extraports"):
        for r in e.findall("extrareasons"):
            shown[f"{r.get('proto')}/{e.get('state')}"] = r.get("count")
    listed = sorted((int(p.get("portid")), p.get("protocol"), p.find("state").get("state"), "")  # type: ignore[union-attr]
                    for p in ports_el.findall("port"))
    return shown, listed  # type: ignore[return-value]


def _ours(tcp: list[int], udp: list[int]) -> tuple[dict[str, str], list[tuple[int, str, str, str]]]:
    rec = Recorder()
    config = RunConfig(
        ports=PortSelection({"tcp": tcp, "udp": udp}),
        portscan=PortScanConfig(timeout=0.5, retries=0, concurrency=64),
        reverse_dns=False,
        skip_discovery=True,
    )
    runner = ScanRunner(build_target_list(["127.0.0.1"]), config, Outputs([rec]), ScanRun(args=[], start=time.time()), None)
    asyncio.run(runner.execute())
    (host,) = [h for k, h in rec.events if k == "host"]
    shown = {f"{e.proto}/{e.state}": str(e.count) for e in host.extra}
    listed = sorted((p.port, p.proto, p.state, "") for p in host.ports)
    return shown, listed


def test_folding_matches_nmap_per_state_across_protocols() -> None:
    # bug 3 (issue 11): open|filtered UDP ports were listed or folded depending on whether
    # an unrelated TCP group was folded (the runner never folded open|filtered, reporters
    # re-folded only when nothing else was); and nmap counts a state over every protocol.
    # Before the fix both layouts below differed from nmap.
    silent = _free_udp_ports(26)  # silent UDP sockets: open|filtered
    try:
        udp = sorted(s.getsockname()[1] for s in silent)
        tcp = _closed_tcp_ports(30)  # 30 closed TCP ports: folded in any case
        assert _ours(tcp, udp) == _nmap_layout(tcp, udp)
    finally:
        for s in silent:
            s.close()
    # 10 closed TCP + 20 closed UDP: 30 closed ports in all, so nmap folds both groups
    tcp = _closed_tcp_ports(10)
    udp = _closed_tcp_ports(20)  # free TCP ports are very likely free UDP ports too: closed
    ours, theirs = _ours(tcp, udp), _nmap_layout(tcp, udp)
    assert ours == theirs and ours[1] == []


def test_host_timeout_is_one_clock_and_a_repeated_address_starts_afresh() -> None:
    # bug 5 (issue 11): the engine kept its own host-timeout clock and per-host record, so the
    # second mention of an address inherited the first one's expired deadline (its service was
    # aborted at once), and the first mention's late results could be credited to it. Fails
    # before the fix: the second mention's service was never identified.
    import threading

    from servprobe.engine.options import EngineOptions
    from servprobe.net.driver import run_service_scan
    from servprobe.probes.loader import load_db

    released = threading.Event()  # set when the first mention has been reported
    srv = listener()
    port = srv.getsockname()[1]
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        srv.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, OSError):
                continue
            if released.is_set():
                conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
            held.append(conn)  # before the release: silent until the end

    class Releasing(Recorder):
        def host(self, h: HostResult) -> None:
            super().host(h)
            released.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    db = load_db()
    options = EngineOptions(host_timeout=0.6)

    async def engine(targets: AsyncIterator[ServiceTarget], on_result: Callable[[ServiceResult], None]) -> None:
        await run_service_scan(db, targets, options, on_result)

    rec = Releasing()
    config = RunConfig(
        ports=PortSelection({"tcp": [port]}),
        portscan=PortScanConfig(timeout=0.5, retries=0, concurrency=64),
        reverse_dns=False, skip_discovery=True, host_timeout=0.6,
    )
    runner = ScanRunner(build_target_list(["127.0.0.1", "127.0.0.1"]), config, Outputs([rec]),
                        ScanRun(args=[], start=time.time()), engine)
    try:
        asyncio.run(runner.execute())
    finally:
        stop.set()
        thread.join()
        for c in held:
            c.close()
        srv.close()
    first, second = [h for k, h in rec.events if k == "host"]
    assert first.timedout and [(p.port, p.method) for p in first.ports] == [(port, "table")]
    assert not second.timedout
    assert [(p.port, p.service, p.product) for p in second.ports] == [(port, "ssh", "OpenSSH")]


def test_nothing_is_kept_per_finished_host() -> None:
    # bug 9 (issue 11): memory grew with the number of hosts scanned: run.hosts kept every up
    # host only to be counted, and the JSON Lines reporter a key per port ever written.
    # Before the fix 64 hosts left 64 HostResults and 64 keys behind.
    import io

    from servprobe.report.jsonl import JsonLinesReporter

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))  # one open port on every 127.x address
    srv.listen(256)
    port = srv.getsockname()[1]
    try:
        engine, seen = fake_engine(0.0)
        out = io.StringIO()
        jsonl = JsonLinesReporter(out)
        run = ScanRun(args=[], start=time.time())
        config = RunConfig(ports=PortSelection({"tcp": [port]}), reverse_dns=False, skip_discovery=True,
                           portscan=PortScanConfig(timeout=0.5, retries=0, concurrency=64))
        runner = ScanRunner(build_target_list(["127.1.0.0/26"]), config, Outputs([jsonl]), run, engine)
        asyncio.run(runner.execute())
    finally:
        srv.close()
    assert len(seen) == 64 and run.hosts_total == 64 and run.hosts_up == 64
    assert out.getvalue().count('"type":"port"') == 64
    assert run.hosts == [] and jsonl.seen == {} and runner._hosts == {}
