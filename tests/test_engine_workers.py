"""A server that serves a fixed number of clients at a time (engine/speculate.py, "Workers").

dnsmasq serves 20 TCP clients at once and leaves further connections in its listen backlog,
unread, until a served client goes. Scripted here in virtual time: 20 workers, every probe
silent except one late in the order, whose connection a burst of 31 would queue behind
twenty silent ones past its own wait. The expected answer is `--sequential`'s (nmap's order
and waits, one connection at a time), which such a server always serves at once.
"""

from __future__ import annotations

import pytest

from servprobe.engine import sim
from servprobe.engine import speculate as spec
from servprobe.engine.sim import ServerModel, simulate
from test_engine_state import machine, make_db, ml, probe

WORKERS = 20
PROBES = 30
ANSWERING = 28  # the 28th probe of the order: beyond what 20 workers and 4 early closes serve


def db():
    probes = [probe("NULL", b"", totalwaitms=6000, tcpwrappedms=3000)]
    for i in range(1, PROBES + 1):
        lines = [ml("workers", rb"^served (\d+)", p="worker-limited server", v="$1")] if i == ANSWERING else []
        probes.append(probe(f"P{i:02d}", b"p%02d\r\n" % i, rarity=1, matches=lines))
    return make_db(probes)


class WorkerLimited(ServerModel):
    """Serves WORKERS connections; the rest wait unread until a served one closes. Answers only
    probe ANSWERING's payload; everything else is silence (connections held open)."""

    def __init__(self, links: dict[int, object]) -> None:
        self.links = links
        self.served: set[int] = set()
        self.queue: list[int] = []
        self.got: dict[int, bytes] = {}
        self.max_queue = 0

    def _admit(self, conn: int) -> None:
        # the simulator may deliver the first bytes before on_connect: admit on either
        if conn in self.served or conn in self.queue:
            return
        if len(self.served) < WORKERS:
            self.served.add(conn)
        else:
            self.queue.append(conn)
            self.max_queue = max(self.max_queue, len(self.queue))

    def on_connect(self, conn: int, tls: bool) -> list[tuple[float, object]]:
        self._admit(conn)
        return []

    def on_data(self, conn: int, payload: bytes, since_connect: float, tls: bool) -> list[tuple[float, object]]:
        self._admit(conn)
        self.got[conn] = self.got.get(conn, b"") + payload
        return self._answer(conn) if conn in self.served else []

    def on_close(self, conn: int) -> None:
        self.served.discard(conn)
        if conn in self.queue:
            self.queue.remove(conn)
        while self.queue and len(self.served) < WORKERS:
            nxt = self.queue.pop(0)
            self.served.add(nxt)
            link = self.links[nxt]
            for delay, what in self._answer(nxt):  # the worker reads what waited in the backlog
                link.net._push(link.net.rtt + delay, link._out, what)  # type: ignore[attr-defined]

    def _answer(self, conn: int) -> list[tuple[float, object]]:
        if self.got.get(conn, b"").startswith(b"p%02d" % ANSWERING):
            return [(0.0, b"served %d\r\n" % WORKERS)]
        return []


def run(monkeypatch: pytest.MonkeyPatch, **opts):
    links: dict[int, object] = {}
    real = sim.SimTransport.connect

    def connect(self, dial, sink):
        link = real(self, dial, sink)
        links[dial.conn] = link
        return link

    monkeypatch.setattr(sim.SimTransport, "connect", connect)
    server = WorkerLimited(links)
    out = simulate(machine(31337, db(), **opts), server, rtt=0.001)
    return out, server


def fields(r):
    return (r.service, r.product, r.version, r.method, r.state)


def test_worker_limited_server_gives_the_sequential_answer(monkeypatch):
    want, _ = run(monkeypatch, sequential=True)
    assert fields(want.result) == ("workers", "worker-limited server", "20", "probed", "open")
    got, _ = run(monkeypatch, sequential=False)
    assert fields(got.result) == fields(want.result)
    assert got.max_parallel <= spec.SILENT_OPEN_MAX  # never more open than the cap
    assert got.elapsed < want.elapsed / 5  # and still far faster than one probe at a time


def test_without_the_cap_the_answer_is_lost(monkeypatch):
    """The rule is what keeps the answer: with no cap the burst queues probe 28 past its wait."""
    monkeypatch.setattr(spec, "SILENT_OPEN_MAX", 10_000)
    got, server = run(monkeypatch, sequential=False)
    assert server.max_queue > 0
    assert got.result.service != "workers"


class ClosesEverything(ServerModel):
    """git daemon's way with requests it does not understand: read, then close, no byte."""

    def on_data(self, conn: int, payload: bytes, since_connect: float, tls: bool) -> list[tuple[float, object]]:
        return [(0.002, sim.CLOSE)]


def test_server_closing_every_probe_ends_the_scan(monkeypatch):
    """Crowded closes are discarded and re-run (the refusal rule); once two re-runs proved the
    server just closes, the rest re-run in parallel (trust) -- a re-run that met more
    connections than trusted and was discarded again must then wait for a quiet moment, or
    the walk never ends (git daemon livelocked the scan: discarded, relaunched crowded,
    discarded again, forever). The answer is --sequential's."""
    want = simulate(machine(31337, db(), sequential=True), ClosesEverything(), rtt=0.001)
    real = sim.SimTransport.connect

    def bounded(self, dial, sink):  # the livelock loops at one virtual instant: fail, not hang
        if self.connections >= 10 * PROBES:
            raise AssertionError(f"{self.connections} connections for {PROBES} probes: relaunch loop")
        return real(self, dial, sink)

    monkeypatch.setattr(sim.SimTransport, "connect", bounded)
    got = simulate(machine(31337, db(), sequential=False), ClosesEverything(), rtt=0.001)
    assert fields(got.result) == fields(want.result)
