"""SIGINT/SIGTERM/SIGHUP flush every output; `servprobe --resume` finishes the scan.

Through the real CLI (`python -m servprobe`) against loopback listeners: a few quick
services (a Python HTTP server answers at once) and silent ones that keep the scan busy
for several seconds, so the signal lands mid-scan.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hostile import HostileServers, run_bounded
from servprobe.store import Store

pytestmark = pytest.mark.slow

EXIT_BY_SIGNAL = {signal.SIGINT: (130,), signal.SIGTERM: (143,), signal.SIGHUP: (129, 130)}


@pytest.fixture(scope="module")
def http_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def silent():
    with HostileServers(only=frozenset(), silent_count=4) as servers:
        yield servers


def _argv(tmp: Path, ports: list[int], store: Path) -> list[str]:
    return [sys.executable, "-m", "servprobe", "-sV", "-Pn", "-n",
            "-p", ",".join(map(str, ports)), "127.0.0.1",
            "-oX", str(tmp / "scan.xml"), "-oJ", str(tmp / "scan.jsonl"),
            "-oN", str(tmp / "scan.txt"), "-oG", str(tmp / "scan.gnmap"),
            "--store", str(store), "--no-progress"]


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_signal_flushes_every_output_then_resume_completes(
    sig: int, tmp_path: Path, http_port: int, silent: HostileServers
) -> None:
    ports = sorted([http_port, *(s.port for s in silent.scenarios.values())])
    store = tmp_path / "scan.sqlite"
    proc = subprocess.Popen(_argv(tmp_path, ports, store), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        # wait until the quick HTTP service is stored, then signal mid-scan
        deadline = time.monotonic() + 30
        stored = False
        while time.monotonic() < deadline and not stored and proc.poll() is None:
            time.sleep(0.2)
            if store.exists():
                try:
                    with Store.open(store, create=False) as s:
                        stored = ("127.0.0.1", "tcp", http_port) in s.finished(s.scan().id)
                except Exception:
                    pass
        assert stored, "the HTTP service was never stored"
        assert proc.poll() is None, "scan ended before the signal: silent services too quick?"
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in EXIT_BY_SIGNAL[sig], (proc.returncode, err[-2000:])
    assert "Traceback" not in err
    # every output is complete and well-formed, with what was found before the signal
    root = ET.parse(tmp_path / "scan.xml").getroot()
    assert root.find("runstats/finished") is not None
    assert str(http_port) in {p.get("portid") for p in root.iter("port")}
    lines = _json_lines(tmp_path / "scan.jsonl")
    assert lines[-1]["type"] == "summary" and lines[-1]["interrupted"] is True
    http = [x for x in lines if x.get("type") == "port" and x["port"] == http_port]
    assert http and http[0]["service"] == "http"
    assert "# servprobe done" in (tmp_path / "scan.txt").read_text()
    assert "# servprobe done" in (tmp_path / "scan.gnmap").read_text() or \
        "# Nmap done" in (tmp_path / "scan.gnmap").read_text()
    with Store.open(store, create=False) as s:
        info = s.scan()
        assert info.status == "interrupted"
        before = {r.key: r for r in s.results(info.id)}

    code, _secs, _, _, err = run_bounded(
        [sys.executable, "-m", "servprobe", "--resume", str(store)], timeout=180)
    assert code == 0, err[-3000:]
    assert "resuming scan" in err
    with Store.open(store, create=False) as s:
        info = s.scan()
        assert info.status == "done" and info.resumed == 1
        after = {r.key: r for r in s.results(info.id)}
    want = {("127.0.0.1", "tcp", p) for p in ports}
    assert want <= set(after)
    for key, r in before.items():  # nothing finished was lost or redone differently
        assert after[key].finished == r.finished and after[key].service == r.service
    # the resumed run rewrote every output in full, earlier results included
    root = ET.parse(tmp_path / "scan.xml").getroot()
    assert {p.get("portid") for p in root.iter("port")} >= {str(p) for p in ports}
    lines = _json_lines(tmp_path / "scan.jsonl")
    assert lines[-1]["type"] == "summary" and lines[-1]["interrupted"] is False
    assert {x["port"] for x in lines if x.get("type") == "port"} >= set(ports)


def test_resume_of_a_missing_or_bad_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 100)
    for argv in (["--resume", str(tmp_path / "none.sqlite")], ["--resume", str(bad)],
                 ["--resume", str(bad), "-p", "80"]):
        proc = subprocess.run([sys.executable, "-m", "servprobe", *argv], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "servprobe:" in proc.stderr
