"""--cluster with a real Dask scheduler and real worker processes on 127.0.0.1.

The real-daemon set (tests/daemons.py) plus a few silent listeners (they keep shards busy
for seconds, so there is a "mid-scan" to kill in), on 127.0.0.1, with 127.0.0.2-3 as hosts
whose ports are all closed; `--shard-size 3` cuts each host's ports over several shards.
  - through `dask scheduler` + two `dask worker` processes: the same results as a local scan,
    each port once in JSON Lines, one <host> per host in XML;
  - one worker (a process this test started) SIGKILLed mid-scan: same results, each port
    exactly once;
  - Ctrl-C (SIGINT) mid-scan: exit 130, every output closed and well-formed, the store
    interrupted with only right results;
  - the scheduler SIGKILLed mid-scan: exit 1 with a clear message, the store keeps what was
    found (status interrupted), `--resume STORE --cluster none` finishes it locally, same
    results.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons import Daemon, _wait_tcp, endpoints, free_port
from hostile import HostileServers, run_bounded
from servprobe.store import Store, StoreError

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

HOSTS = "127.0.0.1-3"
SHARD = "3"
# what must agree between two scans (fingerprints carry a timestamp, so they differ)
COMPARED = ("state", "service", "product", "version", "extrainfo", "hostname", "ostype",
            "devicetype", "cpes", "tunnel", "method", "conf", "soft")


def _argv(ports: list[int], store: Path, out: Path, *extra: str, hosts: str = HOSTS) -> list[str]:
    return [sys.executable, "-m", "servprobe", "-sV", "-Pn", "-n",
            "-p", ",".join(map(str, sorted(ports))), hosts,
            "-oX", str(out.with_suffix(".xml")), "-oJ", str(out.with_suffix(".jsonl")),
            "--store", str(store), "--no-progress", *extra]


def _final(store: Path) -> dict[tuple[str, str, int], tuple]:
    with Store.open(store, create=False) as s:
        info = s.scan()
        assert info.status == "done", info.status
        return {r.key: tuple(getattr(r, f) for f in COMPARED) for r in s.results(info.id)}


def _stored_count(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with Store.open(store, create=False) as s:
            return len(s.finished(s.scan().id))
    except (StoreError, sqlite3.Error):
        return 0


def _assert_each_port_once(out: Path, ports: list[int]) -> None:
    """JSON Lines: every (host, port) once; XML: one <host> per address, each port once."""
    keys = Counter()
    for line in out.with_suffix(".jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "port" in rec and "address" in rec:
            keys[(rec["address"], rec.get("proto", "tcp"), rec["port"])] += 1
    assert keys and max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    root = ET.parse(out.with_suffix(".xml")).getroot()
    addrs = [h.find("address").get("addr") for h in root.iter("host")]  # type: ignore[union-attr]
    assert sorted(addrs) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"], addrs
    for host in root.iter("host"):
        listed = [int(p.get("portid")) for p in host.iter("port")]  # type: ignore[arg-type]
        assert len(listed) == len(set(listed))
        extra = sum(int(e.get("count")) for e in host.iter("extraports"))  # type: ignore[arg-type]
        assert len(listed) + extra == len(ports)  # every port of the host, once


# -------------------------------------------------------------- dask processes we start


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)  # a worker still running a shard: no need to wait for it
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _scheduler(tmp: Path, port: int, stack: contextlib.ExitStack, *tls: str) -> subprocess.Popen[bytes]:
    log = tmp / f"scheduler-{port}.log"
    proc = stack.enter_context(_process(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard", *tls], log))
    _wait_tcp(port, proc, "dask scheduler", log)  # type: ignore[arg-type]
    return proc


def _worker(tmp: Path, address: str, name: str, stack: contextlib.ExitStack,
            *tls: str) -> subprocess.Popen[bytes]:
    (tmp / name).mkdir(exist_ok=True)
    # --no-nanny: the PID we start is the worker itself (the one the kill test kills)
    return stack.enter_context(_process(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--no-nanny",
         "--nthreads", "4", "--no-dashboard", "--host", "127.0.0.1", "--name", name,
         "--local-directory", str(tmp / name), *tls], tmp / f"{name}.log"))


def _wait_workers(address: str, n: int, security: object = None) -> None:
    from distributed import Client

    with Client(address, timeout=30, security=security) as client:
        client.wait_for_workers(n, timeout=60)


@pytest.fixture(scope="module")
def scan_ports(all_daemons: dict[str, Daemon]) -> Iterator[list[int]]:
    """Every TCP port of the daemon set, plus silent listeners (busy shards)."""
    tcp = sorted({e.port for _, e in endpoints(all_daemons) if e.proto == "tcp"})
    with HostileServers(only=frozenset(), silent_count=3) as silent:
        yield tcp + [s.port for s in silent.scenarios.values()]


@pytest.fixture(scope="module")
def reference(scan_ports: list[int], tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("cluster-ref")
    store = tmp / "local.sqlite"
    code, secs, _, _, err = run_bounded(_argv(scan_ports, store, tmp / "local"), 300)
    assert code == 0, err[-3000:]
    print(f"local scan: {secs:.1f} s")
    expected = _final(store)
    assert {k[2] for k in expected if k[0] == "127.0.0.1"} == set(scan_ports)
    return expected


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, contextlib.ExitStack]]:
    """`dask scheduler` + two `dask worker` processes on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("dask")
    with contextlib.ExitStack() as stack:
        port = free_port()
        _scheduler(tmp, port, stack)
        address = f"tcp://127.0.0.1:{port}"
        for i in range(2):
            _worker(tmp, address, f"w{i}", stack)
        _wait_workers(address, 2)
        yield address, tmp, stack


# -------------------------------------------------------------------------------- tests


def _scan_until_first_result(scan_ports, store: Path, out: Path, address: str,
                             tmp_path: Path) -> subprocess.Popen:
    """Start a cluster scan in the background; return once its store holds a result (or it
    ended, or 120 s passed): the moment a fault is injected mid-scan."""
    with open(tmp_path / "scan.err", "wb") as err:
        proc = subprocess.Popen(
            _argv(scan_ports, store, out, "--cluster", address, "--shard-size", SHARD),
            stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 120
    while _stored_count(store) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def test_cluster_scan_equals_local_scan(scan_ports, reference, cluster, tmp_path: Path) -> None:
    address, _, _ = cluster
    store = tmp_path / "cluster.sqlite"
    code, secs, _, _, err = run_bounded(
        _argv(scan_ports, store, tmp_path / "cluster", "--cluster", address, "--shard-size", SHARD), 300)
    assert code == 0, err[-3000:]
    print(f"cluster scan: {secs:.1f} s")
    assert _final(store) == reference
    _assert_each_port_once(tmp_path / "cluster", scan_ports)


def test_worker_sigkilled_mid_scan_loses_and_repeats_nothing(
    scan_ports, reference, cluster, tmp_path: Path
) -> None:
    address, tmp, stack = cluster
    victim = _worker(tmp, address, "victim", stack)
    _wait_workers(address, 3)
    store = tmp_path / "killed-worker.sqlite"
    out = tmp_path / "killed-worker"
    proc = _scan_until_first_result(scan_ports, store, out, address, tmp_path)
    try:
        assert proc.poll() is None, "scan ended before the worker could be killed"
        os.kill(victim.pid, signal.SIGKILL)  # our own worker process, mid-scan
        code = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, (tmp_path / "scan.err").read_text()[-3000:]
    assert victim.wait(10) == -signal.SIGKILL
    assert _final(store) == reference
    _assert_each_port_once(out, scan_ports)


def test_scheduler_killed_then_resume_finishes(scan_ports, reference, tmp_path: Path) -> None:
    store = tmp_path / "lost-scheduler.sqlite"
    with contextlib.ExitStack() as stack:
        port = free_port()
        scheduler = _scheduler(tmp_path, port, stack)
        address = f"tcp://127.0.0.1:{port}"
        _worker(tmp_path, address, "w", stack)
        _wait_workers(address, 1)
        with open(tmp_path / "scan.err", "wb") as err:
            proc = subprocess.Popen(
                _argv(scan_ports, store, tmp_path / "lost", "--cluster", address,
                      "--shard-size", SHARD), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            while _stored_count(store) == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "scan ended before the scheduler could be killed"
            os.kill(scheduler.pid, signal.SIGKILL)
            code = proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err_text = (tmp_path / "scan.err").read_text()
    assert code == 1, err_text[-3000:]
    assert "lost the Dask scheduler" in err_text and "Traceback" not in err_text, err_text[-3000:]
    with Store.open(store, create=False) as s:  # intact, with what was found
        info = s.scan()
        assert info.status == "interrupted"
        kept = {r.key for r in s.results(info.id)}
    assert kept and kept <= set(reference)
    # XML closed and well-formed even so
    ET.parse(tmp_path / "lost.xml")
    code, _, _, _, err2 = run_bounded(
        [sys.executable, "-m", "servprobe", "--resume", str(store), "--cluster", "none"], 300)
    assert code == 0, err2[-3000:]
    assert _final(store) == reference


def test_tls_scheduler_with_the_users_certificates(scan_ports, reference, all_daemons,
                                                   tmp_path: Path) -> None:
    from distributed.security import Security

    from daemons import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    tls = ("--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key))
    # the daemons only (no silent listeners): a quick scan
    ports = sorted({e.port for _, e in endpoints(all_daemons) if e.proto == "tcp"})
    with contextlib.ExitStack() as stack:
        port = free_port()
        _scheduler(tmp_path, port, stack, "--protocol", "tls", *tls)
        address = f"tls://127.0.0.1:{port}"
        _worker(tmp_path, address, "w", stack, *tls)
        _wait_workers(address, 1, Security(tls_ca_file=str(cert), tls_client_cert=str(cert),
                                           tls_client_key=str(key), require_encryption=True))
        argv = _argv(ports, tmp_path / "tls.sqlite", tmp_path / "tls", "--cluster", address,
                     hosts="127.0.0.1")
        # without certificates: refused with the settings to make, nothing scanned
        code, _, _, _, err = run_bounded(argv, 120)
        assert code == 1 and "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in err, err[-3000:]
        env = {"DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(cert),
               "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(key)}
        store = tmp_path / "tls-ok.sqlite"
        argv = _argv(ports, store, tmp_path / "tls-ok", "--cluster", address, hosts="127.0.0.1")
        code, _, _, _, err = run_bounded(argv, 300, env=env)
        assert code == 0, err[-3000:]
    assert _final(store) == {k: v for k, v in reference.items()
                             if k[0] == "127.0.0.1" and k[2] in ports}


def test_ctrl_c_cancels_shards_and_writes_every_output(scan_ports, reference, cluster,
                                                       tmp_path: Path) -> None:
    address, _, _ = cluster
    store = tmp_path / "interrupted.sqlite"
    out = tmp_path / "interrupted"
    proc = _scan_until_first_result(scan_ports, store, out, address, tmp_path)
    try:
        assert proc.poll() is None, "scan ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, (tmp_path / "scan.err").read_text()[-3000:]
    root = ET.parse(out.with_suffix(".xml")).getroot()  # closed, well-formed
    assert root.find("runstats") is not None
    with Store.open(store, create=False) as s:
        info = s.scan()
        assert info.status == "interrupted"
        kept = {r.key: tuple(getattr(r, f) for f in COMPARED) for r in s.results(info.id)}
    # what was kept is right (results of finished shards only)
    assert kept and all(reference[k] == v for k, v in kept.items())
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    keys = Counter((r["address"], r.get("proto", "tcp"), r["port"]) for r in lines
                   if "port" in r and "address" in r)
    assert max(keys.values()) == 1
