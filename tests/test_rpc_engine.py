"""End to end: the engine driver's version detection finds SunRPC, then hands the port to
the grinder (real rpcbind + rpc.statd on loopback, nmap's probe database read at run time)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servprobe
from rpcservers import HOST, Netns, Statd, rpcbind, statd
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import run_service_scan
from servprobe.result import ServiceResult

pytestmark = [pytest.mark.daemon, pytest.mark.usefixtures("inside_netns")]

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")


def _db(which: str):
    if which == "nmap":
        if not NMAP_DB.exists():
            pytest.fail("nmap-common's nmap-service-probes is expected on the test machine")
        return servprobe.load_db(str(NMAP_DB))
    return servprobe.load_db("bundled")


@pytest.fixture(scope="module")
def rpc_env(netns: Netns) -> Iterator[Statd]:
    """rpcbind + rpc.statd in this module's network namespace (see rpcservers.py)."""
    with rpcbind(netns), statd(netns) as s:
        yield s


@pytest.mark.parametrize("which", ["nmap", "bundled"])
@pytest.mark.parametrize(("portmapper", "via"), [(True, "portmapper"), (False, "grind")])
def test_service_scan_names_rpc_programs(which: str, portmapper: bool, via: str,
                                         rpc_env: Statd) -> None:
    db = _db(which)
    sd = rpc_env
    targets = [ServiceTarget(HOST, 111, "tcp"), ServiceTarget(HOST, sd.port, "tcp"),
               ServiceTarget(HOST, sd.port, "udp")]
    out: list[ServiceResult] = []
    asyncio.run(run_service_scan(db, targets, EngineOptions(rpc_portmapper=portmapper),
                                 out.append))
    got = {(r.port, r.proto): (r.service, r.version, r.extrainfo, r.rpc and r.rpc.via)
           for r in out}
    assert got == {
        (111, "tcp"): ("rpcbind", "2-4", "RPC #100000", via),
        (sd.port, "tcp"): ("status", "1", "RPC #100024", via),
        (sd.port, "udp"): ("status", "1", "RPC #100024", via),
    }


def test_rpc_grind_off_leaves_version_detection_result(rpc_env: Statd) -> None:
    db = servprobe.load_db(str(NMAP_DB))
    out: list[ServiceResult] = []
    asyncio.run(run_service_scan(db, [ServiceTarget(HOST, rpc_env.port, "tcp")],
                                 EngineOptions(rpc_grind=False), out.append))
    assert [(r.service, r.rpc) for r in out] == [("rpcbind", None)]
