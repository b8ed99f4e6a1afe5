"""The syntax of nmap's newer probe files (nmap ≥ 7.94; shared/nmap-facts.md), on hand-written
files in tests/data/newsyntax: `source=N`, 8,192-character lines, atomic groups, possessive
quantifiers, and octal escapes (PCRE2's reading in patterns, nmap's in probe strings).

Matching is cross-checked against PCRE2 itself (the `pcre2` package, as the matcher tests
do); `servprobe db check` must report no warning for any of these files.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pcre2
import pytest

from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import run_service_scan, source_address
from servprobe.probes.matcher import compile_pattern
from servprobe.probes.parser import MAX_LINE, parse_bytes, parse_file

DATA = Path(__file__).resolve().parent / "data" / "newsyntax"
FILES = ["source-port.probes", "atomic.probes", "possessive.probes", "octal.probes", "long-lines.probes"]

# responses written for the lines of each file: some must match, some must not
SUBJECTS: dict[str, list[bytes]] = {
    "atomic.probes": [b"aaab", b"ab", b"ac", b"abc", b"X123", b"X1a", b"Server: nginx.x/1.22.1\r\n", b"b"],
    "possessive.probes": [b"yyyz", b"yz", b"z", b"Qabc", b"Q", b"SSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.-x",
                          b"op", b"p", b"oop", b"rr", b"rrrr", b"rrr"],
    "octal.probes": [b"\x04\x05", b"\x004\x05", b"\n\rX", b"\x00\x00Y", b"\x01\x02\x03Z", b"\x04Z",
                     b"\n3", b"\x0123", b"S3"],
    "source-port.probes": [b"\x5c\x72\x8b\x00\x01", b"servprobe-source-test\n", b"servprobe-source-test\nx"],
}


def _lines(name: str):
    db, errors = parse_file(DATA / name)
    assert errors == [], errors
    return db, [ln for p in db.probes for ln in p.matches]


@pytest.mark.parametrize("name", FILES)
def test_db_check_reports_no_warning(name: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "servprobe", "db", "check", str(DATA / name)],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "warning:" not in out and "error:" not in out, out


@pytest.mark.parametrize("name", sorted(SUBJECTS))
def test_matching_equals_pcre2(name: str) -> None:
    _, lines = _lines(name)
    hits = 0
    for ln in lines:
        flags = (pcre2.I if "i" in ln.flags else 0) | (pcre2.S if "s" in ln.flags else 0)
        ref = pcre2.compile(ln.pattern, flags=flags, jit=False)
        ours = compile_pattern(ln.pattern, ln.flags)
        for s in SUBJECTS[name]:
            a, b = ours.search(s), ref.search(s)
            assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), (ln.source, s)
            hits += a is not None
    assert hits  # the subjects do exercise the lines


def test_atomic_and_possessive_never_give_back() -> None:
    # the lines marked "never" in the files cannot match anything: PCRE2 agrees (above);
    # here the whole database answers as PCRE's first-match rule says
    db, _ = _lines("atomic.probes")
    assert db.match("GetBanner", b"aaab").product == "atomic plus"
    assert db.match("GetBanner", b"X123") is None  # (?>\d+) keeps the last digit too
    ident = db.match("GetBanner", b"Server: nginx.x/1.22.1\r\n")
    assert (ident.product, ident.version) == ("atomic version", "1.22.1")
    db, _ = _lines("possessive.probes")
    assert db.match("GetBanner", b"Qabc") is None
    assert db.match("GetBanner", b"rrr") is None  # r{1,3}+ keeps all three: no r is left
    assert db.match("GetBanner", b"rrrr").product == "possessive range: keeps up to three"
    ident = db.match("GetBanner", b"SSH-2.0-OpenSSH_9.2\r\n")
    assert (ident.version, ident.info) == ("2.0", "OpenSSH_9.2")


def test_octal_in_patterns_is_pcre2s_and_in_probe_strings_nmaps() -> None:
    db, _ = _lines("octal.probes")
    # probe string q|\0\04|: nmap reads \0 as NUL and nothing more, so \04 is NUL then "4"
    assert db.probe("OctalProbe").payload == b"\x00\x004"
    assert db.match("OctalProbe", b"\x04\x05").product == "octal one digit"
    assert db.match("OctalProbe", b"\x004\x05") is None  # \04 is one byte in a pattern
    assert db.match("OctalProbe", b"\n\rX").product == "octal two digits"
    assert db.match("OctalProbe", b"\x01\x02\x03Z").product == "octal in a class"
    assert db.match("OctalProbe", b"\n3").product == "octal stops after two digits"


def test_source_option_is_read() -> None:
    db, _ = _lines("source-port.probes")
    assert db.probe("IKE_LIKE", "udp").source_port == 500
    probe = db.probe("EchoFromPort", "udp")
    assert probe.source_port == 40500 and probe.no_payload
    for bad in (b"source=0", b"source=65536", b"source=abc"):
        _, errors = parse_bytes(b"Probe UDP X q|x| " + bad + b"\n", "bad.probes")
        assert [e.line for e in errors] == [1] and "source=" in errors[0].message


def _long_file(length: int) -> bytes:
    text = (DATA / "long-lines.probes").read_bytes()
    lines = text.split(b"\n")
    i = next(k for k, ln in enumerate(lines) if b"WIDEN" in ln)
    lines[i] = lines[i].replace(b"WIDEN", b"W" * (length - len(lines[i]) + len(b"WIDEN")))
    assert len(lines[i]) == length
    return b"\n".join(lines), i + 1


def test_lines_up_to_8192_characters(tmp_path: Path) -> None:
    ok, _ = _long_file(MAX_LINE)
    db, errors = parse_bytes(ok, "ok.probes")
    assert errors == [] and db.match("GetBanner", b"LONG:W").product == "long line"
    bad, lineno = _long_file(MAX_LINE + 1)
    path = tmp_path / "too-long.probes"
    path.write_bytes(bad)
    proc = subprocess.run([sys.executable, "-m", "servprobe", "db", "check", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"{path}:{lineno}:" in proc.stdout + proc.stderr


def test_probe_is_sent_from_its_source_port(tmp_path: Path) -> None:
    # a UDP server answering only datagrams that come from the probe's source port
    probe_port = socket.socket()
    probe_port.bind(("0.0.0.0", 0))
    source = probe_port.getsockname()[1]  # a free port number (> 1024: no root needed)
    probe_port.close()
    text = (DATA / "source-port.probes").read_bytes().replace(b"source=40500", b"source=%d" % source)
    path = tmp_path / "source.probes"
    path.write_bytes(text)
    db, errors = parse_file(path)
    assert errors == []
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.1)
    seen: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            seen.append(peer[1])
            if peer[1] == source:
                srv.sendto(data, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    results = []
    try:
        target = ServiceTarget("127.0.0.1", srv.getsockname()[1], "udp")
        asyncio.run(run_service_scan(db, [target], EngineOptions(intensity=9, rpc_grind=False), results.append))
    finally:
        stop.set()
        thread.join()
        srv.close()
    assert source in seen
    (r,) = results
    assert (r.service, r.product) == ("echo-source", "source port echo")


def test_source_port_below_1024_without_root_falls_back(capsys) -> None:
    assert source_address(500, socket.AF_INET, euid=1000) is None
    assert source_address(500, socket.AF_INET, euid=1000) is None  # said once only
    err = capsys.readouterr().err
    assert err.count("need root") == 1
    assert source_address(500, socket.AF_INET, euid=0) == ("0.0.0.0", 500)
    assert source_address(40500, socket.AF_INET6, euid=1000) == ("::", 40500)
