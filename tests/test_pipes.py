"""A closed stdout/stderr pipe ends the scan at once and quietly, like nmap's SIGPIPE death,
after the file outputs are written (issue 11, bug 11).

Before the fix each of these scans slept in epoll until the silent service's probes were
over (or forever, once a write had failed): the tests' 15 s timeouts fired.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


@pytest.fixture(scope="module")
def ports() -> Iterator[tuple[int, int]]:
    """A banner service (identified at once) and a silent one (a scan of it takes >10 s)."""
    talk, quiet = socket.socket(), socket.socket()
    for s in (talk, quiet):
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve(sock: socket.socket, banner: bytes) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            if banner:
                conn.sendall(banner)
            held.append(conn)

    threads = [threading.Thread(target=serve, args=(talk, BANNER), daemon=True),
               threading.Thread(target=serve, args=(quiet, b""), daemon=True)]
    for t in threads:
        t.start()
    try:
        yield talk.getsockname()[1], quiet.getsockname()[1]
    finally:
        stop.set()
        for t in threads:
            t.join()
        for c in held:
            c.close()
        talk.close()
        quiet.close()


def _servprobe(*args: str) -> list[str]:
    return [sys.executable, "-m", "servprobe", "--no-store", "--no-progress", "-Pn", "-n", *args]


def _read_lines_then_close(proc: subprocess.Popen[bytes], n: int) -> list[bytes]:
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(n)]
    proc.stdout.close()  # what `head -n` does once it has its lines
    return lines


def _wait(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> float:
    t = time.monotonic()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the scan did not end within {timeout} s of its pipe closing")
    return time.monotonic() - t


def test_json_lines_to_a_closed_stdout_end_the_scan_after_writing_the_files(ports, tmp_path: Path) -> None:
    # servprobe -oJ - -oX FILE -p A,B 127.0.0.1 | head -2
    talk, quiet = ports
    xml_path = tmp_path / "scan.xml"
    proc = subprocess.Popen(_servprobe("-oJ", "-", "-oX", str(xml_path), "-p", f"{talk},{quiet}", "127.0.0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = _read_lines_then_close(proc, 2)
    assert lines[0].startswith(b'{"type":"start"') and lines[1].startswith(b'{"type":"port"')
    elapsed = _wait(proc)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGPIPE  # nmap's end on a closed pipe
    assert elapsed < 5, elapsed  # the silent port alone takes over 10 s to scan
    assert b"Traceback" not in err and b"Error" not in err, err
    # the file output is complete and well-formed, with the finished service
    root = ET.parse(xml_path).getroot()
    ports_found = {int(p.get("portid", 0)): p for p in root.iter("port")}
    service = ports_found[talk].find("service")
    assert service is not None and service.get("product") == "OpenSSH"
    assert root.find("runstats/finished") is not None


def test_version_trace_into_a_closed_pipe_ends_quietly(ports) -> None:
    # servprobe -p A,B --version-trace 127.0.0.1 2>&1 | head -3
    talk, quiet = ports
    proc = subprocess.Popen(_servprobe("-p", f"{talk},{quiet}", "--version-trace", "127.0.0.1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _read_lines_then_close(proc, 3)
    elapsed = _wait(proc)
    assert proc.returncode == -signal.SIGPIPE
    assert elapsed < 5, elapsed


def test_closed_stdout_alone_stops_the_scan(ports) -> None:
    # servprobe -p A,B 127.0.0.1 | head -1   (stderr elsewhere, still open)
    talk, quiet = ports
    r, w = os.pipe()
    proc = subprocess.Popen(_servprobe("-p", f"{talk},{quiet}", "127.0.0.1"),
                            stdout=subprocess.PIPE, stderr=w)
    os.close(w)
    _read_lines_then_close(proc, 1)
    elapsed = _wait(proc)
    with os.fdopen(r, "rb") as fh:
        err = fh.read()
    assert proc.returncode == -signal.SIGPIPE
    assert elapsed < 5, elapsed
    assert b"Traceback" not in err, err
