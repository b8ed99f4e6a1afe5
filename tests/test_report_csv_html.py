"""-oC (CSV) and -oH (HTML) from real scans of loopback listeners, hostile banners included.

CSV: RFC 4180 (CRLF rows, quotes doubled), read back by Python's csv module and by pandas,
cell values equal to what the listeners sent. HTML: loaded in Debian's headless Chromium,
driven over WebDriver (chromedriver, a tiny HTTP client below): it renders, the filter and the
sort work, a screenshot is taken into the test's tmp dir, and hostile banners (<script>,
event-handler attributes, markup breaking out of a table cell) stay text: no script of
theirs runs, no element of theirs exists. Interrupted scans still write both files.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback_listeners import Listener
from servprobe.report.html import render
from servprobe.result import HostResult, ScanRun, ScriptResult, ServiceResult

SERVPROBE = [sys.executable, "-m", "servprobe", "--no-store", "--no-progress"]
PROBES = r"""
Probe TCP NULL q||
totalwaitms 1500
match evil m|^EVIL ([^\r\n]*)\r\n| p/EvilServer/ v/1.0/ i/$1/
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]Debian-(\S+)\r\n| p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/ cpe:/a:openbsd:openssh:$2/

Probe TCP SlowHello q|hello\r\n|
rarity 1
totalwaitms 30000
match echo m|^hello| p/echo/
"""
HOSTILE = [
    "<script>window.pwned=1</script>",
    '"><img src=x onerror="window.pwned=2">',
    "</td></tr></table><svg onload=window.pwned=3><iframe src=//example.invalid>",
    'a,b "quoted" ;x',
    '=HYPERLINK("//example.invalid","x")',  # a spreadsheet formula
]
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
UNKNOWN_BANNER = b"<script>window.pwned=4</script>\x1b[31m unknown\r\n"  # no match: fingerprint


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Listener]]:
    s = {f"evil{i}": Listener(b"EVIL " + text.encode() + b"\r\n") for i, text in enumerate(HOSTILE)}
    s["ssh"] = Listener(SSH_BANNER)
    s["unknown"] = Listener(UNKNOWN_BANNER)
    yield s
    for b in s.values():
        b.sock.close()


@pytest.fixture(scope="module")
def scanned(servers: dict[str, Listener], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scan of every listener, written as CSV, HTML and JSON Lines."""
    d = tmp_path_factory.mktemp("report")
    (d / "probes").write_text(PROBES)
    ports = ",".join(str(b.port) for b in servers.values())
    out = {"csv": d / "scan.csv", "html": d / "scan.html", "jsonl": d / "scan.jsonl", "dir": d}
    res = subprocess.run(
        [*SERVPROBE, "--db", str(d / "probes"), "--version-intensity", "0", "-p", ports, "127.0.0.1",
         "-oC", str(out["csv"]), "-oH", str(out["html"]), "-oJ", str(out["jsonl"])],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return out


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_rfc4180_read_back(scanned: dict[str, Path], servers: dict[str, Listener]) -> None:
    raw = scanned["csv"].read_bytes()
    # RFC 4180 §2: every record ends in CRLF; a field with a quote is quoted, quotes doubled
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert b'"a,b ""quoted"" ;x"' in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert list(rows[0]) == [
        "host", "hostname", "proto", "port", "state", "service", "product", "version",
        "extrainfo", "tunnel", "method", "conf", "cpe", "unfinished",
    ]
    by_port = {int(r["port"]): r for r in rows}
    assert set(by_port) == {b.port for b in servers.values()}
    for i, text in enumerate(HOSTILE):
        r = by_port[servers[f"evil{i}"].port]
        assert (r["host"], r["proto"], r["state"], r["product"], r["version"]) == (
            "127.0.0.1", "tcp", "open", "EvilServer", "1.0")
        # exactly what the listener sent; a would-be formula defused with a leading quote
        assert r["extrainfo"] == ("'" + text if text.startswith("=") else text)
    ssh = by_port[servers["ssh"].port]
    assert (ssh["product"], ssh["version"], ssh["cpe"]) == (
        "OpenSSH", "9.2p1 Debian 2", "cpe:/a:openbsd:openssh:9.2p1")

    import pandas

    frame = pandas.read_csv(scanned["csv"], dtype=str, keep_default_na=False)
    assert len(frame) == len(rows)
    assert sorted(frame["extrainfo"][frame["product"] == "EvilServer"]) == sorted(
        "'" + t if t.startswith("=") else t for t in HOSTILE)


# -- a tiny WebDriver client for Debian's chromedriver ----------------------------------------------


class Browser:
    """chromedriver on a loopback port, one headless Chromium session (W3C WebDriver)."""

    def __init__(self, workdir: Path) -> None:
        for binary in ("chromium", "chromedriver"):
            assert shutil.which(binary), f"{binary} missing: make test installs Debian's chromium and chromium-driver"
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.log = workdir / "chromedriver.log"
        self.proc = subprocess.Popen(
            ["chromedriver", f"--port={self.port}", "--allowed-ips=127.0.0.1", f"--log-path={self.log}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._req("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        profile = tempfile.mkdtemp(dir=workdir, prefix="chromium-")
        args = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--window-size=1280,1400",
        ]
        caps = {"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": args}}}}
        self.sid = self._req("POST", "/session", caps)["sessionId"]

    def _req(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._req(method, f"/session/{self.sid}{path}", body)

    def js(self, script: str) -> Any:
        return self.cmd("POST", "/execute/sync", {"script": script, "args": []})

    def element(self, css: str) -> str:
        found = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def close(self) -> None:
        try:
            self._req("DELETE", f"/session/{self.sid}")
        finally:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("browser"))
    yield b
    b.close()


VISIBLE = "return Array.from(document.querySelectorAll('#ports tbody tr')).filter(r => !r.hidden).length"
FOREIGN = """
const handlers = Array.from(document.querySelectorAll('*')).filter(
    e => Array.from(e.attributes).some(a => a.name.toLowerCase().startsWith('on')));
return {
  pwned: typeof window.pwned,
  scripts: document.scripts.length,
  handlers: handlers.length,
  imgs: document.querySelectorAll('img, iframe, object, embed').length,
  svgs: document.querySelectorAll('svg').length,
  tables: document.querySelectorAll('table').length,
  text: document.getElementById('ports').textContent,
};
"""


def test_html_in_headless_chromium(scanned: dict[str, Path], servers: dict[str, Listener], browser: Browser) -> None:
    page = scanned["html"].read_text(encoding="utf-8")
    # self-contained: nothing to fetch (the SVG namespace is a name, not a request)
    assert not re.search(r"""<[a-z][^>]*\s(?:src|href|action)\s*=""", page, re.I)
    assert not re.search(r"https?:", page.replace('xmlns="http://www.w3.org/2000/svg"', ""))

    browser.cmd("POST", "/url", {"url": scanned["html"].as_uri()})
    rows = len(servers)
    assert browser.js(VISIBLE) == rows
    found = browser.js(FOREIGN)
    # the hostile banners are text in the table, not elements or script
    assert found["pwned"] == "undefined"
    assert (found["scripts"], found["handlers"], found["imgs"], found["tables"]) == (1, 0, 0, 1)
    assert found["svgs"] == 2  # the two charts
    for text in HOSTILE:
        assert text in found["text"]
    assert "<script>window\\.pwned=4</script>" in found["text"]  # the unrecognized fingerprint
    summary = browser.js("return document.getElementById('sum-open').textContent")
    assert summary.startswith(str(rows))

    # the filter: type into the box as a user would
    box = browser.element("#filter")
    browser.cmd("POST", f"/element/{box}/value", {"text": "EvilServer"})
    assert browser.js(VISIBLE) == len(HOSTILE)
    assert browser.js("return document.getElementById('shown').textContent") == str(len(HOSTILE))
    browser.cmd("POST", f"/element/{box}/clear", {})
    browser.cmd("POST", f"/element/{box}/value", {"text": "openssh"})
    assert browser.js(VISIBLE) == 1
    shot = scanned["dir"] / "report-filtered.png"
    shot.write_bytes(base64.b64decode(browser.cmd("GET", "/screenshot")))
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and shot.stat().st_size > 10_000
    browser.cmd("POST", f"/element/{box}/clear", {})
    assert browser.js(VISIBLE) == rows

    # sorting: port column, then again for descending
    header = browser.element("#ports thead th:nth-child(2)")
    browser.cmd("POST", f"/element/{header}/click", {})
    ports = browser.js("return Array.from(document.querySelectorAll('#ports tbody tr')).map(r => +r.cells[1].textContent)")
    assert ports == sorted(b.port for b in servers.values())
    browser.cmd("POST", f"/element/{header}/click", {})
    ports = browser.js("return Array.from(document.querySelectorAll('#ports tbody tr')).map(r => +r.cells[1].textContent)")
    assert ports == sorted((b.port for b in servers.values()), reverse=True)
    (scanned["dir"] / "report.png").write_bytes(base64.b64decode(browser.cmd("GET", "/screenshot")))


def test_html_scripts_and_cpes_shown_escaped(tmp_path: Path, browser: Browser) -> None:
    """Post-processor results (ServiceResult.scripts) and CPEs, hostile text in both."""
    r = ServiceResult(
        "127.0.0.1", 8080, "tcp", service="http", product="<b>x</b>", method="probed", conf=10,
        cpes=["cpe:/a:<script>:x"],
        scripts=[ScriptResult("http-title", "<script>window.pwned=5</script>", {"title": "t"})],
    )
    bare = ServiceResult("127.0.0.1", 22, "tcp", service="ssh", method="probed", conf=10)
    run = ScanRun(args=["-p", "22,8080"], start=time.time() - 2, end=time.time(), db_path="x")
    other = ServiceResult("127.0.0.2", 25, "tcp", service="smtp", method="table", state="open")
    # hosts given in any order come out grouped, in address order
    page = render(run, [HostResult("127.0.0.2", status="up", ports=[other]),
                        HostResult("127.0.0.1", status="up", ports=[bare, r])])
    f = tmp_path / "scripts.html"
    f.write_text(page, encoding="utf-8")
    browser.cmd("POST", "/url", {"url": f.as_uri()})
    found = browser.js(FOREIGN)
    assert (found["pwned"], found["scripts"], found["handlers"]) == ("undefined", 1, 0)
    details = browser.js("return Array.from(document.querySelectorAll('details.script summary')).map(s => s.textContent)")
    assert details == ["http-title"]
    assert "<script>window.pwned=5</script>" in found["text"] and "cpe:/a:<script>:x" in found["text"]
    assert browser.js("return document.querySelectorAll('#ports b').length") == 0
    rows = browser.js("return Array.from(document.querySelectorAll('#ports tbody tr')).map("
                      "r => [r.cells[0].textContent, +r.cells[1].textContent, r.className])")
    assert rows == [["127.0.0.1", 22, "hostfirst"], ["127.0.0.1", 8080, ""], ["127.0.0.2", 25, "hostfirst"]]


def test_interrupted_scan_writes_html_and_csv_with_unfinished_ports(tmp_path: Path) -> None:
    silent = Listener(None)  # accepts and says nothing: the slow probe keeps it in flight
    (tmp_path / "probes").write_text(PROBES)
    html_out, csv_out, normal = tmp_path / "cut.html", tmp_path / "cut.csv", tmp_path / "cut.nmap"
    proc = subprocess.Popen(
        [*SERVPROBE, "--db", str(tmp_path / "probes"), "-p", str(silent.port), "127.0.0.1",
         "-oH", str(html_out), "-oC", str(csv_out), "-oN", str(normal)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(3.0)  # port found, the service scan waits on SlowHello
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    silent.sock.close()
    assert proc.returncode == 130, err
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text(encoding="utf-8"), newline="")))
    assert [(int(r["port"]), r["state"], r["method"], r["unfinished"]) for r in rows] == [
        (silent.port, "open", "table", "yes")]
    page = html_out.read_text(encoding="utf-8")
    assert page.rstrip().endswith("</html>") and "interrupted" in page and "(unfinished)" in page
    assert "service scan unfinished" in normal.read_text()
