"""Speculation keeps its answers over slow, jittery paths (tests/delayproxy.py), not only on loopback.

The speculation rules compare latencies (engine.speculate), so they are checked where
latencies are real: every daemon of the suite (tests/daemons.py) is scanned on loopback one
probe at a time (`--sequential`, nmap's order and waits: the reference) and with speculation
on loopback, through a 60 ms path (one-way, per direction) and through 150 ± 100 ms of
jitter. Service, version, tunnel, method, confidence and state must equal the reference's.
The 150 ± 100 ms run is where dnsmasq's worker limit shows (20 TCP clients served at once,
the rest queued unread: engine/speculate.py, "Workers"); `python bench/bench_worker_limit.py`
repeats that one over many proxy seeds. The proxy itself is checked first: delays, no
reordering under jitter, UDP drop rate, and no connection left open once it is closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

import servprobe
from daemons import endpoints, servprobe_scan
from delayproxy import DelayProxies
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner

NMAP_DB = "/usr/share/nmap/nmap-service-probes"


# ------------------------------------------------------------------ the proxy ---------------


@contextlib.contextmanager
def echo_server(proto: str):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]

    def serve_tcp() -> None:
        s.listen(8)
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with contextlib.suppress(OSError):
                while data := c.recv(65536):
                    c.sendall(data)
            c.close()

    def serve_udp() -> None:
        while True:
            try:
                data, addr = s.recvfrom(65536)
            except OSError:
                return
            s.sendto(data, addr)

    threading.Thread(target=serve_tcp if proto == "tcp" else serve_udp, daemon=True).start()
    try:
        yield port
    finally:
        s.close()


def test_proxy_delays_each_direction_and_keeps_byte_order():
    with echo_server("tcp") as port, DelayProxies(base=0.06, jitter=0.05, seed=7) as px:
        front = px.add(port, "tcp")
        c = socket.create_connection(("127.0.0.1", front), timeout=5)
        t0 = time.monotonic()
        c.sendall(b"ping")
        assert c.recv(100) == b"ping"
        rtt = time.monotonic() - t0
        assert rtt >= 2 * (0.06 - 0.05)  # two delayed directions (the connect's delay too)
        sent = b"".join(b"%05d" % i for i in range(400))
        for i in range(0, len(sent), 5):  # 400 small chunks, each with its own random delay
            c.sendall(sent[i:i + 5])
        got = b""
        while len(got) < len(sent):
            got += c.recv(65536)
        assert got == sent
        c.close()


def test_proxy_closes_its_connections_when_it_closes():
    """Closing the proxy closes the upstream side of every open flow at once: a server that
    serves a few clients at a time (dnsmasq) must not keep serving connections of a run
    that is over (before the fix they stayed open and later runs' connections queued)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen: list[float] = []

    def serve() -> None:
        c, _ = srv.accept()
        c.settimeout(10)
        with contextlib.suppress(OSError):
            while c.recv(100):
                pass
        seen.append(time.monotonic())
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    clients = []
    try:
        with DelayProxies(base=0.05, jitter=0.02, seed=3) as px:
            front = px.add(srv.getsockname()[1], "tcp")
            c = socket.create_connection(("127.0.0.1", front), timeout=5)
            clients.append(c)
            c.sendall(b"hello")
            time.sleep(0.3)  # the upstream connection exists and carried the bytes
            closed_at = time.monotonic()
        deadline = time.monotonic() + 3
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert seen and seen[0] - closed_at < 1.0
    finally:
        for c in clients:
            c.close()
        srv.close()


def test_proxy_drops_udp_datagrams_at_its_rate():
    with echo_server("udp") as port, DelayProxies(base=0.0, drop=0.3, seed=3) as px:
        front = px.add(port, "udp")
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(0.05)
        c.connect(("127.0.0.1", front))
        answered = 0
        for i in range(200):
            c.send(b"%d" % i)
            with contextlib.suppress(TimeoutError):
                answered += c.recv(100) == b"%d" % i
        c.close()
    # each round trip survives two independent 30 % drops: 49 % expected
    assert 0.35 < answered / 200 < 0.63 and px.dropped > 0


# ------------------------------------------------------------------ the daemons -------------


def key(r):
    return (r.display_service(), r.display_version(), r.tunnel, r.method, r.conf, r.state)


def proxied_targets(px: DelayProxies, planner: Planner, pairs) -> list[ServiceTarget]:
    """A proxy port per endpoint whose probe order is the endpoint's own (the order depends
    on the port number; a front port some probe lists would change the walk, not the path)."""
    out = []
    for d, e in pairs:
        want = planner.order(e.proto, e.port, False, 7)
        for _ in range(20):
            front = px.add(e.port, e.proto)
            if planner.order(e.proto, front, False, 7) == want:
                break
        out.append(ServiceTarget(d.host, front, e.proto))
    return out


@pytest.mark.daemon
@pytest.mark.slow
def test_daemons_same_answers_through_delay_as_sequential_on_loopback(all_daemons):
    db = servprobe.load_db(NMAP_DB)
    planner = Planner(db)
    pairs = endpoints(all_daemons)
    direct = [ServiceTarget(d.host, e.port, e.proto) for d, e in pairs]
    want = servprobe_scan(db, direct, EngineOptions(rpc_grind=False, sequential=True, version_scripts="none"))
    runs = {"loopback": servprobe_scan(db, direct, EngineOptions(rpc_grind=False, version_scripts="none"))}
    for name, base, jitter in (("60ms", 0.06, 0.0), ("150+-100ms", 0.15, 0.10)):
        with DelayProxies(base=base, jitter=jitter, seed=11) as px:
            targets = proxied_targets(px, planner, pairs)
            runs[name] = servprobe_scan(db, targets, EngineOptions(rpc_grind=False, version_scripts="none"))
    assert len(want) == len(pairs)
    for name, got in runs.items():
        assert len(got) == len(pairs), name
        for (_, e), a, b in zip(pairs, got, want, strict=True):
            assert key(a) == key(b), (name, e.name, key(a), key(b))
