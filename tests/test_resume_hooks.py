"""Store hooks wired into the real scan pipeline (servprobe.scan.runner) on loopback:
results stored as they arrive, an interrupted run resumed without redoing or losing work."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

# a plain import: a broken runner module must fail these tests, not skip them
import servprobe.scan.runner as runner_mod
from servprobe.report.base import Outputs
from servprobe.result import ScanRun, ServiceResult
from servprobe.scan.ports import PortSelection
from servprobe.scan.targets import build_target_list
from servprobe.store import Store, cli_hooks


class Recorder:
    """A reporter that remembers every event."""

    def __init__(self) -> None:
        self.ports: list[ServiceResult] = []
        self.hosts: list[str] = []
        self.finished = False

    def start(self, run: ScanRun) -> None:
        pass

    def port(self, result: ServiceResult) -> None:
        self.ports.append(result)

    def host(self, host) -> None:
        self.hosts.append(host.address)

    def finish(self, run: ScanRun) -> None:
        self.finished = True


@pytest.fixture
def listeners():
    socks = []
    for _ in range(8):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        socks.append(s)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        yield sorted(s.getsockname()[1] for s in socks), closed_port
    finally:
        for s in socks:
            s.close()


def _fake_service_scan(probed: list[tuple[str, str, int]], delay: float):
    async def scan(targets, on_result) -> None:
        async def one(t) -> None:
            await asyncio.sleep(delay)
            probed.append((t.address, t.proto, t.port))
            on_result(ServiceResult(t.address, t.port, t.proto, state="open", reason="syn-ack",
                                    service="fake", product=f"P{t.port}", method="probed",
                                    conf=10, cpes=[f"cpe:/a:x:{t.port}"]))

        tasks = set()
        sem = asyncio.Semaphore(2)
        async for t in targets:
            await sem.acquire()
            task = asyncio.create_task(one(t))
            task.add_done_callback(lambda _t: sem.release())
            tasks.add(task)
        await asyncio.gather(*tasks)

    return scan


async def _run(argv: list[str], session, probed, stop_after: int | None = None) -> Recorder:
    ports_arg = argv[argv.index("-p") + 1]
    targets = build_target_list([a for a in argv if a.startswith("127.")])
    rec = Recorder()
    outputs = Outputs([rec])
    service_scan = _fake_service_scan(probed, 0.05)
    outputs, service_scan = session.attach(outputs, targets, service_scan)
    run = ScanRun(args=argv, start=0.0, ports_spec={"tcp": ports_arg}, scan_types=["connect"])
    config = runner_mod.RunConfig(
        ports=PortSelection({"tcp": sorted(int(p) for p in ports_arg.split(","))}),
        skip_discovery=True, reverse_dns=False,
    )
    runner = runner_mod.ScanRunner(targets, config, outputs, run, service_scan)
    if stop_after is not None:
        async def stopper() -> None:
            while len(probed) < stop_after:
                await asyncio.sleep(0.01)
            runner.stop()

        stop_task = asyncio.create_task(stopper())
    await runner.execute()
    if stop_after is not None:
        stop_task.cancel()
    return rec


def test_interrupt_then_resume_loses_and_redoes_nothing(tmp_path: Path, listeners) -> None:
    open_ports, closed_port = listeners
    path = tmp_path / "scan.sqlite"
    ports_arg = ",".join(map(str, [*open_ports, closed_port]))
    argv = ["-sV", "-p", ports_arg, "127.0.0.1", "127.0.0.2", "--store", str(path)]

    got = cli_hooks.prepare(argv)
    assert not isinstance(got, int)
    scan_argv, session = got
    assert "--store" not in scan_argv
    first: list[tuple[str, str, int]] = []
    rec1 = asyncio.run(_run(scan_argv, session, first, stop_after=3))
    assert rec1.finished
    with Store.open(path, create=False) as store:
        info = store.scan()
        assert info.status == "interrupted" and info.args == scan_argv
        stored = store.finished(info.id)
    assert set(first) <= stored | set(first)  # everything reported final is stored
    assert {k for k in stored if k[0] == "127.0.0.1"} == set(first)
    assert 3 <= len(first) < len(open_ports)

    got = cli_hooks.prepare(["--resume", str(path)])
    assert not isinstance(got, int)
    argv2, session2 = got
    assert argv2 == scan_argv
    second: list[tuple[str, str, int]] = []
    rec2 = asyncio.run(_run(argv2, session2, second))
    assert not set(first) & set(second), "finished services were probed again"
    want = {("127.0.0.1", "tcp", p) for p in open_ports}
    assert set(first) | set(second) == want
    # every output got the whole scan, earlier results included
    assert {r.key for r in rec2.ports if r.state == "open"} == want
    assert sorted(set(rec2.hosts)) == ["127.0.0.1", "127.0.0.2"]
    with Store.open(path, create=False) as store:
        info = store.scan()
        assert info.status == "done" and info.resumed == 1
        results = [r for r in store.results(info.id) if r.state == "open"]
        assert {r.key for r in results} == want
        assert all(r.service == "fake" and r.cpes for r in results)
        # the listed closed ports of complete hosts are kept too (to replay the host whole)
        closed = {r.key for r in store.results(info.id) if r.state == "closed"}
        assert ("127.0.0.1", "tcp", closed_port) in closed


def test_resume_of_complete_host_replays_it_without_scanning(tmp_path: Path, listeners) -> None:
    open_ports, _ = listeners
    path = tmp_path / "scan.sqlite"
    argv = ["-p", ",".join(map(str, open_ports[:2])), "127.0.0.1", "--store", str(path)]
    scan_argv, session = cli_hooks.prepare(argv)  # type: ignore[misc]
    first: list[tuple[str, str, int]] = []
    asyncio.run(_run(scan_argv, session, first))
    assert len(first) == 2
    argv2, session2 = cli_hooks.prepare(["--resume", str(path)])  # type: ignore[misc]
    second: list[tuple[str, str, int]] = []
    rec = asyncio.run(_run(argv2, session2, second))
    assert second == []
    assert {r.port for r in rec.ports} == set(open_ports[:2]) and rec.hosts == ["127.0.0.1"]


def test_prepare_usage_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SERVPROBE_STORE_DIR", str(tmp_path))
    assert cli_hooks.prepare(["--resume"]) == 2
    assert cli_hooks.prepare(["--resume", str(tmp_path / "none.sqlite")]) == 2
    assert "no such store" in capsys.readouterr().err
    assert cli_hooks.prepare(["--resume", "x", "-p", "80"]) == 2
    assert cli_hooks.prepare(["--store"]) == 2
    argv, session = cli_hooks.prepare(["--no-store", "-p", "80", "127.0.0.1"])  # type: ignore[misc]
    assert argv == ["-p", "80", "127.0.0.1"] and not session.enabled
    argv, session = cli_hooks.prepare(["-p", "80", "127.0.0.1"])  # type: ignore[misc]
    assert session.path is not None and session.path.parent == tmp_path
    argv, session = cli_hooks.prepare(["--store=a.sqlite", "127.0.0.1"])  # type: ignore[misc]
    assert argv == ["127.0.0.1"] and str(session.path) == "a.sqlite"


def test_resume_runs_in_the_original_directory(tmp_path: Path, monkeypatch) -> None:
    """Relative output paths of the stored argv refer to the original run's files."""
    import os

    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(first)
    store = Store.open(first / "s.sqlite")
    sid = store.begin_scan(["-oX", "out.xml", "127.0.0.1"], {"cwd": str(first)})
    store.close()
    monkeypatch.chdir(elsewhere)
    got = cli_hooks.prepare(["--resume", str(first / "s.sqlite")])
    assert not isinstance(got, int)
    argv, session = got
    assert argv == ["-oX", "out.xml", "127.0.0.1"] and sid == session.resume.scan.id
    assert Path(os.getcwd()) == first
    session.close()
