"""tests/daemons.py itself: versions from dpkg, clean stop, clear errors when a start fails."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

import daemons

pytestmark = pytest.mark.daemon


@pytest.mark.parametrize(("debian", "upstream", "revision"), [
    ("1:9.2p1-2+deb12u3", "9.2p1", "2+deb12u3"),
    ("1.22.1-9+deb12u11", "1.22.1", "9+deb12u11"),
    ("5:7.0.15-1~deb12u10", "7.0.15", "1~deb12u10"),
    ("3:5.68-2+deb12u1", "5.68", "2+deb12u1"),
    ("15+248", "15+248", ""),
    ("2.0", "2.0", ""),
    ("1:2.3-4-5", "2.3-4", "5"),
])
def test_version_parts(debian: str, upstream: str, revision: str) -> None:
    assert daemons.upstream_version(debian) == upstream
    assert daemons.debian_revision(debian) == revision


def test_dpkg_version_is_the_installed_one() -> None:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "redis-server"],
                         capture_output=True, text=True, check=True).stdout
    assert daemons.dpkg_version("redis-server") == out.strip() != ""
    with pytest.raises(daemons.DaemonError, match="not installed"):
        daemons.dpkg_version("servprobe-no-such-package")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_leaves_nothing_behind() -> None:
    with daemons.vsftpd() as d:
        with socket.create_connection((d.host, d.port), timeout=5) as s:
            s.settimeout(5)
            assert s.recv(64).startswith(b"220 ")  # a session child of the daemon is live
        pid, port, workdir = d.pid, d.port, d.workdir
        assert _alive(pid) and workdir.is_dir()
    assert not _alive(pid)
    assert not workdir.exists()
    with pytest.raises(OSError):
        socket.create_connection((daemons.HOST, port), timeout=2).close()


def test_failed_start_says_why_with_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon that cannot bind dies; the error names it and carries its own log."""
    with socket.socket() as taken:
        taken.bind((daemons.HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(daemons, "free_port", lambda **_kw: port)
        with pytest.raises(daemons.DaemonError) as err, daemons.redis():
            pass
    text = str(err.value)
    assert "redis-server exited" in text
    assert "already in use" in text.lower()


def test_free_ports_are_not_handed_out_twice() -> None:
    ports = [daemons.free_port(udp_too=True) for _ in range(20)]
    assert len(set(ports)) == 20
    assert not {2181, 6379, 11211} & set(ports)
