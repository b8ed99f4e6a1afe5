"""servprobe and `nmap -sV` side by side on the same real daemons: the answers must agree.

One nmap run (`nmap -sV -sT -sU -Pn -n -p T:...,U:... 127.0.0.1 -oX -`, nmap's own database)
over every endpoint of tests/daemons.py, TCP and UDP, while servprobe scans the same ports
with the same database and default options. Per port, service, product, version, extrainfo
and tunnel must be identical; a separate test compares hostname, ostype and CPEs.
-sT needs no raw sockets; -sU does (root, as in CI).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

import daemons
import servprobe
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.result import ServiceResult

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
NMAP_TIMEOUT = 900  # seconds; nmap needs ~1-2 min here, more on a loaded CI machine
ENDPOINTS = ["sshd", "nginx-http", "nginx-https", "vsftpd", "postfix", "redis", "memcached",
             "memcached-udp", "dnsmasq", "dnsmasq-udp", "postgresql", "stunnel-ssh",
             "stunnel-redis"]


@dataclass(frozen=True, slots=True)
class Fields:
    service: str | None
    product: str | None
    version: str | None
    extrainfo: str | None
    tunnel: str | None
    hostname: str | None = None
    ostype: str | None = None
    cpes: tuple[str, ...] = ()

    @property
    def main(self) -> tuple:
        return (self.service, self.product, self.version, self.extrainfo, self.tunnel)


def nmap_fields(xml_text: str) -> dict[tuple[str, int], Fields]:
    """Per (proto, port), the <service> of nmap's XML (service None when nmap gave none)."""
    out: dict[tuple[str, int], Fields] = {}
    for port in ET.fromstring(xml_text).iter("port"):
        key = (port.get("protocol", ""), int(port.get("portid", "0")))
        svc = port.find("service")
        if svc is None:
            out[key] = Fields(None, None, None, None, None)
            continue
        name = svc.get("name")
        out[key] = Fields(
            None if name == "unknown" and svc.get("method") == "table" else name,
            svc.get("product"), svc.get("version"), svc.get("extrainfo"), svc.get("tunnel"),
            svc.get("hostname"), svc.get("ostype"),
            tuple(c.text or "" for c in svc.findall("cpe")),
        )
    return out


def our_fields(r: ServiceResult) -> Fields:
    # nmap's "unknown" by port table is our table guess without a product: no answer
    name = None if r.method == "table" and not r.product else r.service
    return Fields(name, r.product, r.version, r.extrainfo, r.tunnel, r.hostname,
                  r.ostype, tuple(r.cpes))


@pytest.fixture(scope="module")
def side_by_side(all_daemons: dict[str, daemons.Daemon]) -> dict[str, tuple[Fields, Fields]]:
    """{endpoint: (servprobe's fields, nmap's fields)}, from one concurrent run of each."""
    nmap = shutil.which("nmap")
    assert nmap, "nmap is not installed (make apt)"
    assert NMAP_DB.exists(), f"{NMAP_DB} missing (make apt)"
    pairs = daemons.endpoints(all_daemons)
    ports = ",".join([*(f"T:{e.port}" for _d, e in pairs if e.proto == "tcp"),
                      *(f"U:{e.port}" for _d, e in pairs if e.proto == "udp")])
    # nmap first, in the background: it is the slow one; servprobe runs meanwhile
    t0 = time.monotonic()
    proc = subprocess.Popen([nmap, "-sV", "-sT", "-sU", "-Pn", "-n", "-p", ports, "127.0.0.1",
                             "-oX", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = servprobe.load_db(str(NMAP_DB))
        targets = [ServiceTarget(d.host, e.port, e.proto) for d, e in pairs]
        ours = {(r.proto, r.port): r
                for r in daemons.servprobe_scan(db, targets, EngineOptions(version_scripts="none"), 300.0)}
        ours_wall = time.monotonic() - t0
        out, err = proc.communicate(timeout=NMAP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"nmap failed ({proc.returncode}): {err}"
    theirs = nmap_fields(out)
    print(f"servprobe {ours_wall:.1f} s, nmap {time.monotonic() - t0:.1f} s")
    result = {}
    for _d, e in pairs:
        key = (e.proto, e.port)
        assert key in ours, f"servprobe gave no result for {e.name}"
        assert key in theirs, f"nmap gave no result for {e.name}:\n{out}"
        result[e.name] = (our_fields(ours[key]), theirs[key])
    return result


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_answer_as_nmap(side_by_side: dict[str, tuple[Fields, Fields]],
                             endpoint: str) -> None:
    ours, theirs = side_by_side[endpoint]
    assert ours.main == theirs.main, (
        f"{endpoint}: (service, product, version, extrainfo, tunnel)\n"
        f"  servprobe {ours.main}\n  nmap      {theirs.main}")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_same_host_details_as_nmap(side_by_side: dict[str, tuple[Fields, Fields]],
                                   endpoint: str) -> None:
    """Hostname, OS type and CPEs as nmap reports them (nmap keeps one CPE per part a/h/o)."""
    ours, theirs = side_by_side[endpoint]
    assert (ours.hostname, ours.ostype, ours.cpes) == (theirs.hostname, theirs.ostype,
                                                       theirs.cpes), endpoint


def test_every_endpoint_compared(all_daemons: dict[str, daemons.Daemon]) -> None:
    names = sorted(e.name for _d, e in daemons.endpoints(all_daemons))
    assert names == sorted(ENDPOINTS)
