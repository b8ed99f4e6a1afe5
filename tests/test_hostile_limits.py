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

from servprobe.resources import MIN_FDS

# The scans below cover fixed ports (1-200): in a network namespace of the module's own, so a
# service the host happens to run there (a silent one costs minutes) cannot change them.
pytestmark = pytest.mark.usefixtures("inside_netns")


def _limited(n: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return apply


def _scan(argv: list[str], nofile: int, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servprobe", *argv], preexec_fn=_limited(nofile),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def http_ports(netns):
    servers = []
    with netns.entered():  # the serving threads start inside, too
        for _ in range(3):
            s = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                http.server.SimpleHTTPRequestHandler)
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
    # a fixed limit, set in a child process, so the assert holds whatever `ulimit -n` the
    # test machine has: 4096 descriptors serve the default 1000 services at once (one socket
    # each plus the engine's reserve); ten million services do not
    code = ("import json, sys; from servprobe.resources import preflight; "
            "print(json.dumps([preflight(['127.0.0.1']), "
            "preflight(['--max-parallelism', str(10**7), '127.0.0.1'])]))")
    proc = subprocess.run([sys.executable, "-c", code], preexec_fn=_limited(4096),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    default, huge = json.loads(proc.stdout)
    assert default == []
    assert len(huge) == 1 and "--max-parallelism 10000000" in huge[0] and "ulimit -n" in huge[0]
