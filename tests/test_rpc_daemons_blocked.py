"""Pure grinding of a real rpc.statd whose portmapper is really unreachable.

statd registers with an rpcbind started here, then that rpcbind is stopped: statd keeps
serving, port 111 refuses connections, and the grinder must name statd on its own. (Its own
module, so its network namespace holds no rpcbind of test_rpc_daemons.py.)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemons import _stop
from rpcservers import HOST, Netns, _tcp_open, rpcbind, statd
from servprobe.engine.options import EngineOptions
from servprobe.result import ServiceResult
from servprobe.rpc.grinder import grind_result, query_portmapper

pytestmark = [pytest.mark.daemon, pytest.mark.usefixtures("inside_netns")]


def test_statd_ground_when_rpcbind_is_unreachable(netns: Netns) -> None:
    # in the module's own network namespace port 111 is ours alone, whatever the host runs
    with rpcbind(netns) as rb:
        with statd(netns) as s:
            _stop(rb)
            assert not _tcp_open(111)
            assert asyncio.run(query_portmapper(HOST, timeout=1.0)) is None
            for proto in ("tcp", "udp"):
                before = ServiceResult(HOST, s.port, proto, service="rpcbind", method="probed")
                out = asyncio.run(grind_result(before, EngineOptions()))
                assert (out.service, out.version, out.extrainfo) == ("status", "1", "RPC #100024")
                assert out.rpc is not None and out.rpc.via == "grind"
