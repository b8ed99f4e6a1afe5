"""The hostile test servers really misbehave as claimed (so the scan tests prove something),
and the crafted 404 near-miss really makes stdlib `re` backtrack while `regex` does not."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from hostile import (
    HOST,
    NMAP_PROBES,
    HostileServers,
    backtracks_in_stdlib_re,
    candidate_404_backtrackers,
)


@pytest.fixture(scope="module")
def servers():
    with HostileServers(backtrack_response=b"HTTP/1.0 404 Not Found\r\n\r\nx") as hs:
        yield hs


def _connect(servers: HostileServers, name: str) -> socket.socket:
    s = socket.create_connection((HOST, servers.port(name)), timeout=5)
    return s


def test_flood_sends_fast(servers) -> None:
    """The flood server really floods: 10 MB of its pattern arrive without a pause of 5 s and
    within 30 s (loose: the point is megabytes per second, not a benchmark), and it does not
    stop early. Fails (checked) when flood() in tests/hostile.py returns after one chunk (the
    old loop hung on the closed socket instead) or sleeps 1 s between chunks."""
    with _connect(servers, "flood") as s:
        s.settimeout(5)
        n, head = 0, b""
        deadline = time.monotonic() + 30
        while n < 10_000_000:
            chunk = s.recv(1 << 20)
            assert chunk, f"flood closed the connection after {n} bytes"
            head = head or chunk[:20]
            n += len(chunk)
            assert time.monotonic() < deadline, f"only {n} bytes in 30 s"
        assert head.startswith(b"FLOODFLOOD")


def test_drip_is_slow(servers) -> None:
    with _connect(servers, "drip") as s:
        s.settimeout(0.2)
        got = b""
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            try:
                got += s.recv(100)
            except TimeoutError:
                pass
        assert 1 <= len(got) <= 3


def test_reset_resets(servers) -> None:
    with _connect(servers, "reset") as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while s.recv(4096):
                pass


def test_halfclose_sends_fin_but_keeps_reading(servers) -> None:
    with _connect(servers, "halfclose") as s:
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert data.startswith(b"220 ")
        s.sendall(b"still there?\r\n")  # our side may still write: no RST yet


def test_tls_stall_never_completes(servers) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with _connect(servers, "tlsstall") as s:
        s.settimeout(1.5)
        with pytest.raises((TimeoutError, ssl.SSLError)):
            ctx.wrap_socket(s)


def test_udp_amplifies(servers) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(b"\r\n", (HOST, servers.port("udpamp")))
        assert len(u.recv(65535)) == 60000


def test_crafted_404_backtracks_in_re_but_not_in_regex() -> None:
    import regex

    assert NMAP_PROBES.exists(), f"{NMAP_PROBES} missing: install nmap-common (make apt)"

    found = candidate_404_backtrackers()
    assert len(found) >= 2, "expected the two PHP 404 lines of nmap-service-probes"
    for b in found:
        assert 200 < len(b.response) < 600
        assert backtracks_in_stdlib_re(b, seconds=1.0), f"line {b.line} did not backtrack"
        t = time.perf_counter()
        assert regex.compile(b.pattern, b.flags).search(b.response, timeout=5) is None
        assert time.perf_counter() - t < 2
