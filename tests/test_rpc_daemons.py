"""RPC grinding against real daemons: Debian's rpcbind and rpc.statd (nfs-common) on loopback.

rpcbind always binds port 111 (TCP and UDP), so it runs in a network namespace this module
creates (conftest's netns, see rpcservers.py), where every test body runs too: a host's own
rpcbind/statd are neither used nor disturbed. rpc.statd runs there without kernel NFS with
--no-notify, its state in a temporary directory, on a free port, registered with rpcbind.

The portmapper "blocked" by option: EngineOptions(rpc_portmapper=False) must not consult
111 at all. Really unreachable: tests/test_rpc_daemons_blocked.py.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpcservers import HOST, Netns, RpcTestServer, Statd, pmap_registration, rpcbind, statd
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.result import ServiceResult
from servprobe.rpc.grinder import grind_result, query_portmapper, rpc_scan, wants_grind

pytestmark = [pytest.mark.daemon, pytest.mark.usefixtures("inside_netns")]


@pytest.fixture(scope="module")
def rpc_env(netns: Netns) -> Iterator[Statd]:
    with rpcbind(netns), statd(netns) as s:
        yield s


def rpc_result(port: int, proto: str) -> ServiceResult:
    """What version detection reports for a SunRPC port before grinding."""
    return ServiceResult(HOST, port, proto, service="rpcbind", method="probed", conf=10)


def run(coro):
    return asyncio.run(coro)


def test_portmapper_dump_lists_statd(rpc_env: Statd) -> None:
    pmap = run(query_portmapper(HOST))
    assert pmap is not None
    assert pmap.programs_at("tcp", rpc_env.port) == {100024: [1]}
    assert pmap.programs_at("udp", rpc_env.port) == {100024: [1]}
    assert pmap.programs_at("tcp", 111)[100000] == [2, 3, 4]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_statd_named_via_portmapper(rpc_env: Statd, proto: str) -> None:
    before = rpc_result(rpc_env.port, proto)
    assert wants_grind(before)
    out = run(grind_result(before, EngineOptions()))
    assert (out.service, out.version, out.extrainfo) == ("status", "1", "RPC #100024")
    assert out.rpc is not None and out.rpc.via == "portmapper"
    assert (out.rpc.program, out.rpc.lowver, out.rpc.highver) == (100024, 1, 1)
    assert not wants_grind(out)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rpcbind_itself_named(rpc_env: Statd, proto: str) -> None:
    out = run(grind_result(rpc_result(111, proto), EngineOptions()))
    assert (out.service, out.version, out.extrainfo) == ("rpcbind", "2-4", "RPC #100000")
    assert out.display_version() == "2-4 (RPC #100000)"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_statd_ground_with_portmapper_disabled(rpc_env: Statd, proto: str) -> None:
    out = run(grind_result(rpc_result(rpc_env.port, proto), EngineOptions(rpc_portmapper=False)))
    assert (out.service, out.version, out.extrainfo) == ("status", "1", "RPC #100024")
    assert out.rpc is not None and out.rpc.via == "grind"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_rpcbind_ground_with_portmapper_disabled(rpc_env: Statd, proto: str) -> None:
    out = run(grind_result(rpc_result(111, proto), EngineOptions(rpc_portmapper=False)))
    assert (out.service, out.version, out.rpc.via) == ("rpcbind", "2-4", "grind")


def test_rpc_scan_over_rpcbind_and_statd(rpc_env: Statd) -> None:
    targets = [ServiceTarget(HOST, 111, "tcp"), ServiceTarget(HOST, rpc_env.port, "udp"),
               ServiceTarget(HOST, rpc_env.port, "tcp")]
    out = run(rpc_scan(targets, EngineOptions()))
    assert [(r.port, r.proto, r.service, r.version, r.rpc.via) for r in out] == [
        (111, "tcp", "rpcbind", "2-4", "portmapper"),
        (rpc_env.port, "udp", "status", "1", "portmapper"),
        (rpc_env.port, "tcp", "status", "1", "portmapper"),
    ]


@pytest.mark.slow
def test_same_answers_as_nmap_sV(rpc_env: Statd) -> None:
    """nmap -sV (its RPCCheck probe + rpc-grind) and our grinder agree on every column.
    (nmap is started from inside the namespace, so it scans the namespace's loopback.)"""
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    nmap = shutil.which("nmap")
    if nmap is None:
        pytest.fail("nmap is expected on the test machine (Makefile APT_PACKAGES)")
    ports = [111, rpc_env.port]
    xml = subprocess.run(
        [nmap, "-n", "-Pn", "-sT", "-sV", "-p", ",".join(map(str, ports)), "-oX", "-", HOST],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout
    theirs = {}
    for port in ET.fromstring(xml).iter("port"):
        svc = port.find("service")
        assert svc is not None
        theirs[int(port.get("portid"))] = (svc.get("name"), svc.get("version"), svc.get("extrainfo"))
    for portmapper in (False, True):
        for port in ports:
            out = run(grind_result(rpc_result(port, "tcp"), EngineOptions(rpc_portmapper=portmapper)))
            assert (out.service, out.version, out.extrainfo) == theirs[port]


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_ipv6_loopback_via_rpcbind_v4_dump_and_grind(rpc_env: Statd, proto: str) -> None:
    pmap = run(query_portmapper("::1"))
    assert pmap is not None and pmap.source.endswith(("v4", "v3"))  # v2 knows no IPv6
    assert pmap.programs_at(proto, rpc_env.port) == {100024: [1]}
    for portmapper, via in ((True, "portmapper"), (False, "grind")):
        r = ServiceResult("::1", rpc_env.port, proto, service="rpcbind", method="probed")
        out = run(grind_result(r, EngineOptions(rpc_portmapper=portmapper)))
        assert (out.service, out.version, out.rpc.via) == ("status", "1", via)


def test_stale_registration_is_checked_and_port_ground(rpc_env: Statd) -> None:
    # The portmapper says nlockmgr lives there; the port really serves mountd.
    with RpcTestServer({100005: (1, 3)}, proto="udp") as srv, \
            pmap_registration(100021, 4, "udp", srv.port):
        pmap = run(query_portmapper(HOST))
        assert pmap is not None and pmap.programs_at("udp", srv.port) == {100021: [4]}
        out = run(grind_result(rpc_result(srv.port, "udp"), EngineOptions()))
    assert (out.service, out.version, out.rpc.via) == ("mountd", "1-3", "grind")


def test_two_programs_registered_on_one_port_report_the_lowest(rpc_env: Statd) -> None:
    with RpcTestServer({100003: (2, 4), 100227: (2, 3)}, proto="tcp") as srv, \
            pmap_registration(100227, 3, "tcp", srv.port), \
            pmap_registration(100003, 3, "tcp", srv.port):
        for _ in range(3):
            out = run(grind_result(rpc_result(srv.port, "tcp"), EngineOptions()))
            # the port's own PROG_MISMATCH range (2-4) wins over the registered version (3)
            assert (out.service, out.version, out.rpc.via) == ("nfs", "2-4", "portmapper")
        out = run(grind_result(rpc_result(srv.port, "tcp"), EngineOptions(rpc_portmapper=False)))
        assert (out.service, out.version, out.rpc.via) == ("nfs", "2-4", "grind")


def test_registered_but_silent_port_trusts_the_portmapper(rpc_env: Statd) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((HOST, 0))
        port = silent.getsockname()[1]
        with pmap_registration(100011, 1, "udp", port), pmap_registration(100011, 2, "udp", port):
            out = run(grind_result(rpc_result(port, "udp"), EngineOptions()))
    assert (out.service, out.version, out.extrainfo, out.rpc.via) == (
        "rquotad", "1-2", "RPC #100011", "portmapper")
