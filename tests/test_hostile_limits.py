"""Resource limits: a low RLIMIT_NOFILE gives a clear message or a slower but correct scan,
never EMFILE tracebacks or lost results."""

from __future__ import annotations

import http.server
import json
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from servprobe.resources import MIN_FDS, preflight, services_possible


def _limited(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def _scan(argv: list[str], nofile: int, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servprobe", *argv], preexec_fn=_limited(nofile),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def http_ports():
    servers = []
    for _ in range(3):
        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    try:
        yield [s.server_address[1] for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_too_few_descriptors_is_a_clear_error() -> None:
    proc = _scan(["-sV", "-Pn", "-n", "-p", "1", "127.0.0.1", "--no-store"], MIN_FDS - 8)
    assert proc.returncode == 1
    assert "file descriptors" in proc.stderr and "ulimit -n" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_low_limit_caps_parallelism_with_a_note_and_loses_nothing(
    http_ports: list[int], tmp_path: Path
) -> None:
    out = tmp_path / "scan.jsonl"
    ports = ",".join(map(str, http_ports)) + ",1-200"
    proc = _scan(["-sV", "-Pn", "-n", "-p", ports, "127.0.0.1", "--no-store", "--no-progress",
                  "--max-parallelism", "5000", "-oJ", str(out)], 200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--max-parallelism 5000" in proc.stderr and "ulimit -n" in proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines() if x]
    found = {x["port"]: x for x in lines if x.get("type") == "port" and x["state"] == "open"}
    assert set(http_ports) <= set(found)
    assert all(found[p]["service"] == "http" for p in http_ports)


def test_preflight_notes_only_when_capped() -> None:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if services_possible(soft) >= 1000:
        assert preflight(["127.0.0.1"]) == []
    assert preflight(["--max-parallelism", str(10**7), "127.0.0.1"])
