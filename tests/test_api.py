"""The Python API (servprobe.scan / servprobe.ascan) against loopback listeners, and the
README's "Pipelines" Python examples executed as written."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import servprobe
from loopback_listeners import Listener
from servprobe.api import ScanError, scan_options
from servprobe.result import ServiceResult

README = Path(__file__).resolve().parents[1] / "README.md"
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
PROBES = r"""
Probe TCP NULL q||
totalwaitms 1500
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]Debian-(\S+)\r\n| p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/ cpe:/a:openbsd:openssh:$2/

Probe TCP SlowHello q|hello\r\n|
rarity 1
totalwaitms 30000
match echo m|^hello| p/echo/
"""


@pytest.fixture(scope="module")
def listeners() -> Iterator[tuple[Listener, Listener]]:
    ssh, silent = Listener(SSH_BANNER), Listener(None, hold=40)
    yield ssh, silent
    ssh.sock.close()
    silent.sock.close()


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("db") / "probes"
    p.write_text(PROBES)
    return str(p)


def _scan_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "servprobe-scan"]


def test_scan_yields_typed_results_like_the_cli(listeners: tuple[Listener, Listener], probes: str) -> None:
    ssh, _ = listeners
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    try:
        got = {r.port: r for r in servprobe.scan("127.0.0.1", ports=f"{ssh.port},{closed}", db=probes)}
    finally:
        s.close()
    assert all(isinstance(r, ServiceResult) for r in got.values())
    r = got[ssh.port]
    assert (r.state, r.service, r.product, r.version, r.cpes) == (
        "open", "ssh", "OpenSSH", "9.2p1 Debian 2", ["cpe:/a:openbsd:openssh:9.2p1"])
    assert got[closed].state == "closed"
    json.dumps(r.to_dict())  # plain data
    # the CLI on the same ports says the same (same option names, same defaults)
    res = subprocess.run([sys.executable, "-m", "servprobe", "--no-store", "--no-progress", "--db", probes,
                          "-p", str(ssh.port), "127.0.0.1", "-oJ", "-"], capture_output=True, text=True, timeout=60)
    (line,) = [json.loads(x) for x in res.stdout.splitlines() if '"type":"port"' in x]
    assert (line["product"], line["version"], line["extrainfo"]) == (r.product, r.version, r.extrainfo)
    assert not _scan_threads()


def test_options_are_the_clis_and_errors_are_clear() -> None:
    opts = scan_options()
    for name, default in (("version_intensity", None), ("timing", 3), ("Pn", False), ("no_sV", False),
                          ("input_format", "auto"), ("version_scripts", "all")):
        assert name in opts and opts[name] == default, name
    with pytest.raises(TypeError, match="unknown scan option 'bogus'"):
        next(servprobe.scan("127.0.0.1", bogus=1))
    with pytest.raises(ScanError, match=r"300\.1\.1\.1"):
        next(servprobe.scan("300.1.1.1"))
    with pytest.raises(ScanError, match="bad timing template"):
        next(servprobe.scan("127.0.0.1", timing="ludicrous"))
    assert not _scan_threads()


def test_leaving_the_loop_stops_the_scan(listeners: tuple[Listener, Listener], probes: str) -> None:
    ssh, _ = listeners
    t = time.monotonic()
    for r in servprobe.scan("127.0.0.1", ports="1-65535", db=probes):
        if r.port == ssh.port:
            break
    # the silent port keeps SlowHello waiting 30 s: breaking must not wait for it
    assert time.monotonic() - t < 15
    assert not _scan_threads()


def test_ascan_streams_and_cancels(listeners: tuple[Listener, Listener], probes: str) -> None:
    ssh, silent = listeners

    async def main() -> tuple[list[int], float, int]:
        seen: list[int] = []

        async def consume() -> None:
            async for r in servprobe.ascan(["127.0.0.1"], ports=f"{ssh.port},{silent.port}", db=probes):
                seen.append(r.port)

        task = asyncio.create_task(consume())
        deadline = time.monotonic() + 20
        while ssh.port not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        t = time.monotonic()
        task.cancel()  # the silent port is still in flight
        with pytest.raises(asyncio.CancelledError):
            await task
        left = len([x for x in asyncio.all_tasks() if x is not asyncio.current_task()])
        return seen, time.monotonic() - t, left

    seen, took, left = asyncio.run(main())
    assert seen == [ssh.port] and took < 10 and left == 0


def test_two_scans_at_once_share_nothing(listeners: tuple[Listener, Listener], probes: str) -> None:
    ssh, _ = listeners
    out: dict[str, list[ServiceResult]] = {}

    def run(name: str, **kw: object) -> None:
        out[name] = list(servprobe.scan("127.0.0.1", ports=str(ssh.port), db=probes, **kw))

    a = threading.Thread(target=run, args=("plain",), kwargs={"no_sV": True})
    b = threading.Thread(target=run, args=("versions",))
    a.start()
    b.start()
    a.join(60)
    b.join(60)
    assert [(r.method, r.product) for r in out["plain"]] == [("table", None)]
    assert [(r.method, r.product) for r in out["versions"]] == [("probed", "OpenSSH")]


def _pipeline_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Pipelines", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_examples_run_as_written() -> None:
    examples = _pipeline_examples()
    assert len(examples) >= 2
    for code in examples:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (code, res.stderr)


def test_input_file_alone_scans_only_its_ports(listeners: tuple[Listener, Listener], probes: str, tmp_path: Path) -> None:
    """No targets + input_file: the listed ports only (as `servprobe -iL FILE`), no localhost
    top-1000 scan on the side."""
    ssh, _ = listeners
    f = tmp_path / "masscan.txt"
    f.write_text(f"#masscan\nopen tcp {ssh.port} 127.0.0.1 1700000000\n# end\n")
    got = [(r.port, r.product, r.reason) for r in servprobe.scan(input_file=str(f), db=probes)]
    assert got == [(ssh.port, "OpenSSH", "user-set")]
