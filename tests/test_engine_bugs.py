"""Engine bugs of issue 11 (part A), each pinned by a test that failed before its fix.

1. a UDP port the port scan found open stays open when no probe is answered (nmap keeps it);
4. a finished machine leaves no wake-up queued in a shared ConnBudget;
6. a TLS handshake that stalls is a TLS failure (permissive retry, then the clear-text ssl
   match is reported), not a connect failure;
8. an exception inside one service's machine ends only that service, reported unidentified,
   with the error printed under -d; the other services of the scan are identified.
(Bug 2, the SF- fingerprint at every intensity, is pinned by tests/test_engine_walk_nmap.py
against a recorded nmap run.)
"""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from servprobe import load_db
from servprobe.engine.budget import ConnBudget
from servprobe.engine.events import Connect, Connected, Timeout, Wake
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner
from servprobe.engine.state import ServiceMachine
from servprobe.net.driver import scan_services
from test_engine_state import ServerModel, machine, simulate

NMAP_DB = "/usr/share/nmap/nmap-service-probes"


@pytest.fixture(scope="module")
def nmap_db():
    return load_db(NMAP_DB)


# ------------------------------------------------------------------ bug 1 -------------------


def test_udp_port_found_open_stays_open_without_answers():
    r = simulate(machine(7777, proto="udp", state="open"), ServerModel()).result
    assert (r.state, r.reason, r.method) == ("open", "udp-response", "table")
    # without the port scan's evidence it is still open|filtered, as nmap reports it
    r = simulate(machine(7777, proto="udp"), ServerModel()).result
    assert r.state == "open|filtered"


# ------------------------------------------------------------------ bug 4 -------------------


def _speculating(port: int, budget: ConnBudget) -> tuple[ServiceMachine, list]:
    """A machine on a silent TCP port that has started speculating (and been refused more)."""
    from test_engine_state import standard_db

    db = standard_db()
    m = ServiceMachine(ServiceTarget("127.0.0.1", port, "tcp"), db, Planner(db), EngineOptions(), budget)
    m.waker = lambda: None  # what the old driver set: a callback the budget kept
    acts = m.start(0.0)
    null = next(a for a in acts if isinstance(a, Connect))
    acts += m.handle(Connected(null.conn), 0.0)
    acts += m.handle(Timeout(), 0.25)  # speculation starts 0.2 s after NULL connects
    return m, acts


def test_finished_machine_leaves_no_wakeup_in_the_budget():
    shared = ConnBudget(1)
    host_a, host_b = ConnBudget(None, shared), ConnBudget(None, shared)
    a, acts_a = _speculating(1234, host_a)
    assert sum(isinstance(x, Connect) for x in acts_a) == 2  # NULL + the one budgeted attempt
    b, _ = _speculating(1234, host_b)  # refused by the shared budget: queued
    assert len(shared.waiting) == 2  # a wants a second connection, b its first
    b.abort(1.0, "test")
    assert len(shared.waiting) == 1 and not host_b.waiting  # b is gone: nothing of it stays queued
    out = a.abort(2.0, "test")
    assert shared.used == 0 and not shared.waiting and not host_a.waiting
    assert not [x for x in out if isinstance(x, Wake)]  # nobody left to wake


def test_release_wakes_a_waiting_machine_through_an_action():
    shared = ConnBudget(1)
    a, _ = _speculating(1234, ConnBudget(None, shared))
    b, _ = _speculating(1234, ConnBudget(None, shared))
    out = a.abort(2.0, "test")
    assert Wake(b.key) in out  # the driver delivers it to b's runner


# ------------------------------------------------------------------ bug 6 -------------------


class _Server:
    """Loopback TCP server: `reply(data)` gives the answer to a chunk, None = stay silent."""

    def __init__(self, reply, banner: bytes = b"") -> None:
        self.reply, self.banner = reply, banner
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if self.banner:
                c.sendall(self.banner)
            while data := c.recv(65536):
                out = self.reply(data)
                if out:
                    c.sendall(out)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def test_stalled_tls_handshake_runs_the_retry_and_the_ssl_fallback(nmap_db):
    # the server answers nmap's two TLS probes (sent in the clear) with a TLS alert, so the
    # walk restarts inside TLS; then it never answers a real ClientHello (a stalled handshake)
    probes = {nmap_db.probe(n, "tcp").payload for n in ("SSLSessionReq", "TLSSessionReq")}
    alert = b"\x15\x03\x01\x00\x02\x02\x28"
    srv = _Server(lambda data: alert if data in probes else None)
    lines: list[str] = []
    try:
        opts = EngineOptions(version_trace=True)
        (r,) = scan_services(nmap_db, [ServiceTarget("127.0.0.1", srv.port, "tcp")], opts, trace=lines.append)
    finally:
        srv.close()
    assert (r.service, r.method, r.tunnel) == ("ssl", "probed", None)
    text = "\n".join(lines)
    assert "TLS handshake failed at level 0" in text and "TLS handshake failed at level 1" in text
    assert "connect failed" not in text


# ------------------------------------------------------------------ bug 8 -------------------


def test_exception_in_one_machine_ends_only_that_service(nmap_db, monkeypatch, capsys):
    good = _Server(lambda d: None, banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    bad = _Server(lambda d: None, banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    real = ServiceMachine._apply

    def broken(self, *a, **kw):
        if self.target.port == bad.port:
            raise RuntimeError("boom")
        return real(self, *a, **kw)

    monkeypatch.setattr(ServiceMachine, "_apply", broken)
    opts = EngineOptions()
    opts.debug = 1
    targets = [ServiceTarget("127.0.0.1", p, "tcp") for p in (good.port, bad.port)]
    try:
        results = scan_services(nmap_db, targets, opts)
    finally:
        good.close()
        bad.close()
    by_port = {r.port: r for r in results}
    assert (by_port[good.port].service, by_port[good.port].product) == ("ssh", "OpenSSH")
    broke = by_port[bad.port]
    assert broke.product is None and broke.method == "table"
    err = capsys.readouterr().err
    assert "internal error" in err and "boom" in err and str(bad.port) in err
