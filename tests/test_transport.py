"""The one transport interface (engine.transport): the service walk, a post-processor's
exchange and RPC grinding each run unchanged on real sockets (net.transport) and in virtual
time (engine.sim.SimTransport), and give the same answer on both.

The servers are defined once and used twice: tests/scripted_servers.py's behaviours (a real
threaded server and its ServerModel), tests/rpcservers.RpcTestServer's RPC logic (its real
UDP/TCP server, and the same `answer()` behind a ServerModel here), a Redis-like INFO reply
(a real asyncio server and a ServerModel). Expected values are the servers' own: the program
and version range the RPC server is given, the version in the INFO text — and each
transport's answer must equal the other's.

Also: the post runner hands the wake-up key of ConnBudget.release() to the driver, so a
machine waiting for the connection slot a post-processor frees is woken at once.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servprobe
from rpcservers import RpcTestServer
from scripted_servers import SimServer, ThreadedServer
from servprobe.engine.budget import ConnBudget, new_key
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner
from servprobe.engine.sim import CLOSE, ServerModel, SimTransport, simulate
from servprobe.engine.state import ServiceMachine
from servprobe.net.driver import scan_services
from servprobe.net.transport import AsyncioTransport
from servprobe.post import redis as redis_post
from servprobe.post.base import Machine, PostEnv, PostProcessor, Trigger
from servprobe.post.runner import Exchange, run_post
from servprobe.result import ServiceResult
from servprobe.rpc.grinder import identify_flow
from servprobe.rpc.protocol import RecordReader, record_mark
from servprobe.rpc.transport import FlowOp, run

NO_PMAP = EngineOptions(rpc_portmapper=False)


@pytest.fixture(scope="module")
def db():
    return servprobe.load_db("bundled")


# -- the service walk ---------------------------------------------------------------------


def _fields(r: ServiceResult) -> tuple[object, ...]:
    return (r.state, r.service, r.product, r.version, r.method, r.conf, r.soft, r.probe, r.matched)


@pytest.mark.parametrize("behaviour", ["wrapped", "webish"])
def test_the_walk_answers_alike_on_sockets_and_in_virtual_time(db, behaviour: str) -> None:
    opts = EngineOptions(version_scripts="none", rpc_grind=False)
    with ThreadedServer(behaviour) as srv:
        (real,) = scan_services(db, [ServiceTarget("127.0.0.1", srv.port, "tcp")], opts)
    target = ServiceTarget("127.0.0.1", srv.port, "tcp", table_name="unknown")
    machine = ServiceMachine(target, db, Planner(db), opts, ConnBudget(None))
    sim = simulate(machine, SimServer(behaviour))
    assert _fields(sim.result) == _fields(real)
    if behaviour == "wrapped":  # nmap's rule: closed during NULL with zero bytes
        assert real.service == "tcpwrapped"


# -- a post-processor's exchange ------------------------------------------------------------

INFO = b"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nos:Linux 6.1 x86_64\r\narch_bits:64\r\n"
INFO_REPLY = b"$%d\r\n%s\r\n" % (len(INFO), INFO)


class InfoModel(ServerModel):
    """Answers `INFO server` like Redis does (split in two chunks, to test reassembly)."""

    def on_data(self, conn, payload, since, tls):
        if payload.startswith(b"INFO"):
            return [(0.0, INFO_REPLY[:20]), (0.001, INFO_REPLY[20:])]
        return [(0.0, b"-ERR unknown command\r\n"), (0.0, CLOSE)]


async def _info_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.readline()
    for delay, what in InfoModel().on_data(1, data, 0.0, False):
        await asyncio.sleep(delay)
        if what is CLOSE:
            break
        writer.write(what)  # type: ignore[arg-type]
        await writer.drain()
    await reader.read(1)
    writer.close()


def _redis_result(port: int) -> ServiceResult:
    return ServiceResult("127.0.0.1", port, "tcp", service="redis", method="probed", conf=10)


def _sim_exchange(
    port: int, machine: Machine, models: dict[tuple[str, int], ServerModel]
) -> list[str]:
    net = SimTransport(models)
    log: list[str] = []
    ended: list[BaseException | None] = []
    ex = Exchange(machine, machine.result, log.append)
    ex.begin(PostEnv(None, net), log.append, ended.append)
    net.run_until(lambda: bool(ended))
    assert ended == [None]
    return log


def test_a_post_exchange_answers_alike_on_sockets_and_in_virtual_time() -> None:
    async def real() -> tuple[ServiceResult, list[str]]:
        server = await asyncio.start_server(_info_server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        result = _redis_result(port)
        lines: list[str] = []
        try:
            await run_post(result, [redis_post.POST], None, None, lines.append)
        finally:
            server.close()
        return result, lines

    got, lines = asyncio.run(real())
    m = redis_post.POST.machine(_redis_result(got.port))
    log = _sim_exchange(got.port, m, {("tcp", got.port): InfoModel()})
    sim = _redis_result(got.port)
    from servprobe.post.base import apply

    finding = m.finish()
    assert finding is not None
    apply(sim, finding)
    assert got.version == "7.0.15"  # the version the INFO text states
    assert (sim.product, sim.version, sim.extrainfo, sim.ostype) == (
        got.product,
        got.version,
        got.extrainfo,
        got.ostype,
    )
    assert [(s.id, s.output) for s in sim.scripts] == [(s.id, s.output) for s in got.scripts]
    # the same exchange: the same trace lines (the real ones carry the runner's prefix)
    assert [x.split(":")[0] for x in log if x.startswith("SEND")] == ["SEND 13 bytes"]
    assert any("post redis-info found" in x for x in lines)


# -- RPC grinding --------------------------------------------------------------------------


class RpcModel(ServerModel):
    """tests/rpcservers.RpcTestServer's RPC logic as a ServerModel (datagrams or records)."""

    def __init__(self, srv: RpcTestServer) -> None:
        self.srv = srv
        self.readers: dict[int, RecordReader] = {}

    def on_data(self, conn, payload, since, tls):
        if self.srv.proto == "udp":
            out = self.srv.answer(payload)
            return [] if out is None else [(0.0, out)]
        reader = self.readers.setdefault(conn, RecordReader(1 << 16))
        replies = [self.srv.answer(rec) for rec in reader.feed(payload)]
        return [(0.0, record_mark(r)) for r in replies if r is not None]

    def on_close(self, conn):
        self.readers.pop(conn, None)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("programs", [{100005: (1, 3)}, {100003: (3, 4), 100227: (3, 3)}])
def test_rpc_grinding_answers_alike_on_sockets_and_in_virtual_time(proto: str, programs) -> None:
    with RpcTestServer(programs, proto=proto) as srv:
        info, grind = asyncio.run(run(FlowOp(identify_flow("127.0.0.1", srv.port, proto, NO_PMAP))))
    model_srv = RpcTestServer(programs, proto=proto)  # its logic only; never started
    try:
        net = SimTransport({(proto, srv.port): RpcModel(model_srv)})
        answers: list[object] = []
        op = FlowOp(identify_flow("127.0.0.1", srv.port, proto, NO_PMAP))
        op.start(net, lambda value, error: answers.append(error or value))
        net.run_until(lambda: bool(answers))
    finally:
        model_srv.stop()
    ((sim_info, sim_grind),) = answers  # type: ignore[misc]
    want_prog = min(programs)  # the table lists nfs (100003) before nfs_acl (100227)
    assert info is not None and (info.program, info.lowver, info.highver) == (
        want_prog,
        *programs[want_prog],
    )
    assert sim_info == info
    assert (sim_grind.outcome, sim_grind.program) == (grind.outcome, grind.program)


def test_rpc_grinding_runs_as_a_post_processor_inside_the_runner() -> None:
    """The driver's special case is gone: run_post with the registry's rpc-grind names the
    program (status, RPC #100024, versions 1-1) as nmap's rpc-grind does."""
    from servprobe import post

    with RpcTestServer({100024: (1, 1)}, proto="udp") as srv:
        r = ServiceResult("127.0.0.1", srv.port, "udp", service="rpcbind", method="probed", conf=10)
        chosen = post.applicable(r)
        assert [p.id for p in chosen] == ["rpc-grind"]
        asyncio.run(run_post(r, chosen, None, None, None, options=NO_PMAP))
    assert (r.service, r.version, r.extrainfo, r.rpc and r.rpc.via) == (
        "status",
        "1",
        "RPC #100024",
        "grind",
    )
    # nmap's rpc-grind portrule: `nmap.version_intensity() >= 7`; below it nothing runs
    low = ServiceResult("127.0.0.1", 9, "udp", service="rpcbind", method="probed", conf=10)
    asyncio.run(
        run_post(
            low,
            post.applicable(low),
            None,
            None,
            None,
            options=EngineOptions(intensity=6, rpc_portmapper=False),
        )
    )
    assert (low.service, low.rpc) == ("rpcbind", None)


# -- the wake-up a freed post-processor slot owes -----------------------------------------


class _Once(Machine):
    def start(self, now: float) -> list[bytes]:
        return [b"x"]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        self.done = True
        return []


def test_a_post_processors_freed_slot_wakes_the_waiting_machine() -> None:
    """Fails (checked) when _Slots.slot() ignores the key budget.release() returns (the old
    `self.budget.release()` alone): `woken` stays empty and the waiting machine would only
    retry at its own next deadline."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def go() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), lambda: sock.sendto(b"y", sock.recvfrom(64)[1]))
        budget = ConnBudget(1)
        waiting = new_key()
        woken: list[int] = []
        r = ServiceResult("127.0.0.1", port, "tcp", service="x", method="probed", conf=10)

        class M(_Once):
            proto = "udp"

            def start(self, now: float) -> list[bytes]:
                # the post-processor holds the host's only slot: a machine asks and queues
                assert not budget.try_acquire(waiting)
                return [b"x"]

        p = PostProcessor("t", Trigger(proto="udp"), M, "test")
        await run_post(r, [p], budget, None, None, wake=woken.append, transport=AsyncioTransport())
        loop.remove_reader(sock.fileno())
        assert budget.used == 0
        return woken

    try:
        woken = asyncio.run(go())
    finally:
        sock.close()
    assert len(woken) == 1


def test_udp_post_exchange_resends_in_virtual_time() -> None:
    """UDP_RESEND in the Exchange: a lost first datagram is sent again (virtual time)."""

    class DropFirst(ServerModel):
        seen = 0

        def on_data(self, conn, payload, since, tls):
            self.seen += 1
            return [] if self.seen == 1 else [(0.0, struct.pack(">I", 7))]

    class M(_Once):
        proto = "udp"

    r = ServiceResult("127.0.0.1", 7, "udp", service="x")
    model = DropFirst()
    log = _sim_exchange(7, M(r), {("udp", 7): model})
    assert model.seen == 2 and "no answer yet: resending" in log


def test_the_rpc_post_processor_runs_in_virtual_time_too() -> None:
    """post.rpc's machine on the simulator gives what run_post gives on sockets (above):
    the same flow, only the transport differs."""
    from servprobe.post import rpc as rpc_post
    from servprobe.post.base import apply

    model_srv = RpcTestServer({100024: (1, 1)}, proto="udp")
    try:
        r = ServiceResult("127.0.0.1", 700, "udp", service="rpcbind", method="probed", conf=10)
        m = rpc_post.RpcMachine(r)
        net = SimTransport({("udp", 700): RpcModel(model_srv)})
        ended: list[BaseException | None] = []
        m.begin(PostEnv(NO_PMAP, net), lambda text: None, ended.append)
        net.run_until(lambda: bool(ended))
    finally:
        model_srv.stop()
    finding = m.finish()
    assert ended == [None] and finding is not None
    apply(r, finding)
    assert (r.service, r.version, r.extrainfo, r.rpc and r.rpc.via) == (
        "status",
        "1",
        "RPC #100024",
        "grind",
    )
    # a fixed virtual clock: the result's time is the simulator's wall(), not the machine's
    assert r.finished == net.wall()
