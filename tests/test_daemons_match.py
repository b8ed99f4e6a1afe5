"""Live daemons' answers to single probes, identified by servprobe's matcher on nmap's DB.

No scan engine involved: each case sends one probe of /usr/share/nmap/nmap-service-probes
to a real daemon (as nmap would, on a fresh connection, inside TLS for the `ssl` layer),
runs `ProbeDB.match()` on the reply and checks service, product, version, extrainfo and
hostname against what the installed Debian packages imply (tests/daemons.expected_identity).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import capture_responses as cap
import daemons
import servprobe
from servprobe.probes.model import ProbeDB

pytestmark = pytest.mark.daemon

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")

# (fixture, endpoint, layer, probe, own_probe: the service's own probe, which tells more)
CASES = [
    ("sshd_daemon", "sshd", "tcp", "NULL", False),
    ("nginx_daemon", "nginx-http", "tcp", "GetRequest", False),
    ("nginx_daemon", "nginx-http", "tcp", "HTTPOptions", False),
    ("nginx_daemon", "nginx-https", "ssl", "GetRequest", False),
    ("vsftpd_daemon", "vsftpd", "tcp", "NULL", False),
    ("postfix_daemon", "postfix", "tcp", "NULL", False),
    ("redis_daemon", "redis", "tcp", "GetRequest", False),
    ("redis_daemon", "redis", "tcp", "redis-server", True),
    ("memcached_daemon", "memcached", "tcp", "GenericLines", False),
    ("memcached_daemon", "memcached", "tcp", "Memcache", True),
    ("memcached_daemon", "memcached-udp", "udp", "memcached", True),
    ("dnsmasq_daemon", "dnsmasq", "tcp", "DNSVersionBindReqTCP", False),
    ("dnsmasq_daemon", "dnsmasq-udp", "udp", "DNSVersionBindReq", False),
    ("postgresql_daemon", "postgresql", "tcp", "SMBProgNeg", False),
    ("stunnel_daemon", "stunnel-ssh", "ssl", "NULL", False),
    ("stunnel_daemon", "stunnel-redis", "ssl", "GetRequest", False),
]

# TLS ports answer nmap's TLS probes in plain TCP with a handshake: service "ssl"
TLS_CASES = [
    ("nginx_daemon", "nginx-https", "TLSSessionReq"),
    ("nginx_daemon", "nginx-https", "SSLSessionReq"),
    ("stunnel_daemon", "stunnel-ssh", "TLSSessionReq"),
    ("stunnel_daemon", "stunnel-redis", "SSLSessionReq"),
]


@pytest.fixture(scope="module")
def nmap_db() -> ProbeDB:
    assert NMAP_DB.exists(), f"{NMAP_DB} missing: install nmap-common (make apt)"
    return servprobe.load_db(str(NMAP_DB))


@pytest.fixture(scope="module")
def payloads() -> dict[tuple[str, str], cap.ProbeSpec]:
    return {(p.proto, p.name): p for p in cap.read_probes(NMAP_DB)}


def _exchange(d: daemons.Daemon, ep: daemons.Endpoint, layer: str, probe: cap.ProbeSpec) -> bytes:
    if layer == "udp":
        r = asyncio.run(cap.capture_udp(d.host, ep.port, probe, 5.0))
    else:
        r = asyncio.run(cap.capture_tcp(d.host, ep.port, probe, layer == "ssl", 8.0))
    assert not r.get("error"), r
    return r["data"]


@pytest.mark.parametrize(("fixture", "endpoint", "layer", "probe", "own_probe"), CASES,
                         ids=[f"{c[1]}-{c[2]}-{c[3]}" for c in CASES])
def test_live_reply_identified(request: pytest.FixtureRequest, nmap_db: ProbeDB,
                               payloads: dict, fixture: str, endpoint: str, layer: str,
                               probe: str, own_probe: bool) -> None:
    d: daemons.Daemon = request.getfixturevalue(fixture)
    ep = d.endpoint(endpoint)
    proto = "udp" if layer == "udp" else "tcp"
    data = _exchange(d, ep, layer, payloads[(proto, probe)])
    assert data, f"{endpoint} sent nothing to {probe}; daemon log:\n{d.log_text()}"
    want = daemons.expected_identity(d, ep, own_probe=own_probe)
    got = nmap_db.match(probe, data, proto)
    if want.service is None:
        assert got is None, got
        return
    assert got is not None, f"no line of nmap's DB matched {data[:200]!r}"
    assert got.service == want.service, got
    assert got.product == want.product, got
    installed = d.version if not ep.wraps else daemons.dpkg_version(daemons.PACKAGE_OF[ep.wraps])
    assert want.version_ok(got.version, installed), (got.version, want, installed)
    if not want.extrainfo_varies:
        assert got.info == want.extrainfo, got
    assert got.hostname == want.hostname, got


@pytest.mark.parametrize(("fixture", "endpoint", "probe"), TLS_CASES,
                         ids=[f"{c[1]}-{c[2]}" for c in TLS_CASES])
def test_tls_port_identified_as_ssl(request: pytest.FixtureRequest, nmap_db: ProbeDB,
                                    payloads: dict, fixture: str, endpoint: str,
                                    probe: str) -> None:
    d: daemons.Daemon = request.getfixturevalue(fixture)
    data = _exchange(d, d.endpoint(endpoint), "tcp", payloads[("tcp", probe)])
    got = nmap_db.match(probe, data)
    assert got is not None and got.service == "ssl" and not got.soft, (got, data[:64])


def test_plain_ports_do_not_look_like_tls(nmap_db: ProbeDB, payloads: dict,
                                          all_daemons: dict[str, daemons.Daemon]) -> None:
    """A plain service must not be taken for ssl (nmap issue #1400: http shown as ssl/http)."""
    probe = payloads[("tcp", "TLSSessionReq")]
    plain = [(d, ep) for d, ep in daemons.endpoints(all_daemons) if ep.proto == "tcp" and not ep.tls]

    async def ask_all() -> list[dict]:
        return await asyncio.gather(*(cap.capture_tcp(d.host, ep.port, probe, False, 3.0)
                                      for d, ep in plain))

    for (_d, ep), r in zip(plain, asyncio.run(ask_all()), strict=True):
        assert not r.get("error"), (ep.name, r)
        got = nmap_db.match("TLSSessionReq", r["data"]) if r["data"] else None
        assert got is None or got.service != "ssl", (ep.name, got)
