"""The CLI as a new user meets it (issue 15): subcommands in --help, a mistyped subcommand,
two outputs on stdout, -oA's three files, default-store pruning, an honest ETA on a real
terminal while a service is still in flight, and `servprobe convert` of real nmap XML."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback_listeners import Listener
from pty_run import run_on_pty

SERVPROBE = [sys.executable, "-m", "servprobe"]
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
PROBES = r"""
Probe TCP NULL q||
totalwaitms 6000
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]Debian-(\S+)\r\n| p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("db") / "probes"
    p.write_text(PROBES)
    return p


@pytest.fixture(scope="module")
def ssh() -> Iterator[Listener]:
    s = Listener(SSH_BANNER)
    yield s
    s.sock.close()


def sp(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVPROBE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_help_lists_subcommands_and_each_exists() -> None:
    res = sp("--help")
    assert res.returncode == 0
    for sub in ("db", "match", "diff", "convert"):
        assert re.search(rf"^  {sub} ", res.stdout, re.M), sub
        sub_help = sp(sub, "--help")
        assert sub_help.returncode == 0 and f"servprobe {sub}" in sub_help.stdout, sub


def test_mistyped_subcommand_is_suggested_not_scanned() -> None:
    for typo, meant in (("dbx", "db"), ("mtach", "match"), ("dif", "diff"), ("convrt", "convert")):
        res = sp("--no-store", typo)
        assert res.returncode == 2, (typo, res.stdout, res.stderr)
        assert f"did you mean `servprobe {meant}`" in res.stderr
        assert "Failed to resolve" not in res.stderr + res.stdout and res.stdout == ""


def test_two_outputs_on_stdout_refused_and_oa_is_nmaps_three(ssh: Listener, probes: Path, tmp_path: Path) -> None:
    res = sp("--no-store", "-p", str(ssh.port), "127.0.0.1", "-oX", "-", "-oJ", "-")
    assert res.returncode == 2 and "-oX - and -oJ -" in res.stderr and res.stdout == ""
    res = sp("--no-store", "--no-progress", "--db", str(probes), "-p", str(ssh.port), "127.0.0.1",
             "-oA", "base", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.gnmap", "base.nmap", "base.xml"]


def test_default_stores_pruned_and_help_says_where(ssh: Listener, probes: Path, tmp_path: Path) -> None:
    d = tmp_path / "stores"
    d.mkdir()
    (d / "keep-me.sqlite").write_text("not ours")
    env = {"SERVPROBE_STORE_DIR": str(d), "SERVPROBE_STORE_KEEP": "2"}
    assert str(d) in re.sub(r"\s+", "", sp("--help", env=env).stdout)  # argparse may wrap it
    made = []
    for _ in range(4):
        res = sp("--no-progress", "--no-sV", "-p", str(ssh.port), "127.0.0.1", env=env)
        assert res.returncode == 0, res.stderr
        made.append(re.search(r"storing results in (\S+\.sqlite)", res.stderr).group(1))  # type: ignore[union-attr]
        time.sleep(1.05)  # one-second names
    left = sorted(p.name for p in d.iterdir() if not p.name.endswith(("-wal", "-shm")))
    assert left == sorted(["keep-me.sqlite", Path(made[2]).name, Path(made[3]).name])
    res = sp("--no-progress", "--no-sV", "--store-keep", "1", "-p", str(ssh.port), "127.0.0.1", env=env)
    assert res.returncode == 0
    assert len([p for p in d.glob("scan-*.sqlite")]) == 1


def test_eta_is_honest_while_a_service_is_in_flight(ssh: Listener, probes: Path) -> None:
    """Five services answer at once, one stays silent for its 6 s wait: the progress line
    must not claim "ETA 00:00:00" during those seconds (it used to)."""
    silent = Listener(None)
    fast = [Listener(SSH_BANNER) for _ in range(4)]
    ports = ",".join(str(p.port) for p in (ssh, silent, *fast))
    try:
        screen, code = run_on_pty(
            [*SERVPROBE, "--no-store", "--db", str(probes), "-n", "-p", ports,
             "127.0.0.1"], {**os.environ, "COLUMNS": "200", "TERM": "xterm"}, timeout=60)
    finally:
        silent.sock.close()
        for f in fast:
            f.sock.close()
    text = screen.decode(errors="replace")
    assert code == 0, text
    assert "5 done, 1 in flight" in text
    in_flight = [m.group(0) for m in re.finditer(r"5 done, 1 in flight  ETA [^\r\n\x1b]*", text)]
    assert in_flight and all("ETA 00:00:00" not in s for s in in_flight), in_flight
    assert any("waiting on 1 service" in s for s in in_flight), in_flight


def test_convert_real_nmap_xml_to_csv_html_json(ssh: Listener, tmp_path: Path) -> None:
    xml_path = tmp_path / "nmap.xml"
    subprocess.run(["nmap", "-n", "-Pn", "-sV", "-p", str(ssh.port), "127.0.0.1", "-oX", str(xml_path)],
                   check=True, capture_output=True, timeout=300)
    svc = ET.parse(xml_path).getroot().find(".//port/service")
    assert svc is not None
    res = sp("convert", str(xml_path), "-oC", "-", "-oH", str(tmp_path / "n.html"), "-oJ", str(tmp_path / "n.jsonl"))
    assert res.returncode == 0, res.stderr
    (row,) = list(csv.DictReader(io.StringIO(res.stdout, newline="")))
    assert (row["port"], row["service"], row["product"], row["version"], row["method"]) == (
        str(ssh.port), svc.get("name"), svc.get("product"), svc.get("version"), svc.get("method"))
    assert row["cpe"] == " ".join(c.text or "" for c in svc.iter("cpe"))
    assert "</html>" in (tmp_path / "n.html").read_text()
    assert '"product":"OpenSSH"' in (tmp_path / "n.jsonl").read_text()
    bad = sp("convert", str(tmp_path / "missing.xml"), "-oC", "-")
    assert bad.returncode == 2 and "missing.xml" in bad.stderr


def test_convert_store_equals_the_scans_own_csv(ssh: Listener, probes: Path, tmp_path: Path) -> None:
    store, own = tmp_path / "s.sqlite", tmp_path / "own.csv"
    res = sp("--no-progress", "--store", str(store), "--db", str(probes), "-p", f"{ssh.port},1",
             "127.0.0.1", "-oC", str(own))
    assert res.returncode == 0, res.stderr
    conv = sp("convert", str(store), "-oC", "-")
    assert conv.returncode == 0, conv.stderr
    assert list(csv.reader(io.StringIO(conv.stdout, newline=""))) == list(
        csv.reader(io.StringIO(own.read_text(), newline="")))
