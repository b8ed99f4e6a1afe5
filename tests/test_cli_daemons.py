"""The scanner command against real Debian daemons (tests/daemons.py): the XML validates
against nmap.dtd, python-libnmap reads the same service fields as our JSON Lines, and the
normal output names the products."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.daemon

DTD = Path("/usr/share/nmap/nmap.dtd")


def test_daemon_scan_outputs_agree(tmp_path: Path, sshd_daemon, nginx_daemon, redis_daemon, vsftpd_daemon, postfix_daemon) -> None:
    daemons = [sshd_daemon, nginx_daemon, redis_daemon, vsftpd_daemon, postfix_daemon]
    ports = sorted({ep.port for d in daemons for ep in d.endpoints if ep.proto == "tcp"})
    xml, jsonl = tmp_path / "d.xml", tmp_path / "d.jsonl"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run(
        [sys.executable, "-m", "servprobe", "--no-store", "-n", "-p", ",".join(map(str, ports)),
         "-oX", str(xml), "-oJ", str(jsonl), "127.0.0.1"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert shutil.which("xmllint") and DTD.is_file(), "xmllint and nmap.dtd are needed (APT_PACKAGES)"
    lint = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(xml)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr

    objs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    jports = {o["port"]: o for o in objs if o["type"] == "port"}
    assert set(jports) == set(ports)
    assert all(o["state"] == "open" for o in jports.values())
    assert jports[sshd_daemon.port]["product"] == "OpenSSH"
    assert "OpenSSH" in proc.stdout and "nginx" in proc.stdout

    from libnmap.parser import NmapParser

    (host,) = NmapParser.parse_fromfile(str(xml)).hosts
    assert {s.port for s in host.services} == set(ports)
    for svc in host.services:
        j = jports[svc.port]
        d = svc.service_dict
        assert svc.state == j["state"]
        assert d.get("name") == (j["service"] or "unknown")
        for field in ("product", "version", "extrainfo", "ostype", "hostname"):
            assert d.get(field) == j[field], (svc.port, field, d, j)
        assert d.get("tunnel") == j["tunnel"]
        assert d.get("cpelist", []) == j["cpes"]
