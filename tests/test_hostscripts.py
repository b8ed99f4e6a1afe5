"""SMB findings as host scripts, laid out as nmap lays out its hostrule SMB scripts.

nmap runs smb-os-discovery, smb2-security-mode and smb2-time once per host: normal output
prints them under "Host script results:" after "Service Info:", XML in <hostscript> after
<ports>. Checked against a live nmap run on the suite's smbd (SMB1 enabled, so
smb-os-discovery has something to say), with the same servprobe scan written as -oN, -oX and
-oJ. Expected layout and texts come from nmap's run; the XML is validated with xmllint
against Debian's nmap.dtd and read back by python-libnmap (an independent reader).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import daemons_post
from daemons import HOST, Daemon
from servprobe.report.normal import host_report
from servprobe.result import HostResult, ScanRun, ScriptResult, ServiceResult

pytestmark = pytest.mark.daemon

NMAP_DTD = Path("/usr/share/nmap/nmap.dtd")
SMB_SCRIPTS = "smb-os-discovery,smb2-security-mode,smb2-time"


@pytest.fixture(scope="module")
def smb() -> Iterator[Daemon]:
    with daemons_post.smbd(smb1=True) as d:
        yield d


@pytest.fixture(scope="module")
def runs(smb: Daemon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("hostscripts")
    port = str(smb.port)
    nmap = subprocess.Popen(
        [
            "nmap",
            "-sV",
            "-Pn",
            "-p",
            port,
            "--script",
            SMB_SCRIPTS,
            "--script-args",
            f"smbport={port}",
            "-oN",
            str(tmp / "nmap.txt"),
            "-oX",
            str(tmp / "nmap.xml"),
            HOST,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ours = subprocess.run(
        [
            sys.executable,
            "-m",
            "servprobe",
            "-Pn",
            "-p",
            port,
            "--no-store",
            "-oN",
            str(tmp / "ours.txt"),
            "-oX",
            str(tmp / "ours.xml"),
            "-oJ",
            str(tmp / "ours.jsonl"),
            HOST,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ours.returncode == 0, ours.stderr
    _, err = nmap.communicate(timeout=300)
    assert nmap.returncode == 0, err
    return {
        "tmp": tmp,
        "nmap_txt": (tmp / "nmap.txt").read_text(),
        "ours_txt": (tmp / "ours.txt").read_text(),
    }


def _block(text: str) -> tuple[list[str], list[str]]:
    """(lines between the port table and "Host script results:", the host-script lines)."""
    lines = [line.rstrip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("PORT "))
    at = lines.index("Host script results:")
    end = next(i for i in range(at + 1, len(lines)) if not lines[i].startswith("|"))
    return lines[start:at], lines[at + 1 : end]


def _scripts(lines: list[str]) -> dict[str, list[str]]:
    """Host-script lines by script id: {"smb2-time": ["| smb2-time:", "|   date: ..."]}."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in lines:
        body = line[2:]
        if not body.startswith(" ") and ":" in body:
            current = body.split(":", 1)[0]
        out.setdefault(current, []).append(line)
    return out


def test_normal_output_layout_is_nmaps(runs: dict[str, Any]) -> None:
    nm_before, nm_host = _block(runs["nmap_txt"])
    our_before, our_host = _block(runs["ours_txt"])
    # nmap: the port line, "Service Info:", an empty line, then the block; no SMB script under the port
    assert nm_before[-1] == our_before[-1] == ""
    assert nm_before[-2].startswith("Service Info:") and our_before[-2].startswith("Service Info:")
    assert not any(line.startswith("|") for line in our_before), our_before
    nm, ours = _scripts(nm_host), _scripts(our_host)
    # deliberate difference: nmap prints host scripts in the order they finished (it varies
    # run to run); ours are sorted by id, so two scans diff cleanly. Ours add smb-ntlm-info.
    assert set(nm) <= set(ours), (list(nm), list(ours))
    assert list(ours) == sorted(ours)
    assert ours["smb2-security-mode"] == nm["smb2-security-mode"]
    assert [line.split(":")[0] for line in ours["smb2-time"]] == [
        line.split(":")[0] for line in nm["smb2-time"]
    ]
    # the block ends with "|_" on each script's last line, like nmap's
    assert all(v[-1].startswith("|_") for v in ours.values())


def test_xml_hostscript_validates_and_matches_nmap(runs: dict[str, Any]) -> None:
    tmp = runs["tmp"]
    check = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(NMAP_DTD), str(tmp / "ours.xml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    hosts = {}
    for name in ("nmap", "ours"):
        host = ET.parse(tmp / f"{name}.xml").getroot().find("host")
        assert host is not None
        children = [c.tag for c in host]
        # <hostscript> follows <ports> (and precedes <times>), as nmap writes it
        assert children.index("hostscript") == children.index("ports") + 1, children
        assert not host.findall("ports/port/script"), f"{name}: SMB scripts under the port"
        hosts[name] = {s.get("id"): s for s in host.findall("hostscript/script")}
    nm, ours = hosts["nmap"], hosts["ours"]
    assert set(nm) <= set(ours), (set(nm), set(ours))
    assert ours["smb2-security-mode"].get("output") == nm["smb2-security-mode"].get("output")
    assert [(e.tag, e.get("key")) for e in ours["smb2-security-mode"].iter()] == [
        (e.tag, e.get("key")) for e in nm["smb2-security-mode"].iter()
    ]
    assert [e.get("key") for e in ours["smb2-time"]] == [e.get("key") for e in nm["smb2-time"]]


def test_libnmap_reads_hostscripts(runs: dict[str, Any]) -> None:
    from libnmap.parser import NmapParser

    report = {}
    for name in ("nmap", "ours"):
        host = NmapParser.parse_fromfile(str(runs["tmp"] / f"{name}.xml")).hosts[0]
        report[name] = {s["id"]: s for s in host.scripts_results}
        assert not host.services[0].scripts_results
    assert set(report["nmap"]) <= set(report["ours"])
    assert (
        report["ours"]["smb2-time"]["elements"].keys()
        == report["nmap"]["smb2-time"]["elements"].keys()
    )
    assert "Samba" in report["ours"]["smb-os-discovery"]["output"]


def test_jsonl_host_line_carries_hostscripts(runs: dict[str, Any], smb: Daemon) -> None:
    lines = [json.loads(line) for line in (runs["tmp"] / "ours.jsonl").read_text().splitlines()]
    port = next(x for x in lines if x["type"] == "port" and x["port"] == smb.port)
    host = next(x for x in lines if x["type"] == "host")
    assert not set(port["scripts"]) & set(host["hostscripts"])
    # the same ids nmap put in <hostscript>
    nm = ET.parse(runs["tmp"] / "nmap.xml").getroot().findall("host/hostscript/script")
    assert {s.get("id") for s in nm} <= set(host["hostscripts"])
    assert "Samba" in host["hostscripts"]["smb-os-discovery"]["elements"]["NativeLanMan"]


def test_a_host_script_is_printed_once_per_host() -> None:
    """nmap runs a hostrule script once per host: two SMB ports (139 and 445) must not print
    it twice. Fails (checked) when HostResult.host_scripts() keeps every port's copy
    (`found.setdefault` → a list append)."""
    sec = ScriptResult(
        "smb2-security-mode",
        "\n  311:\n    Message signing enabled but not required",
        {"311": ["Message signing enabled but not required"]},
    )
    ports = [
        ServiceResult(
            "192.0.2.1", p, "tcp", service="microsoft-ds", method="probed", conf=10, scripts=[sec]
        )
        for p in (139, 445)
    ]
    host = HostResult("192.0.2.1", status="up", ports=ports)
    text = "\n".join(host_report(host, ScanRun(args=[], start=0.0)))
    assert text.count("smb2-security-mode:") == 1
    assert text.index("Host script results:") < text.index("smb2-security-mode:")
