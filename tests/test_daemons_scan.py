"""The service scan engine against real daemons: exact identification from dpkg versions.

One scan (servprobe.net.driver.scan_services, nmap's database, default options) over every
endpoint of tests/daemons.py; each endpoint must come out with the service, product,
version, extrainfo, hostname and tunnel that the installed Debian packages imply
(tests/daemons.expected_identity). A second scan with --version-all (intensity 9) must say
the same, except where nmap's database itself goes wrong with more probes (VERSION_ALL_NMAP).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import daemons
import servprobe
from servprobe.engine.options import EngineOptions
from servprobe.probes.model import ProbeDB
from servprobe.result import ServiceResult

pytestmark = pytest.mark.daemon

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
SCAN_DEADLINE = 300.0  # seconds; a scan takes ~10-70 s here, nmap ~30 s for the same set
ENDPOINTS = ["sshd", "nginx-http", "nginx-https", "vsftpd", "postfix", "redis", "memcached",
             "memcached-udp", "dnsmasq", "dnsmasq-udp", "postgresql", "stunnel-ssh",
             "stunnel-redis"]


# Observed with nmap 7.93 --version-all: a probe only sent at intensity 9 draws a 132-byte
# PostgreSQL error that NULL's broad `nagios-nsca` line (128 bytes + 4) hard-matches, so nmap
# reports "nagios-nsca Nagios NSCA 9.6.0 or later" (the version and CPE left over from the
# earlier postgresql softmatch). A faithful engine reproduces the service and product.
VERSION_ALL_NMAP = {"postgresql": ("nagios-nsca", "Nagios NSCA")}


@pytest.fixture(scope="module")
def nmap_db() -> ProbeDB:
    assert NMAP_DB.exists(), f"{NMAP_DB} missing: install nmap-common (make apt)"
    return servprobe.load_db(str(NMAP_DB))


# the walk alone (the probe file's answers); post-processors are tests/test_post_*.py's
@pytest.fixture(scope="module")
def default_scan(nmap_db: ProbeDB, all_daemons: dict[str, daemons.Daemon]) -> dict[str, ServiceResult]:
    return daemons.scan_endpoints(nmap_db, all_daemons, EngineOptions(version_scripts="none"), SCAN_DEADLINE)


@pytest.fixture(scope="module")
def version_all_scan(nmap_db: ProbeDB,
                     all_daemons: dict[str, daemons.Daemon]) -> dict[str, ServiceResult]:
    return daemons.scan_endpoints(nmap_db, all_daemons, EngineOptions(intensity=9, version_scripts="none"), SCAN_DEADLINE)


def _daemon_of(running: dict[str, daemons.Daemon], endpoint: str) -> tuple[daemons.Daemon, daemons.Endpoint]:
    for d, e in daemons.endpoints(running):
        if e.name == endpoint:
            return d, e
    raise KeyError(endpoint)


def check(result: ServiceResult | None, d: daemons.Daemon, ep: daemons.Endpoint) -> None:
    want = daemons.expected_identity(d, ep)
    assert result is not None, f"no result for {ep.name}"
    where = f"{ep.name} ({ep.proto}/{ep.port}): {result.display_service()} {result.display_version()!r}"
    if want.service is None:
        assert result.method == "table" and not result.product, where
        return
    assert result.method == "probed", where
    assert result.service == want.service, where
    assert result.product == want.product, where
    installed = d.version if not ep.wraps else daemons.dpkg_version(daemons.PACKAGE_OF[ep.wraps])
    assert want.version_ok(result.version, installed), f"{where}: want {want.version!r} for {installed}"
    if not want.extrainfo_varies:
        assert result.extrainfo == want.extrainfo, where
    assert result.hostname == want.hostname, where
    assert result.tunnel == want.tunnel, where


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_identified_like_installed_package(default_scan: dict[str, ServiceResult],
                                           all_daemons: dict[str, daemons.Daemon],
                                           endpoint: str) -> None:
    d, ep = _daemon_of(all_daemons, endpoint)
    check(default_scan.get(endpoint), d, ep)


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_version_all_identifies_the_same(version_all_scan: dict[str, ServiceResult],
                                         all_daemons: dict[str, daemons.Daemon],
                                         endpoint: str) -> None:
    d, ep = _daemon_of(all_daemons, endpoint)
    if endpoint in VERSION_ALL_NMAP:
        r = version_all_scan.get(endpoint)
        assert r is not None and r.method == "probed", r
        assert (r.service, r.product) == VERSION_ALL_NMAP[endpoint], r
        return
    check(version_all_scan.get(endpoint), d, ep)


def test_every_endpoint_covered(all_daemons: dict[str, daemons.Daemon]) -> None:
    """ENDPOINTS (the parametrization) lists exactly the endpoints the daemon set has."""
    assert sorted(e.name for _d, e in daemons.endpoints(all_daemons)) == sorted(ENDPOINTS)
