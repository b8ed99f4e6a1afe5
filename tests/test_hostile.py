"""Hostile networks: one real CLI scan (`python -m servprobe`) over every scenario of
tests/hostile.py at once, then one assertion per scenario.

Bounds (generous, for a loaded 2-core machine; see docs/robustness.md):
  the whole scan      < SCAN_BOUND seconds (every scenario runs in parallel)
  any one service     < PORT_BOUND seconds from the scan's start to its final result
  peak RSS of the scan process < RSS_BOUND_MB (a 100 MB flood must not be buffered)
and every output stays well-formed: XML parses (and validates against nmap.dtd when
xmllint is installed), every JSON line parses, normal output has no control characters.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hostile import (
    NMAP_PROBES,
    HostileServers,
    candidate_404_backtrackers,
    run_bounded,
)

pytestmark = pytest.mark.slow

SCAN_BOUND = 120.0
PORT_BOUND = 90.0
RSS_BOUND_MB = 300
NMAP_DTD = Path("/usr/share/nmap/nmap.dtd")
# C0 controls but \n and \t, DEL, C1 controls: none may reach a terminal or a text file raw
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class ScanOutcome:
    def __init__(self, servers: HostileServers, tmp: Path) -> None:
        self.servers = servers
        self.tmp = tmp
        self.xml = tmp / "scan.xml"
        self.jsonl = tmp / "scan.jsonl"
        self.normal = tmp / "scan.txt"
        self.store = tmp / "scan.sqlite"
        argv = [
            sys.executable, "-m", "servprobe", "-sV", "-sT", "-sU", "-Pn", "-n",
            "-p", servers.ports_arg(), "127.0.0.1",
            "-oX", str(self.xml), "-oJ", str(self.jsonl), "-oN", str(self.normal),
            "--store", str(self.store), "--no-progress",
        ]
        self.code, self.seconds, self.rss_kb, self.stdout, self.stderr = run_bounded(
            argv, timeout=SCAN_BOUND + 120
        )
        self.lines = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line]
        self.start = next(x["start"] for x in self.lines if x.get("type") == "start")
        self.ports = {
            (x["proto"], x["port"]): x for x in self.lines if x.get("type") == "port"
        }

    def result(self, name: str) -> dict:
        s = self.servers.scenarios[name]
        return self.ports[(s.proto, s.port)]


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory):
    backtrack = None
    if NMAP_PROBES.exists():
        found = candidate_404_backtrackers()
        backtrack = found[0].response if found else None
    tmp = tmp_path_factory.mktemp("hostile")
    with HostileServers(backtrack_response=backtrack) as servers:
        outcome = ScanOutcome(servers, tmp)
        yield outcome


SCENARIOS = ["drip", "flood", "reset", "halfclose", "endless", "binary", "tlsgarbage",
             "tlsstall", "ansi", "nulbanner", "badutf8", "xmlmeta", "udpamp", "udpnasty"]


def test_scan_finishes_in_bounds(scan: ScanOutcome) -> None:
    # the figures for docs/robustness.md (pytest -s shows them)
    print(f"\nscan: {scan.seconds:.1f}s, peak RSS {scan.rss_kb / 1024:.0f} MB, exit {scan.code}")
    for name, s in sorted(scan.servers.scenarios.items()):
        r = scan.ports.get((s.proto, s.port))
        took = f"{r['finished'] - scan.start:6.1f}s" if r else "  none"
        what = (r or {}).get("display_service") or (r or {}).get("service")
        print(f"  {name:<11} {s.proto} {took}  {what}")
    assert scan.code == 0, scan.stderr[-3000:]
    assert scan.seconds < SCAN_BOUND, f"scan took {scan.seconds:.0f}s"
    assert scan.rss_kb / 1024 < RSS_BOUND_MB, f"peak RSS {scan.rss_kb / 1024:.0f} MB"
    assert "Traceback" not in scan.stderr


@pytest.mark.parametrize("name", [*SCENARIOS, "backtrack"])
def test_each_scenario_reported_in_time(scan: ScanOutcome, name: str) -> None:
    if name not in scan.servers.scenarios:
        pytest.fail(f"scenario {name} not started (nmap's probe file missing?)")
    r = scan.result(name)
    assert r["state"] in ("open", "open|filtered")
    took = r["finished"] - scan.start
    assert took < PORT_BOUND, f"{name}: final result after {took:.0f}s"


def test_flood_is_not_buffered(scan: ScanOutcome) -> None:
    r = scan.result("flood")
    # what is kept of a response is capped (nmap: 4096 bytes), so is the fingerprint
    assert r["fingerprint"] is None or len(r["fingerprint"]) < 20_000


def test_xml_is_well_formed_and_complete(scan: ScanOutcome) -> None:
    root = ET.parse(scan.xml).getroot()
    assert root.tag == "nmaprun"
    assert root.find("runstats/finished") is not None
    listed = {(p.get("protocol"), int(p.get("portid", "0"))) for p in root.iter("port")}
    want = {(s.proto, s.port) for s in scan.servers.scenarios.values()}
    assert want <= listed


def test_xml_validates_against_nmap_dtd(scan: ScanOutcome) -> None:
    proc = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(NMAP_DTD), str(scan.xml)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_libnmap_reads_the_xml(scan: ScanOutcome) -> None:
    import libnmap.parser as libnmap  # the test extra: installed by make test
    report = libnmap.NmapParser.parse_fromfile(str(scan.xml))
    (host,) = report.hosts
    assert len(host.services) >= len(scan.servers.scenarios)


def test_json_lines_all_parse_and_end_with_summary(scan: ScanOutcome) -> None:
    assert scan.lines[0]["type"] == "start"
    assert scan.lines[-1]["type"] == "summary"
    assert not scan.lines[-1]["interrupted"]
    want = {(s.proto, s.port) for s in scan.servers.scenarios.values()}
    assert want <= set(scan.ports)


def test_text_outputs_carry_no_raw_control_bytes(scan: ScanOutcome) -> None:
    for what, text in (("-oN", scan.normal.read_text(encoding="utf-8")), ("stdout", scan.stdout),
                       ("stderr", scan.stderr)):
        bad = _CONTROL.findall(text)
        assert not bad, f"{what} carries raw control characters {bad[:5]!r}"


def test_hostile_banner_fields_are_escaped_not_dropped(scan: ScanOutcome) -> None:
    r = scan.result("ansi")
    assert r["service"] == "ssh"
    version = r["version"] or ""
    assert "<script>" in version and "\\x1b" in version and "\x1b" not in version
    assert "\x00" not in version
    root = ET.parse(scan.xml).getroot()
    port = next(p for p in root.iter("port") if p.get("portid") == str(r["port"]))
    svc = port.find("service")
    assert svc is not None and "<script>" in (svc.get("version") or "")


def test_store_holds_every_result(scan: ScanOutcome) -> None:
    from servprobe.store import Store

    with Store.open(scan.store, create=False) as store:
        info = store.scan()
        assert info.status == "done"
        keys = {(k[1], k[2]) for k in store.finished(info.id)}
    assert {(s.proto, s.port) for s in scan.servers.scenarios.values()} <= keys


def test_backtracking_404_is_answered_quickly_by_the_matcher() -> None:
    """The crafted near-miss costs stdlib `re` minutes; our matcher answers within a bound."""
    import servprobe

    db = servprobe.load_db(str(NMAP_PROBES), prefilter=False)
    for b in candidate_404_backtrackers():
        t = time.monotonic()
        db.match("FourOhFourRequest", b.response)
        took = time.monotonic() - t
        assert took < 10, f"line {b.line}: {took:.1f}s"
