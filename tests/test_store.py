"""The SQLite scan store: round trips, crash durability (kill -9), resume state, errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from servprobe.result import RpcInfo, ServiceResult
from servprobe.store import Store, StoreError, default_store_path, result_from_json, result_to_json


def _full_result(port: int = 111) -> ServiceResult:
    return ServiceResult(
        address="127.0.0.1",
        port=port,
        proto="tcp",
        state="open",
        reason="syn-ack",
        service="rpcbind",
        product="rpcbind <&\"'>",
        version="2-4",
        extrainfo="RPC #100000 \x1b[31m",
        hostname="h\u00e9",
        ostype="Linux",
        devicetype="general purpose",
        cpes=["cpe:/a:x:y:1", "cpe:/o:linux:linux_kernel"],
        tunnel="ssl",
        method="probed",
        conf=10,
        soft=True,
        matched="nmap-service-probes:123",
        probe="RPCCheck",
        fingerprint="SF-Port111-TCP:V=7.93%I=7",
        rpc=RpcInfo(program=100000, name="rpcbind", lowver=2, highver=4, via="portmapper"),
        hostnames=["localhost"],
        finished=1700000000.5,
    )


def test_json_round_trip_keeps_every_field() -> None:
    r = _full_result()
    back = result_from_json(result_to_json(r))
    assert back == r
    assert isinstance(back.rpc, RpcInfo)


def test_json_ignores_unknown_fields_from_newer_versions() -> None:
    d = json.loads(result_to_json(_full_result()))
    d["future_field"] = 1
    d["rpc"]["future"] = 2
    back = result_from_json(json.dumps(d))
    assert back.rpc is not None and back.rpc.program == 100000


def test_store_round_trip_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        sid = store.begin_scan(["-sV", "127.0.0.1"], {"targets": ["127.0.0.1"], "ports": "1-100"})
        store.record(sid, _full_result(111))
        store.record(sid, ServiceResult("127.0.0.1", 53, "udp", state="open|filtered"))
        store.record(sid, ServiceResult("::1", 22, "tcp", service="ssh"))
        assert store.finished(sid) == {
            ("127.0.0.1", "tcp", 111), ("127.0.0.1", "udp", 53), ("::1", "tcp", 22)
        }
        # recording the same key again replaces (a resumed run may redo an in-flight port)
        store.record(sid, ServiceResult("::1", 22, "tcp", service="ssh", product="OpenSSH"))
        assert len(store.results(sid)) == 3
        store.end_scan(sid, "done")
        info = store.scan(sid)
        assert info.status == "done" and info.end is not None and info.spec["ports"] == "1-100"
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    with Store.open(path, create=False) as store:
        got = {r.key: r for r in store.results(sid)}
        assert got[("127.0.0.1", "tcp", 111)] == _full_result(111)
        assert got[("::1", "tcp", 22)].product == "OpenSSH"


def test_portscan_state_and_pending(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.sqlite") as store:
        sid = store.begin_scan(["x"], {})
        store.record_host(sid, "127.0.0.1", status="up", reason="localhost-response",
                          hostnames=["localhost"])
        store.record_portscan(sid, "127.0.0.1", "tcp", [(22, "open", "syn-ack"),
                                                        (80, "open", "syn-ack")],
                              {"closed": 998})
        store.record_portscan(sid, "127.0.0.1", "udp", [(53, "open|filtered", "no-response")],
                              {"closed": 999})
        store.record(sid, ServiceResult("127.0.0.1", 22, "tcp", service="ssh"))
        assert store.pending(sid) == [("127.0.0.1", "tcp", 80), ("127.0.0.1", "udp", 53)]
        ps = store.portscans(sid)["127.0.0.1"]
        assert ps.protos == {"tcp", "udp"}
        assert ps.extraports == {"tcp": {"closed": 998}, "udp": {"closed": 999}}
        assert ("tcp", 80, "open", "syn-ack") in ps.open_ports
        run = store.scan_run(sid)
        (host,) = run.hosts
        assert host.status == "up" and host.hostnames == ["localhost"]
        assert host.extraports == {"closed": 1997}
        assert [p.port for p in host.ports] == [22]


def test_resume_returns_args_and_finished(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with Store.open(path) as store:
        sid = store.begin_scan(["-p", "1-10", "127.0.0.1"], {"ports": "1-10"})
        for port in (1, 2, 3):
            store.record(sid, ServiceResult("127.0.0.1", port, "tcp"))
        # no end_scan: the process "died"
    store, state = Store.resume(path)
    with store:
        assert state.args == ["-p", "1-10", "127.0.0.1"]
        assert state.scan.status == "running"
        assert state.finished == {("127.0.0.1", "tcp", p) for p in (1, 2, 3)}
        store.mark_resumed(state.scan.id)
        assert store.scan(state.scan.id).resumed == 1


def test_resume_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such store"):
        Store.resume(tmp_path / "missing.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a servprobe store"):
        Store.resume(junk)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a servprobe store"):
        Store.resume(other)
    empty = tmp_path / "empty.sqlite"
    Store.open(empty).close()
    with pytest.raises(StoreError, match="no scan"):
        Store.resume(empty)


def test_default_path_is_unique_and_under_state_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SERVPROBE_STORE_DIR", str(tmp_path))
    p1 = default_store_path(now=1700000000)
    assert p1.parent == tmp_path and p1.name.startswith("scan-") and p1.suffix == ".sqlite"
    p1.touch()
    p2 = default_store_path(now=1700000000)
    assert p2 != p1 and p2.name.endswith("-2.sqlite")


_WRITER = textwrap.dedent(
    """
    import sys, time
    from servprobe.result import ServiceResult
    from servprobe.store import Store
    store = Store.open(sys.argv[1])
    sid = store.begin_scan(["writer"], {})
    print(sid, flush=True)
    port = 0
    while True:
        port += 1
        store.record(sid, ServiceResult("127.0.0.1", port % 65536, "tcp" if port < 65536 else "udp",
                                        service="x" * 50, finished=time.time()))
        print(port, flush=True)
    """
)


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Every record() that returned before SIGKILL is in the store afterwards."""
    path = tmp_path / "crash.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        sid = int(proc.stdout.readline())
        acked = 0
        deadline = time.monotonic() + 30
        while acked < 2000 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # lines already in the pipe were also acknowledged
        for line in proc.stdout.read().split():
            acked = int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert acked >= 2000
    store, state = Store.resume(path, sid)
    with store:
        assert len(state.finished) >= acked
        assert state.scan.status == "running"


def test_unwritable_store_warns_and_the_scan_still_completes(tmp_path: Path) -> None:
    """A default store that cannot be created must not cost the user the scan itself; an
    explicit --store that cannot be opened is a usage error before anything is scanned."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = tmp_path / "scan.xml"
    argv = [sys.executable, "-m", "servprobe", "--no-sV", "-Pn", "-n", "-p", "1", "127.0.0.1",
            "-oX", str(out), "--no-progress"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SERVPROBE_STORE_DIR": str(blocker / "scans")})
    assert proc.returncode == 0, proc.stderr
    assert "results will not be stored" in proc.stderr and "Traceback" not in proc.stderr
    assert "</nmaprun>" in out.read_text()
    out.unlink()
    proc = subprocess.run([*argv, "--store", str(blocker / "scan.sqlite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"--store: {blocker / 'scan.sqlite'}: cannot open store" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()  # stopped before the scan
