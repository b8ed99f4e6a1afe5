"""The asyncio driver against small odd servers on loopback, with nmap's probe database.

One scan per test runs all its services concurrently, so the whole module costs about two
probe waits of nmap's file (NULL 6 s + 5 s) rather than one per service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest

from oddservers import (
    HTTP_NGINX,
    OddServers,
    accept_close,
    banner,
    request_first,
    silent,
)
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import run_service_scan, scan_services

NMAP_DB = "/usr/share/nmap/nmap-service-probes"
pytestmark = pytest.mark.skipif(not os.path.exists(NMAP_DB), reason="nmap's database is not installed")


@pytest.fixture(scope="module")
def db():
    import servprobe

    return servprobe.load_db(NMAP_DB)


@pytest.fixture(scope="module")
def servers():
    with OddServers() as s:
        yield s


def dns_version_answer(query: bytes) -> bytes | None:
    if b"\x07version\x04bind" not in query:
        return None
    txt = b"9.18.19-1~deb12u1-Debian"
    return (
        query[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:]
        + b"\xc0\x0c\x00\x10\x00\x03\x00\x00\x00\x00"
        + struct.pack(">H", len(txt) + 1) + bytes([len(txt)]) + txt
    )


def key(r):
    return (r.service, r.product, r.version, r.extrainfo, r.method, r.conf, r.soft, r.tunnel, r.state)


@pytest.fixture(scope="module")
def odd(servers):
    """name -> (port, proto) of odd servers whose answers do not depend on timing details."""
    return {
        "ssh": (servers.tcp(banner(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")), "tcp"),
        "wrapped": (servers.tcp(accept_close()), "tcp"),
        "late": (servers.tcp(banner(b"220 mx.example ESMTP Postfix (Debian/GNU)\r\n", delay=7.0)), "tcp"),
        "soft": (servers.tcp(banner(b"* OK oddhost imap ready\r\n")), "tcp"),
        "http": (servers.tcp(request_first({b"GET": HTTP_NGINX})), "tcp"),
        "several": (
            servers.tcp(
                request_first(
                    {
                        b"\r\n\r\n": b"500 what?\r\n",
                        b"OPTIONS": b"RTSP/1.0 200 OK\r\nServer: oddrtsp\r\n\r\n",
                        b"GET": HTTP_NGINX,
                    }
                )
            ),
            "tcp",
        ),
        "tls": (servers.tls({b"GET": HTTP_NGINX}), "tcp"),
        "dns": (servers.udp(dns_version_answer), "udp"),
    }


def scan(db, targets, **opts):
    t0 = time.monotonic()
    res = scan_services(db, targets, EngineOptions(rpc_grind=False, **opts))
    return res, time.monotonic() - t0


def test_odd_servers_same_results_with_and_without_speculation(db, odd):
    names = list(odd)
    targets = [ServiceTarget("127.0.0.1", port, proto) for port, proto in odd.values()]
    spec, t_spec = scan(db, targets)
    seq, t_seq = scan(db, targets, sequential=True)
    got = {n: r for n, r in zip(names, spec, strict=True)}
    for n, a, b in zip(names, spec, seq, strict=True):
        assert key(a) == key(b), (n, a, b)

    assert (got["ssh"].service, got["ssh"].product, got["ssh"].version) == ("ssh", "OpenSSH", "9.2p1 Debian 2+deb12u3")
    assert got["ssh"].matched and got["ssh"].matched.startswith(NMAP_DB + ":")
    assert (got["wrapped"].service, got["wrapped"].conf) == ("tcpwrapped", 8)
    # the late banner arrives after NULL's 6 s, on the NULL connection, during the next probe
    assert got["late"].service == "smtp" and got["late"].product == "Postfix smtpd"
    assert (got["soft"].service, got["soft"].soft, got["soft"].product) == ("imap", True, None)
    assert got["soft"].fingerprint and got["soft"].fingerprint.startswith("SF-Port")
    assert (got["http"].service, got["http"].product, got["http"].version) == ("http", "nginx", "1.22.1")
    assert got["several"].service == "http" and got["several"].probe == "GetRequest"
    assert got["tls"].display_service() == "ssl/http" and got["tls"].product == "nginx"
    assert (got["dns"].service, got["dns"].product, got["dns"].state) == ("domain", "ISC BIND", "open")
    assert t_spec < t_seq


def test_speculation_is_fast_on_request_first_and_silent_ports(db, servers):
    http = servers.tcp(request_first({b"GET": HTTP_NGINX}))
    quiet = servers.tcp(silent())
    res, elapsed = scan(db, [ServiceTarget("127.0.0.1", http, "tcp"), ServiceTarget("127.0.0.1", quiet, "tcp")])
    r_http, r_quiet = res
    assert r_http.service == "http" and r_http.product == "nginx"
    assert r_quiet.method == "table" and r_quiet.fingerprint is None
    # one probe at a time the silent port costs NULL 6 s + ~30 probes x 5 s (about 150 s);
    # speculation runs them side by side (about 11 s; bound kept loose for loaded machines)
    assert elapsed < 60


def test_ipv6_tcp_tls_udp(db):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        s6 = socket.socket(socket.AF_INET6)
        s6.bind(("::1", 0))
        s6.close()
    except OSError:
        pytest.skip("::1 not configured")
    with OddServers() as s:
        ssh = s.tcp(banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"), host="::1")
        tls = s.tls({b"GET": HTTP_NGINX}, host="::1")
        dns = s.udp(dns_version_answer, host="::1")
        res, _ = scan(
            db,
            [ServiceTarget("::1", ssh, "tcp"), ServiceTarget("::1", tls, "tcp"), ServiceTarget("::1", dns, "udp")],
        )
    assert res[0].service == "ssh" and res[0].address == "::1"
    assert res[1].display_service() == "ssl/http"
    assert res[2].service == "domain" and res[2].state == "open"


def test_udp_silent_is_open_filtered(db, servers):
    port = servers.udp(lambda q: None)
    res, _ = scan(db, [ServiceTarget("127.0.0.1", port, "udp")], intensity=2)
    assert res[0].state == "open|filtered" and res[0].method == "table"


def test_flood_costs_bounded_memory(db, servers):
    async def flood(r, w):
        chunk = b"\xff" * 65536
        for _ in range(1600):  # 100 MB if nobody stops reading
            w.write(chunk)
            await w.drain()

    port = servers.tcp(flood)
    res, elapsed = scan(db, [ServiceTarget("127.0.0.1", port, "tcp")])
    r = res[0]
    assert r.fingerprint is not None and "%r(NULL,1000," in r.fingerprint.replace("\nSF:", "")
    assert elapsed < 60


def test_version_trace_lines(db, servers):
    port = servers.tcp(banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"))
    lines: list[str] = []
    opts = EngineOptions(version_trace=True, rpc_grind=False)
    results = []
    asyncio.run(run_service_scan(db, [ServiceTarget("127.0.0.1", port, "tcp")], opts, results.append, lines.append))
    text = "\n".join(lines)
    assert "connection requested" in text and "CONNECT SUCCESS" in text
    assert "READ 23 bytes: SSH-2.0-OpenSSH_9.2p1\\x0d\\x0a" in text
    assert "Service scan match" in text and "is ssh" in text
    assert all(line.startswith("SERVPROBE (") for line in lines)
    assert results[0].service == "ssh"


def test_excluded_port_not_probed(db):
    # nmap's file excludes TCP 9100-9107 (printers print whatever they get)
    res, elapsed = scan(db, [ServiceTarget("127.0.0.1", 9100, "tcp")])
    assert res[0].method == "table" and res[0].conf == 3 and elapsed < 5


def test_connection_refused_reports_table(db):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res, _ = scan(db, [ServiceTarget("127.0.0.1", port, "tcp")])
    assert res[0].method == "table"


def test_host_timeout_reports_partial_result(db, servers):
    port = servers.tcp(silent())
    res, elapsed = scan(db, [ServiceTarget("127.0.0.1", port, "tcp")], host_timeout=1.0)
    assert res[0].method == "table" and elapsed < 5


def test_per_host_limits_bound_connections(db, servers):
    import threading

    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    async def counting_silent(r, w):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            while await r.read(4096):
                pass
        finally:
            with lock:
                state["now"] -= 1

    ports = [servers.tcp(counting_silent) for _ in range(3)]
    res, _ = scan(
        db,
        [ServiceTarget("127.0.0.1", p, "tcp") for p in ports],
        intensity=1,
        per_host_parallelism=2,
        per_host_connections=3,
    )
    assert all(r.method == "table" for r in res)
    # at most 2 services at once, each with its own connection (+1 while a TLS retry or the
    # NULL connection overlaps), plus 3 speculative connections for the whole host
    assert 1 <= state["max"] <= 2 * 2 + 3
