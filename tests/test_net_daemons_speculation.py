"""Speculation keeps nmap's answers on real Debian daemons (tests/daemons.py), and is faster.

Every daemon of the set is scanned twice with nmap's database: one probe at a time in nmap's
order (options.sequential) and with speculation (the default). Service, version, tunnel,
method and confidence must be identical; the speculative scan must take less time.
"""

from __future__ import annotations

import time

import pytest

from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import scan_services

NMAP_DB = "/usr/share/nmap/nmap-service-probes"
pytestmark = [
    pytest.mark.daemon,
    pytest.mark.slow,
]


def test_daemons_same_answers_with_and_without_speculation():
    import servprobe
    from daemons import all_daemons, endpoints

    db = servprobe.load_db(NMAP_DB)
    with all_daemons() as running:
        eps = endpoints(running)
        targets = [ServiceTarget(d.host, e.port, e.proto) for d, e in eps]
        t0 = time.monotonic()
        spec = scan_services(db, targets, EngineOptions(rpc_grind=False))
        t_spec = time.monotonic() - t0
        t0 = time.monotonic()
        seq = scan_services(db, targets, EngineOptions(rpc_grind=False, sequential=True))
        t_seq = time.monotonic() - t0
    assert len(spec) == len(seq) == len(targets)
    for (_, e), a, b in zip(eps, spec, seq, strict=True):
        got = (a.display_service(), a.display_version(), a.method, a.conf, a.state)
        want = (b.display_service(), b.display_version(), b.method, b.conf, b.state)
        assert got == want, e.name
    by_name = {e.name: r for (_, e), r in zip(eps, spec, strict=True)}
    assert by_name["sshd"].service == "ssh"
    assert by_name["nginx-https"].display_service() == "ssl/http"
    assert t_spec < t_seq
