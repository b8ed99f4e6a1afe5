"""servprobe and `nmap -sV` side by side on the same real daemons: the answers must agree.

One nmap run (`nmap -sV -sT -Pn -n -p PORTS 127.0.0.1 -oX -`, nmap's own database) over every TCP
endpoint of tests/daemons.py, while servprobe scans the same ports with the same database and
default options. Per port, service, product, version, extrainfo and tunnel must be identical;
a separate test compares hostname, ostype and CPEs.

UDP is left out on purpose: on dnsmasq's UDP port nmap 7.93 says "unknown", its fingerprint
showing the replies to RPCCheck, DNSVersionBindReq and DNSStatusRequest run together as the
answer to DNSStatusRequest (the version.bind answer never gets matched against its own
probe). That is not behaviour worth copying; UDP identification is checked against the
installed packages in test_daemons_scan.py instead.
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
TCP_ENDPOINTS = ["sshd", "nginx-http", "nginx-https", "vsftpd", "postfix", "redis", "memcached",
                 "dnsmasq", "postgresql", "stunnel-ssh", "stunnel-redis"]


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


def nmap_fields(xml_text: str) -> dict[int, Fields]:
    """Per TCP port, the <service> of nmap's XML (service None when nmap gave none)."""
    out: dict[int, Fields] = {}
    for port in ET.fromstring(xml_text).iter("port"):
        if port.get("protocol") != "tcp":
            continue
        svc = port.find("service")
        if svc is None:
            out[int(port.get("portid", "0"))] = Fields(None, None, None, None, None)
            continue
        name = svc.get("name")
        out[int(port.get("portid", "0"))] = Fields(
            None if name == "unknown" and svc.get("method") == "table" else name,
            svc.get("product"), svc.get("version"), svc.get("extrainfo"), svc.get("tunnel"),
            svc.get("hostname"), svc.get("ostype"),
            tuple(c.text or "" for c in svc.findall("cpe")),
        )
    return out


def our_fields(r: ServiceResult) -> Fields:
    # nmap prints "unknown" for a port table guess it has no name for; method table +
    # no name on our side is the same answer
    return Fields(r.service, r.product, r.version, r.extrainfo, r.tunnel, r.hostname,
                  r.ostype, tuple(r.cpes))


@pytest.fixture(scope="module")
def side_by_side(all_daemons: dict[str, daemons.Daemon]) -> dict[str, tuple[Fields, Fields]]:
    """{endpoint: (servprobe's fields, nmap's fields)}, from one concurrent run of each."""
    nmap = shutil.which("nmap")
    assert nmap, "nmap is not installed (make apt)"
    assert NMAP_DB.exists(), f"{NMAP_DB} missing (make apt)"
    pairs = [(d, e) for d, e in daemons.endpoints(all_daemons) if e.proto == "tcp"]
    ports = ",".join(str(e.port) for _d, e in pairs)
    # nmap first, in the background: it is the slow one; servprobe runs meanwhile
    t0 = time.monotonic()
    # -sT: a connect scan needs no raw sockets; it changes nothing in version detection
    proc = subprocess.Popen([nmap, "-sV", "-sT", "-Pn", "-n", "-p", ports, "127.0.0.1", "-oX", "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = servprobe.load_db(str(NMAP_DB))
        targets = [ServiceTarget(d.host, e.port, "tcp") for d, e in pairs]
        ours = {r.port: r for r in daemons.servprobe_scan(db, targets, EngineOptions(), 300.0)}
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
        assert e.port in ours, f"servprobe gave no result for {e.name}"
        assert e.port in theirs, f"nmap gave no result for {e.name}:\n{out}"
        result[e.name] = (our_fields(ours[e.port]), theirs[e.port])
    return result


@pytest.mark.parametrize("endpoint", TCP_ENDPOINTS)
def test_same_answer_as_nmap(side_by_side: dict[str, tuple[Fields, Fields]],
                             endpoint: str) -> None:
    ours, theirs = side_by_side[endpoint]
    assert ours.main == theirs.main, (
        f"{endpoint}: (service, product, version, extrainfo, tunnel)\n"
        f"  servprobe {ours.main}\n  nmap      {theirs.main}")


@pytest.mark.parametrize("endpoint", TCP_ENDPOINTS)
def test_same_host_details_as_nmap(side_by_side: dict[str, tuple[Fields, Fields]],
                                   endpoint: str) -> None:
    """Hostname, OS type and CPEs as nmap reports them (nmap keeps one CPE per part a/h/o)."""
    ours, theirs = side_by_side[endpoint]
    assert (ours.hostname, ours.ostype, ours.cpes) == (theirs.hostname, theirs.ostype,
                                                       theirs.cpes), endpoint


def test_every_tcp_endpoint_compared(all_daemons: dict[str, daemons.Daemon]) -> None:
    names = sorted(e.name for _d, e in daemons.endpoints(all_daemons) if e.proto == "tcp")
    assert names == sorted(TCP_ENDPOINTS)
