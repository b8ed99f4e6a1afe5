"""ike-version against strongSwan's charon in its own network namespace, beside nmap -sV -sU.

IKE's ports are fixed (500, 4500), so charon runs inside a namespace this test creates, and
both scanners run there too (`ip netns exec`). charon binds 0.0.0.0:500 in that namespace, so
neither nmap nor servprobe can send from port 500 there; charon answers the sender's port.
nmap runs with `--script ike-version` so the script's output is written.
Expected values: nmap's live run (service, product), dpkg (the installed version), and
strongSwan's published vendor ID (882fe56d…: MD5 of "strongSwan", as ike-scan and
strongSwan's own logs name it) plus the capability IDs of RFC 3706 (DPD) and XAUTH.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import daemons_post
import rpcservers
from daemons import HOST, upstream_version

pytestmark = pytest.mark.daemon

STRONGSWAN_VID = "882fe56d6fd20dbc2251613b2ebe5beb"


@pytest.fixture(scope="module")
def ns() -> Iterator[rpcservers.Netns]:
    with rpcservers.netns() as n:
        yield n


def _ours(ns: rpcservers.Netns, out: Path, env: dict[str, str] | None = None) -> ET.Element:
    proc = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns.name,
            sys.executable,
            "-m",
            "servprobe",
            "-sU",
            "-Pn",
            "-p",
            "500",
            "--no-store",
            "-oX",
            str(out),
            HOST,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    port = ET.parse(out).getroot().find("host/ports/port")
    assert port is not None, out.read_text()
    return port


@pytest.fixture(scope="module")
def scans(
    ns: rpcservers.Netns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ike")
    with daemons_post.charon(ns) as d:
        nmap = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns.name,
                "nmap",
                "-sV",
                "-sU",
                "-Pn",
                "-p",
                "500",
                "--script",
                "ike-version",
                "-oX",
                str(tmp / "nmap.xml"),
                HOST,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ours = _ours(ns, tmp / "ours.xml")
        _, err = nmap.communicate(timeout=400)
        assert nmap.returncode == 0, err
        theirs = ET.parse(tmp / "nmap.xml").getroot().find("host/ports/port")
        assert theirs is not None
        yield {"ours": ours, "nmap": theirs, "charon": d}


def _elems(port: ET.Element, sid: str) -> dict[str, Any]:
    script = port.find(f"script[@id='{sid}']")
    assert script is not None, ET.tostring(port)
    out: dict[str, Any] = {e.get("key"): e.text for e in script.findall("elem")}
    out.update({t.get("key"): [e.text for e in t.findall("elem")] for t in script.findall("table")})
    return out


def test_service_and_product_equal_nmaps(scans: dict[str, Any]) -> None:
    ours, nm = scans["ours"].find("service"), scans["nmap"].find("service")
    assert ours is not None and nm is not None
    assert (
        scans["ours"].find("state").get("state")
        == scans["nmap"].find("state").get("state")
        == "open"
    )
    assert ours.get("name") == nm.get("name") == "isakmp"
    assert ours.get("product") == nm.get("product") == "strongSwan"


def test_version_not_invented(scans: dict[str, Any]) -> None:
    """Deliberate difference: nmap prints strongSwan "4.3.6", fixed text of its probe-file
    line for strongSwan's notification; this charon is another release (dpkg) and its vendor ID
    names no version, so ours has none."""
    nm = scans["nmap"].find("service")
    installed = upstream_version(scans["charon"].version)
    assert nm.get("version") and nm.get("version") != installed
    assert scans["ours"].find("service").get("version") is None


def test_vendor_ids_equal_nmaps(scans: dict[str, Any]) -> None:
    """The attributes (capability IDs) are nmap's, in the order charon sent them.
    Deliberate difference: nmap's vendor_id reads "strongSwan 4.3.6", but strongSwan's ID is
    the MD5 of plain "strongSwan" in every release (this charon is the dpkg version), so ours
    says "strongSwan" and no version."""
    nm, ours = _elems(scans["nmap"], "ike-version"), _elems(scans["ours"], "ike-version")
    assert ours["attributes"] == nm["attributes"] == ["XAUTH", "Dead Peer Detection v1.0"]
    assert nm["vendor_id"].startswith("strongSwan ")
    assert nm["vendor_id"].split()[1] != upstream_version(scans["charon"].version)
    assert ours["vendor_id"] == "strongSwan"
    assert STRONGSWAN_VID not in ours.get("unmatched_ids", [])


def test_no_vendor_claim_without_its_id(tmp_path: Path) -> None:
    """charon with send_vendor_id = no sends only capability IDs: ike-version must not name
    strongSwan. Fails (checked) when IkeMachine.finish() takes the product from any named ID
    (`product = product or hit[1]` → `product = product or "strongSwan"`)."""
    # a namespace of its own: the module's charon holds port 500 in the other one
    with rpcservers.netns() as ns, daemons_post.charon(ns, send_vendor_id=False):
        port = _ours(ns, tmp_path / "ours.xml")
    found = _elems(port, "ike-version")
    assert "vendor_id" not in found
    assert {"XAUTH", "Dead Peer Detection v1.0"} <= set(found["attributes"])


def _answer(cookie: bytes, payload_bytes: bytes, first: int = 13) -> bytes:
    head = cookie + b"\x11" * 8 + bytes([first, 0x10, 2, 0]) + b"\x00" * 4
    return head + (28 + len(payload_bytes)).to_bytes(4, "big") + payload_bytes


@pytest.mark.parametrize(
    "body",
    [
        b"",  # a header only
        b"\x00\x00\x00\x02",  # a payload shorter than its own header
        b"\x00\x00\xff\xff" + b"\x00" * 10,  # a length past the datagram
        b"\x0d\x00\x00\x04" * 200,  # an endless chain of empty vendor IDs
    ],
)
def test_malformed_answers_end_cleanly(body: bytes) -> None:
    """Truncated or looping payload chains: no exception, no vendor claimed."""
    from servprobe.post.ike import IkeMachine
    from servprobe.result import ServiceResult

    m = IkeMachine(ServiceResult(HOST, 500, "udp", service="isakmp"))
    m.start(1.0)
    m.feed(_answer(m.cookie, body), 1.0)
    assert m.done
    f = m.finish()
    assert f is None or "vendor_id" not in (f.script.elements if f.script else {})


def test_an_answer_to_another_cookie_is_ignored() -> None:
    """A datagram not answering our initiator cookie (a stray or spoofed one) must not be
    read. Fails (checked) when IkeMachine.feed() drops its `data[:8] == self.cookie` test."""
    from servprobe.post.ike import IkeMachine
    from servprobe.result import ServiceResult

    m = IkeMachine(ServiceResult(HOST, 500, "udp", service="isakmp"))
    m.start(1.0)
    vid = bytes.fromhex(STRONGSWAN_VID)
    m.feed(_answer(b"\x01" * 8, b"\x00\x00" + (4 + len(vid)).to_bytes(2, "big") + vid), 1.0)
    assert not m.done and m.finish() is None
