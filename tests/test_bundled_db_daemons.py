"""The bundled database against the real-daemon suite, through the real scan engine.

`--db bundled` must name every daemon of tests/daemons.py with the right service, product
and version -- the version the installed Debian package implies (read from dpkg, never
hard-coded). Unlike nmap's database, ours reaches the Redis and memcached versions on
non-standard ports (their generic errors are softmatches, so the engine narrows down to the
RESP and memcached probes) and recognises memcached over UDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import daemons
import servprobe
from servprobe.engine.options import EngineOptions
from servprobe.probes.model import ProbeDB
from servprobe.result import ServiceResult

pytestmark = pytest.mark.daemon

ENDPOINTS = [
    "sshd",
    "nginx-http",
    "nginx-https",
    "vsftpd",
    "postfix",
    "redis",
    "memcached",
    "memcached-udp",
    "dnsmasq",
    "dnsmasq-udp",
    "postgresql",
    "stunnel-ssh",
    "stunnel-redis",
]


@dataclass(frozen=True)
class Want:
    service: str
    product: str
    version: str | None
    info: str | None = None
    hostname: str | None = None
    tunnel: str | None = None


def expected(d: daemons.Daemon, ep: daemons.Endpoint) -> Want:
    """What the bundled DB reports, from the installed package versions."""
    name, installed, tunnel = d.name, d.version, None
    if ep.wraps:
        name, tunnel = ep.wraps, "ssl"
        installed = daemons.dpkg_version(daemons.PACKAGE_OF[name])
    up = daemons.upstream_version(installed)
    if name == "sshd":
        return Want(
            "ssh",
            "OpenSSH",
            f"{up} Debian {daemons.debian_revision(installed)}",
            "protocol 2.0",
            tunnel=tunnel,
        )
    if name == "nginx":
        return Want("http", "nginx", up, tunnel="ssl" if ep.tls else None)
    if name == "vsftpd":
        return Want("ftp", "vsftpd", up)
    if name == "postfix":
        return Want("smtp", "Postfix smtpd", None, hostname=d.extra["hostname"])
    if name == "redis":
        return Want("redis", "Redis key-value store", up, tunnel=tunnel)
    if name == "memcached":
        return Want("memcached", "Memcached", up, "UDP" if ep.proto == "udp" else None)
    if name == "dnsmasq":
        return Want("domain", "dnsmasq", up)
    if name == "postgresql":
        # Pre-authentication PostgreSQL only reveals its major release (through the source
        # line of its startup error): the major of the installed package.
        return Want("postgresql", "PostgreSQL DB", up.split(".")[0])
    raise KeyError(name)


@pytest.fixture(scope="module")
def bundled() -> ProbeDB:
    return servprobe.load_db("bundled")  # what `--db bundled` loads, prefilter included


@pytest.fixture(scope="module")
def scan(bundled: ProbeDB, all_daemons: dict[str, daemons.Daemon]) -> dict[str, ServiceResult]:
    return daemons.scan_endpoints(bundled, all_daemons, EngineOptions(version_scripts="none"))


@pytest.fixture(scope="module")
def scan_all_probes(bundled: ProbeDB,
                    all_daemons: dict[str, daemons.Daemon]) -> dict[str, ServiceResult]:
    return daemons.scan_endpoints(bundled, all_daemons, EngineOptions(intensity=9, version_scripts="none"))


def check(scan: dict[str, ServiceResult], all_daemons: dict[str, daemons.Daemon],
          endpoint: str) -> None:
    d, ep = next((d, e) for d, e in daemons.endpoints(all_daemons) if e.name == endpoint)
    want = expected(d, ep)
    r = scan.get(endpoint)
    assert r is not None, f"no result for {endpoint}"
    got = (r.service, r.product, r.version, r.hostname, r.tunnel, r.method)
    assert got == (want.service, want.product, want.version, want.hostname, want.tunnel,
                   "probed"), f"{endpoint}: {r.display_service()} {r.display_version()!r}"
    if want.info is not None:
        assert r.extrainfo == want.info, endpoint


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bundled_identifies_daemon(scan: dict[str, ServiceResult],
                                   all_daemons: dict[str, daemons.Daemon], endpoint: str) -> None:
    check(scan, all_daemons, endpoint)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_bundled_version_all_says_the_same(scan_all_probes: dict[str, ServiceResult],
                                           all_daemons: dict[str, daemons.Daemon],
                                           endpoint: str) -> None:
    """At intensity 9 (every probe, no softmatch narrowing) no other line steals a daemon."""
    check(scan_all_probes, all_daemons, endpoint)


def test_every_endpoint_covered(all_daemons: dict[str, daemons.Daemon]) -> None:
    assert sorted(e.name for _d, e in daemons.endpoints(all_daemons)) == sorted(ENDPOINTS)
