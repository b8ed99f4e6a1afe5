"""Issue 11, bug 8: services ended by an internal error are counted in the end-of-scan summary.

One service's machine raising ends only that service (tests/test_engine_bugs.py); here the
count of such services reaches the summary: normal output's "servprobe done:" line and -oN's
last comment, XML's runstats `summary` (nmap.dtd has no count attribute: the text carries it,
and the document still validates), and JSON Lines' summary `failed_services`. The fault is
injected by a monkeypatched ServiceMachine step raising on one real daemon's port (redis),
next to another real daemon (memcached) that must stay identified.
"""

from __future__ import annotations

import io
import json
import subprocess
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from daemons import HOST, Daemon
from servprobe import cli
from servprobe.engine.state import ServiceMachine
from servprobe.report.base import Outputs
from servprobe.report.jsonl import JsonLinesReporter
from servprobe.report.normal import NormalReporter
from servprobe.report.xml import XmlReporter
from servprobe.result import HostResult, ScanRun, ServiceResult

NMAP_DTD = Path("/usr/share/nmap/nmap.dtd")
FAILED = "1 service failed (internal error, details with -d)"


def _validate(path: Path) -> None:
    check = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(NMAP_DTD), str(path)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_reporters_count_failed_services(tmp_path: Path) -> None:
    """A result the engine marked failed (ServiceResult.error) is counted once, even when its
    port is streamed and listed again with its host. Fails (checked) when Outputs.host() is
    not where the count is made (counting in Outputs.port() as well gives 2)."""
    xml_path, jsonl_path = tmp_path / "x.xml", tmp_path / "j.jsonl"
    normal = io.StringIO()
    xml_fh, jsonl_fh = xml_path.open("w"), jsonl_path.open("w")
    out = Outputs(
        [
            NormalReporter(normal),
            XmlReporter(xml_fh, close=True),
            JsonLinesReporter(jsonl_fh, close=True),
        ]
    )
    run = ScanRun(
        args=["-p", "1,2"], start=1.0e9, ports_spec={"tcp": "1-2"}, scan_types=["connect"]
    )
    bad = ServiceResult(
        HOST, 1, "tcp", service="tcpmux", error="internal error identifying 127.0.0.1:1/tcp: boom"
    )
    good = ServiceResult(HOST, 2, "tcp", service="ssh", product="OpenSSH", method="probed", conf=10)
    out.start(run)
    out.port(bad)
    out.port(good)
    host = HostResult(HOST, status="up", ports=[bad, good])
    run.hosts.append(host)
    out.host(host)
    run.end = run.start + 2
    out.finish(run)
    assert normal.getvalue().splitlines()[-1].endswith(FAILED)
    _validate(xml_path)
    finished = ET.parse(xml_path).getroot().find("runstats/finished")
    assert finished is not None and FAILED in finished.get("summary", "")
    summary = json.loads(jsonl_path.read_text().splitlines()[-1])
    assert summary["type"] == "summary" and summary["failed_services"] == 1


def test_no_failure_no_note(tmp_path: Path) -> None:
    """A clean run's summary stays nmap's: no failure note, failed_services 0."""
    normal = io.StringIO()
    out = Outputs([NormalReporter(normal)])
    run = ScanRun(args=[], start=1.0e9)
    out.start(run)
    out.host(HostResult(HOST, status="up", ports=[ServiceResult(HOST, 2, "tcp", service="ssh")]))
    out.finish(run)
    assert "failed" not in normal.getvalue().splitlines()[-1]


@pytest.mark.daemon
def test_scan_summary_counts_the_failed_service(
    redis_daemon: Daemon, memcached_daemon: Daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """End to end through the command: redis's machine raises, memcached's does not."""
    bad, good = redis_daemon.port, memcached_daemon.port
    real = ServiceMachine._apply

    def broken(self: ServiceMachine, *a: object, **kw: object) -> None:
        if self.target.port == bad:
            raise RuntimeError("injected fault")
        return real(self, *a, **kw)

    monkeypatch.setattr(ServiceMachine, "_apply", broken)
    xml_path, jsonl_path = tmp_path / "x.xml", tmp_path / "j.jsonl"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        rc = cli.main(
            [
                "-Pn",
                "-p",
                f"{bad},{good}",
                "--no-store",
                "-oX",
                str(xml_path),
                "-oJ",
                str(jsonl_path),
                HOST,
            ]
        )
    assert rc == 0
    text = stdout.getvalue()
    assert text.splitlines()[-1].endswith(FAILED), text
    assert "memcached" in text  # the other service is still identified
    _validate(xml_path)
    finished = ET.parse(xml_path).getroot().find("runstats/finished")
    assert finished is not None and FAILED in finished.get("summary", "")
    lines = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert lines[-1]["failed_services"] == 1
    port = next(x for x in lines if x["type"] == "port" and x["port"] == bad)
    assert "injected fault" in (port["error"] or "")
