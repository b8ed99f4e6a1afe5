"""The grinder over real sockets against the Python test servers of tests/rpcservers.py."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpcservers import RpcTestServer
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.result import ServiceResult
from servprobe.rpc.grind import Outcome
from servprobe.rpc.grinder import grind_port, grind_result, rpc_scan, wants_grind
from servprobe.rpc.table import default_table

NO_PMAP = EngineOptions(rpc_portmapper=False)


def run(coro):
    return asyncio.run(coro)


def _late_program() -> int:
    """A program far down the whole table, so a grind has to walk most of it."""
    nums = default_table().numbers()
    return nums[int(len(nums) * 0.9)]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_high_port_program_found_with_version_range(proto: str) -> None:
    prog = _late_program()
    with RpcTestServer({prog: (3, 7)}, proto=proto) as srv:
        res = run(grind_port("127.0.0.1", srv.port, proto))
    assert res.outcome is Outcome.FOUND
    assert (res.program, res.lowver, res.highver) == (prog, 3, 7)


def test_udp_packet_loss_is_survived() -> None:
    with RpcTestServer({100024: (1, 1)}, proto="udp", drop_first=20) as srv:
        res = run(grind_port("127.0.0.1", srv.port, "udp"))
        assert srv.dropped == 20
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100024, 1, 1)
    assert res.calls > res.replies  # retransmits happened


def test_udp_loss_of_everything_at_first_still_identifies() -> None:
    # More drops than one window: the canary and every first call are lost at least once.
    with RpcTestServer({100021: (1, 4)}, proto="udp", drop_first=40) as srv:
        res = run(grind_port("127.0.0.1", srv.port, "udp", window=32))
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100021, 1, 4)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_malformed_replies_give_up_quickly(proto: str) -> None:
    with RpcTestServer({}, proto=proto, mode="garbage") as srv:
        t0 = time.monotonic()
        res = run(grind_port("127.0.0.1", srv.port, proto, window=16))
        elapsed = time.monotonic() - t0
        seen = srv.calls
    assert res.outcome is Outcome.NOT_RPC
    assert seen <= 16 + 2  # one window at most, not the ~1700-program table
    assert elapsed < 10  # generous: it must not wait for timeouts


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_wrong_xids_are_not_rpc(proto: str) -> None:
    with RpcTestServer({}, proto=proto, mode="wrong-xid") as srv:
        res = run(grind_port("127.0.0.1", srv.port, proto, window=8))
        assert srv.calls <= 8 + 1
    assert res.outcome is Outcome.NOT_RPC


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_promiscuous_server_yields_no_false_identity(proto: str) -> None:
    with RpcTestServer({}, proto=proto, mode="promiscuous") as srv:
        res = run(grind_port("127.0.0.1", srv.port, proto))
        before = ServiceResult("127.0.0.1", srv.port, proto, service="rpcbind", method="probed")
        out = run(grind_result(before, NO_PMAP))
    assert res.outcome is Outcome.PROMISCUOUS and res.program is None
    assert out.rpc is None
    assert out.service == "rpcbind"
    assert out.extrainfo == "accepts any RPC program"


def test_rpc_version_3_only_server_is_denied() -> None:
    with RpcTestServer({}, proto="udp", mode="rpc-v3") as srv:
        res = run(grind_port("127.0.0.1", srv.port, "udp", window=8))
    assert res.outcome is Outcome.DENIED and "version mismatch" in res.detail


def test_auth_sys_only_server_is_identified() -> None:
    with RpcTestServer({100005: (1, 3)}, proto="tcp", mode="auth-sys") as srv:
        res = run(grind_port("127.0.0.1", srv.port, "tcp"))
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100005, 1, 3)


def test_tcp_fragmented_replies_are_reassembled() -> None:
    with RpcTestServer({100003: (2, 4)}, proto="tcp", fragment_size=5) as srv:
        res = run(grind_port("127.0.0.1", srv.port, "tcp"))
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100003, 2, 4)


def test_tcp_server_closing_connections_is_reconnected() -> None:
    with RpcTestServer({100011: (1, 2)}, proto="tcp", close_after=10) as srv:
        res = run(grind_port("127.0.0.1", srv.port, "tcp", window=4))
        conns = srv.connections
    assert (res.outcome, res.program) == (Outcome.FOUND, 100011)
    assert conns >= 2


def test_server_ignoring_versions_reports_no_version() -> None:
    with RpcTestServer({100024: (1, 1)}, proto="udp", ignore_versions=True) as srv:
        before = ServiceResult("127.0.0.1", srv.port, "udp", service="rpcbind", method="probed")
        out = run(grind_result(before, NO_PMAP))
    assert out.service == "status" and out.version is None and out.extrainfo == "RPC #100024"
    assert out.rpc is not None and (out.rpc.lowver, out.rpc.highver) == (0, 0)


def test_silent_udp_port_ends_without_walking_the_table() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        t0 = time.monotonic()
        res = run(grind_port("127.0.0.1", sock.getsockname()[1], "udp", window=8))
        elapsed = time.monotonic() - t0
    finally:
        sock.close()
    assert res.outcome is Outcome.NO_RESPONSE
    assert res.calls <= 8 * 4 + 8
    assert elapsed < 30


def test_closed_tcp_port() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = run(grind_port("127.0.0.1", port, "tcp"))
    assert res.outcome is Outcome.CLOSED


def test_grind_result_reports_like_nmap() -> None:
    with RpcTestServer({100024: (1, 1)}, proto="tcp") as srv:
        before = ServiceResult("127.0.0.1", srv.port, "tcp", service="rpcbind", method="probed",
                               conf=10)
        assert wants_grind(before)
        out = run(grind_result(before, NO_PMAP))
    assert (out.service, out.version, out.extrainfo) == ("status", "1", "RPC #100024")
    assert out.display_version() == "1 (RPC #100024)"
    assert out.rpc.via == "grind" and out.rpc.program == 100024
    assert not wants_grind(out)
    assert before.service == "rpcbind"  # a new result, the input is untouched


def test_wants_grind_rules() -> None:
    r = ServiceResult("127.0.0.1", 1, "tcp", service="rpcbind", method="probed")
    assert wants_grind(r)
    assert not wants_grind(ServiceResult("127.0.0.1", 1, "tcp", service="http", method="probed"))
    assert not wants_grind(ServiceResult("127.0.0.1", 1, "tcp", service="rpcbind", method="table"))
    assert not wants_grind(
        ServiceResult("127.0.0.1", 1, "tcp", service="rpcbind", method="probed", state="closed")
    )


def test_rpc_scan_names_rpc_ports_and_leaves_others() -> None:
    with (RpcTestServer({100024: (1, 1)}, proto="udp") as a,
          RpcTestServer({100003: (2, 3)}, proto="tcp") as b,
          RpcTestServer({}, proto="tcp", mode="garbage") as c):
        targets = [ServiceTarget("127.0.0.1", a.port, "udp"), ServiceTarget("127.0.0.1", b.port, "tcp"),
                   ServiceTarget("127.0.0.1", c.port, "tcp")]
        out = run(rpc_scan(targets, NO_PMAP))
    assert [(r.port, r.service, r.version) for r in out] == [
        (a.port, "status", "1"), (b.port, "nfs", "2-3"), (c.port, None, None)]


def test_rpc_service_scan_streams_results() -> None:
    from servprobe.rpc.grinder import rpc_service_scan

    with RpcTestServer({100024: (1, 1)}, proto="udp") as a, \
            RpcTestServer({100005: (1, 3)}, proto="tcp") as b:
        async def feed():
            for t in (ServiceTarget("127.0.0.1", a.port, "udp"),
                      ServiceTarget("127.0.0.1", b.port, "tcp")):
                await asyncio.sleep(0)
                yield t

        got: list[ServiceResult] = []
        run(rpc_service_scan(feed(), NO_PMAP, got.append))
    assert sorted((r.port, r.service, r.version, r.extrainfo) for r in got) == sorted(
        [(a.port, "status", "1", "RPC #100024"), (b.port, "mountd", "1-3", "RPC #100005")])


def test_module_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from servprobe.rpc.__main__ import main

    with RpcTestServer({100024: (1, 1)}, proto="udp") as srv:
        assert main(["--no-portmapper", "127.0.0.1", f"{srv.port}/udp"]) == 0
    out = capsys.readouterr().out
    assert f"{srv.port}/udp" in out and "status" in out and "1 (RPC #100024)" in out
    assert "via grind" in out
    with pytest.raises(SystemExit) as exc:
        main(["127.0.0.1", "70000/tcp"])
    assert exc.value.code == 2


def test_closed_udp_port_ends_on_icmp_unreachable() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = run(grind_port("127.0.0.1", port, "udp"))
    assert res.outcome is Outcome.CLOSED and "unreachable" in res.detail
