"""Post-processor findings in every output: nmap's `| id:` / `|_` lines under the port, XML
<script>/<elem>/<table> valid against nmap.dtd and read back by python-libnmap as
scripts_results, a `scripts` object in JSON Lines; hostile text stays inert; the
--version-scripts flag rejects unknown ids with exit 2 naming them."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from servprobe.commands.scan import main as scan_main
from servprobe.report.jsonl import JsonLinesReporter
from servprobe.report.normal import NormalReporter
from servprobe.report.xml import XmlReporter
from servprobe.result import HostResult, ScanRun, ScriptResult, ServiceResult

DTD = Path("/usr/share/nmap/nmap.dtd")
HOSTILE = "\x1b[31mred\x00 <tag> & \"q\" ]]> --"


def _run_with_scripts() -> tuple[ScanRun, HostResult]:
    run = ScanRun(args=["-p", "5672"], start=1_700_000_000.0, scan_types=["connect"], ports_spec={"tcp": "5672,6379"})
    amqp = ServiceResult("127.0.0.1", 5672, "tcp", "open", "syn-ack", "amqp", "RabbitMQ", "3.10.8", "0-9",
                         method="probed", conf=10)
    amqp.scripts = [ScriptResult("amqp-info", "\n  capabilities: \n    basic.nack: YES\n  locales: en_US",
                                 {"capabilities": {"basic.nack": "YES"}, "locales": "en_US", "list": ["a", "b"]})]
    evil = ServiceResult("127.0.0.1", 6379, "tcp", "open", "syn-ack", "http", method="probed", conf=10)
    evil.scripts = [ScriptResult("http-server-header", HOSTILE, {HOSTILE: HOSTILE})]
    host = HostResult("127.0.0.1", [], "up", "user-set", ports=[amqp, evil], starttime=run.start, endtime=run.start + 1)
    run.hosts = [host]
    run.end = run.start + 2
    return run, host


def _write(reporter_cls: type, **kw: object) -> str:
    run, host = _run_with_scripts()
    buf = io.StringIO()
    rep = reporter_cls(buf, **kw)
    rep.start(run)
    for r in host.ports:
        rep.port(r)
    rep.host(host)
    rep.finish(run)
    return buf.getvalue()


def test_normal_output_lines() -> None:
    text = _write(NormalReporter, file_mode=True)
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("5672/tcp"))
    assert lines[i + 1 : i + 5] == ["| amqp-info:", "|   capabilities:", "|     basic.nack: YES", "|_  locales: en_US"]
    j = next(n for n, line in enumerate(lines) if line.startswith("6379/tcp"))
    assert lines[j + 1].startswith("|_http-server-header: \\x1b[31mred\\x00")
    assert "\x1b" not in text and "\x00" not in text


def test_xml_valid_and_read_by_libnmap(tmp_path: Path) -> None:
    from libnmap.parser import NmapParser

    xml = _write(XmlReporter)
    path = tmp_path / "scan.xml"
    path.write_text(xml)
    assert shutil.which("xmllint") and DTD.is_file(), "xmllint and nmap.dtd are needed (APT_PACKAGES)"
    lint = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr
    report = NmapParser.parse_fromfile(str(path))
    svc = {s.port: s for s in report.hosts[0].services}
    (amqp,) = svc[5672].scripts_results
    assert amqp["id"] == "amqp-info"
    assert amqp["output"] == "\n  capabilities: \n    basic.nack: YES\n  locales: en_US"
    assert amqp["elements"]["capabilities"] == {"basic.nack": "YES"}
    assert amqp["elements"]["locales"] == "en_US"
    (evil,) = svc[6379].scripts_results
    assert evil["id"] == "http-server-header" and "<tag>" in evil["output"]


def test_jsonl_scripts_object() -> None:
    lines = [json.loads(line) for line in _write(JsonLinesReporter).splitlines()]
    port = next(d for d in lines if d["type"] == "port" and d["port"] == 5672)
    assert port["scripts"]["amqp-info"]["elements"]["capabilities"] == {"basic.nack": "YES"}
    assert port["scripts"]["amqp-info"]["output"].endswith("locales: en_US")


def test_flag_rejects_unknown_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert scan_main(["--no-store", "--version-scripts", "amqp-info,bogus-script", "-p", "1", "127.0.0.1"]) == 2
    err = capsys.readouterr().err
    assert "'bogus-script'" in err and "Traceback" not in err
