"""`servprobe db lint`: each check finds the mistake it is for, and our own file lints clean.

The crafted files below hold one mistake each, written so that the expected finding follows
from the probe-file rules (first matching line wins; CPE 2.2 URI syntax), not from lint's
own output. The backtracking case is a pattern that splits one text many ways, `(?:a|aa)+`,
whose near-miss run grows exponentially in a backtracking engine (the regex module included:
measured in the test, not assumed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import regex

import servprobe
from servprobe.probes import lint

ROOT = Path(__file__).resolve().parents[1]
DB_PATH = ROOT / "src" / "servprobe" / "data" / "servprobe-service-probes"
EXAMPLES = ROOT / "tests" / "data" / "examples"

CRAFTED = """\
Probe TCP NULL q||
match ftp m|^220 .*FTP| p/Generic FTP/
match ftp m|^220 ProFTPD 1\\.3 FTP| p/ProFTPD/
match ftp m=^230 (?:a|aa)+b= p/Slow ftpd/
match ftp m|^221 x| p/Apache httpd/ cpe:/a:apache:http server/
match ftp m|^222 x| p/Apache HTTPd/ cpe:/q:apache/
match ftp m|^223 ProFTPD| p/ProFTPD/ cpe:/a:proftpd:proftpd/
"""


def _crafted(tmp_path: Path) -> lint.LintReport:
    path = tmp_path / "probes"
    path.write_text(CRAFTED)
    return lint.lint(servprobe.load_db(str(path), prefilter=False))


def test_our_file_lints_clean():
    db = servprobe.load_db(str(DB_PATH), prefilter=False)
    report = lint.lint(db, EXAMPLES)
    assert report.findings == [], "\n".join(map(str, report.findings))
    # the shadow check really ran on (nearly) every line, not on a few
    assert report.checked_shadow >= 0.95 * report.lines


def test_shadowed_line_found(tmp_path):
    report = _crafted(tmp_path)
    shadowed = [f for f in report.findings if f.kind == "shadowed"]
    # line 3 ("220 ProFTPD 1.3 FTP...") always matches line 2's "^220 .*FTP" first
    assert [f.where.rsplit(":", 1)[1] for f in shadowed] == ["3"]
    assert "line 2" in shadowed[0].message


def test_backtracking_found_and_really_slow(tmp_path):
    report = _crafted(tmp_path)
    assert [f.where.rsplit(":", 1)[1] for f in report.findings if f.kind == "backtracking"] == ["4"]
    # independent of lint: the near-miss time at least doubles per few added bytes
    pat = regex.compile(rb"^230 (?:a|aa)+b")
    times = []
    for n in (18, 24):
        t0 = time.perf_counter()
        pat.search(b"230 " + b"a" * n + b"\x00")
        times.append(time.perf_counter() - t0)
    assert times[1] > 4 * times[0]


def test_spelling_and_cpe_found(tmp_path):
    report = _crafted(tmp_path)
    spelling = [f for f in report.findings if f.kind == "spelling"]
    assert len(spelling) == 1 and "'Apache HTTPd'" in spelling[0].message
    cpes = sorted(f.message for f in report.findings if f.kind == "cpe")
    assert len(cpes) == 2
    assert cpes[0].startswith("cpe:/a:apache:http server") and cpes[1].startswith("cpe:/q:apache")


def test_cpe_syntax():
    assert lint.cpe_problem("cpe:/a:openbsd:openssh:$2") is None
    assert lint.cpe_problem('cpe:/a:x:y:$SUBST(1,"_",".")') is None
    assert lint.cpe_problem("cpe:/o:linux:linux_kernel:2.6") is None
    assert lint.cpe_problem("cpe:/a:busybox:busybox:1.14.0 or later") is not None
    assert lint.cpe_problem("cpe:/a") is not None
    assert lint.cpe_problem("cpe:/a:v:p:1:2:3:4:5") is not None


def test_examples_dir_lists_lines_without_example(tmp_path):
    path = tmp_path / "probes"
    path.write_text(CRAFTED)
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "x.json").write_text(json.dumps({"examples": [
        {"line": 7, "probe": "NULL", "response": "223 ProFTPD\\r\\n",
         "expect": {"service": "ftp", "product": "ProFTPD", "cpes": ["cpe:/a:proftpd:proftpd"]}}]}))
    report = lint.lint(servprobe.load_db(str(path), prefilter=False), tmp_path / "ex")
    missing = sorted(int(f.where.rsplit(":", 1)[1]) for f in report.findings
                     if f.kind == "no-example")
    assert missing == [2, 3, 4, 5, 6]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "servprobe", "db", "lint", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_exit_status(tmp_path):
    bad = tmp_path / "probes"
    bad.write_text(CRAFTED)
    proc = _cli(str(bad), "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["counts"] == {"shadowed": 1, "no-example": 0, "backtracking": 1, "spelling": 1,
                             "cpe": 2}
    assert _cli(str(DB_PATH), "--examples", str(EXAMPLES)).returncode == 0
    usage = _cli(str(bad), "--budget-ms", "0")
    assert usage.returncode == 2 and "--budget-ms" in usage.stderr
    missing = _cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr
