"""Database discovery and caching, fingerprint reading, and the `servprobe db` / `servprobe
match` commands (in-process and through the real entry point)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extras import require
from record_nmap import recorded
from servprobe.commands import db as db_cmd
from servprobe.commands import match as match_cmd
from servprobe.engine.fingerprint import build_fingerprint
from servprobe.probes import loader
from servprobe.probes.fpreader import (
    FingerprintError,
    decode_string,
    parse_fingerprint,
    read_fingerprints,
)
from servprobe.probes.parser import ProbeFileError

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
ROOT = Path(__file__).resolve().parent.parent

SMALL = b"""Exclude T:9100
Probe TCP NULL q||
match ssh m|^SSH-([\\d.]+)-OpenSSH_([\\w.]+)| p/OpenSSH/ v/$2/ i/protocol $1/ cpe:/a:openbsd:openssh:$2/
softmatch ftp m|^220 |
Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|
rarity 1
match http m|^HTTP/1\\.[01] \\d+ .*\\r\\nServer: nginx/([\\d.]+)|s p/nginx/ v/$1/
Probe UDP DNSStatusRequest q|\\0\\0\\x10\\0\\0\\0\\0\\0\\0\\0\\0\\0|
match domain m|^\\0\\0\\x90| p/DNS/
"""


@pytest.fixture()
def small(tmp_path: Path) -> Path:
    f = tmp_path / "small-probes"
    f.write_bytes(SMALL)
    return f


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SERVPROBE_CACHE_DIR", str(d))
    return d


# --- loader -----------------------------------------------------------------------------------
def test_default_is_nmaps_file_then_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nmapdir = tmp_path / "nmapdir"
    nmapdir.mkdir()
    (nmapdir / "nmap-service-probes").write_bytes(SMALL)
    monkeypatch.setenv("NMAPDIR", str(nmapdir))
    assert loader.resolve_path(None) == nmapdir / "nmap-service-probes"
    assert loader.resolve_path("nmap") == nmapdir / "nmap-service-probes"
    assert loader.resolve_path("bundled") == loader.BUNDLED
    monkeypatch.setattr(loader, "nmap_dirs", lambda: [tmp_path / "nowhere"])
    assert loader.resolve_path(None) == loader.BUNDLED
    with pytest.raises(ProbeFileError, match="not found"):
        loader.resolve_path("nmap")


def test_bundled_db_loads_and_says_its_path(cache: Path) -> None:
    db = loader.load_db("bundled", prefilter=False)
    assert db.path == str(loader.BUNDLED)
    assert db.probe("NULL").is_null and db.matcher is not None


def test_load_db_by_path_and_api(small: Path, cache: Path) -> None:
    import servprobe

    db = servprobe.load_db(str(small), prefilter=False)
    assert db.path == str(small) and len(db.probes) == 3
    ident = db.match("NULL", b"SSH-2.0-OpenSSH_9.2p1\r\n")
    assert (
        ident.product == "OpenSSH"
        and ident.version == "9.2p1"
        and str(ident.source) == f"{small}:3"
    )
    assert db.match("GetRequest", b"220 hi\r\n").service == "ftp"  # via NULL, soft
    assert db.match("DNSStatusRequest", b"\0\0\x90\x05", "udp").product == "DNS"
    assert db.match("DNSStatusRequest", b"SSH-2.0-OpenSSH_9\r\n", "udp") is None
    assert db.exclude == frozenset({("tcp", 9100)})


def test_pattern_verdicts_are_cached_by_content(small: Path, cache: Path) -> None:
    data = small.read_bytes()
    _, errors, cached = loader.parse_checked(data, str(small))
    assert errors == [] and cached is False
    _, errors, cached = loader.parse_checked(data, str(small))
    assert errors == [] and cached is True
    bad = data + b"match x m/(/\nmatch y m/a*/\n"
    _, errors1, cached1 = loader.parse_checked(bad, "bad")
    db2, errors2, cached2 = loader.parse_checked(bad, "bad")
    assert (cached1, cached2) == (False, True)
    assert (
        [str(e) for e in errors1]
        == [str(e) for e in errors2]
        == [e for e in (str(x) for x in errors1) if e.startswith(("bad:10:", "bad:11:"))]
    )
    # bad lines are dropped the same way with or without the cache
    assert [m.service for m in db2.probe("DNSStatusRequest", "udp").matches] == ["domain"]


def test_strict_and_lenient_loading(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "p"
    f.write_bytes(SMALL + b"rarity 0\n")
    with pytest.raises(ProbeFileError, match=r":10: rarity 0 out of range"):
        loader.load_db(str(f), prefilter=False)
    db = loader.load_db(str(f), prefilter=False, strict=False)
    assert [e.line for e in db.errors] == [10]
    assert db.match("NULL", b"220 x").service == "ftp"


def test_prefilter_cache_roundtrip(small: Path, cache: Path) -> None:
    require("hyperscan", "fast", "hyperscan")  # an optional extra: may skip off x86_64
    from servprobe.probes.prefilter import HyperscanPrefilter

    db = loader.load_db(str(small), prefilter=True)
    pf = db.matcher.prefilter
    null = db.probe("NULL")
    assert pf.candidates(null, b"SSH-2.0-OpenSSH_9\r\n") == [0]
    assert pf.cached(null)
    again = HyperscanPrefilter(db)
    assert again._load(null) is not None  # served from the cache file
    assert again.candidates(null, b"220 ftp\r\n") == [1]
    for f in cache.glob("hs-*"):  # a damaged cache file is rebuilt, not trusted
        f.write_bytes(b"garbage")
    third = HyperscanPrefilter(db)
    assert third.candidates(null, b"220 ftp\r\n") == [1]


# --- fingerprints -----------------------------------------------------------------------------
FP_RUN, FP_NORMAL, FP_XML = recorded("fingerprints")  # nmap 7.93's (tests/data/nmap/)


def wrap_fingerprint(port: int, proto: str, records: list[tuple[str, bytes]]) -> str:
    """A fingerprint for inputs nmap was not recorded on, written by our writer, which
    tests/test_engine_fingerprint.py proves equal to nmap's text."""
    text = build_fingerprint(port, proto, 7, records, now=0x6743A2F1, platform="x86_64-pc-linux-gnu")
    assert text is not None
    return text + "\n"


def test_reads_the_fingerprints_nmap_printed() -> None:
    """nmap's own normal output and XML: every %r record holds (the start of) a reply the
    server really sent, with its real length; the long banner is cut, the rest complete.
    Fails (checked) when read_fingerprints drops a trailing backslash of an SF: line (nmap's
    wrap splits escapes across lines)."""
    sent = {s["port"]: [bytes.fromhex(x) for x in s["sent"]] for s in FP_RUN["servers"]}
    unknown = {int(m) for m in re.findall(r"SF-Port(\d+)-TCP", FP_NORMAL)}
    fps = read_fingerprints(FP_NORMAL)
    assert {fp.port for fp in fps} == unknown and len(fps) == 2
    for fp in fps:
        assert fp.proto == "tcp" and fp.fields["V"] == "7.93" and fp.fields["I"] == "7"
        assert fp.fields["P"] == "x86_64-pc-linux-gnu" and len(fp.responses) >= 3
        for r in fp.responses:
            assert any(len(d) == r.length and d.startswith(r.data) for d in sent[fp.port]), r
        kind = next(s["kind"] for s in FP_RUN["servers"] if s["port"] == fp.port)
        assert all(r.truncated for r in fp.responses) == (kind == "long")
    from_xml = read_fingerprints(FP_XML)
    assert [(f.port, f.fields, f.responses) for f in from_xml] == \
        [(f.port, f.fields, f.responses) for f in sorted(fps, key=lambda f: f.port)]


def test_decode_string() -> None:
    assert decode_string(r"a\x20b\r\n\0\.\"\\") == b'a b\r\n\0."\\'
    with pytest.raises(FingerprintError):
        decode_string("\\x4")
    with pytest.raises(FingerprintError):
        decode_string("abc\\")


def test_read_wrapped_fingerprints() -> None:
    ssh = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    http = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n" + bytes(range(256))
    text = "PORT STATE SERVICE\n" + wrap_fingerprint(
        2222, "tcp", [("NULL", ssh), ("GetRequest", http)]
    )
    text += "junk line\n" + wrap_fingerprint(53, "udp", [("DNSStatusRequest", b"\0\0\x90\x05")])
    fps = read_fingerprints(text)
    second = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("SF-Port53-"))
    assert [(f.port, f.proto, f.line) for f in fps] == [(2222, "tcp", 2), (53, "udp", second)]
    assert [r.probe for r in fps[0].responses] == ["NULL", "GetRequest"]
    assert fps[0].responses[0].data == ssh and fps[0].responses[1].data == http
    assert fps[0].fields["I"] == "7"
    assert not fps[0].responses[1].truncated


@pytest.mark.parametrize(
    "bad", ['SF-Port21-TCP:V=1%r(NULL,zz,"x")', 'SF-Port21-TCP:r(NULL,3,"abc', "SF-PortX-TCP:"]
)
def test_bad_fingerprints(bad: str) -> None:
    with pytest.raises(FingerprintError):
        parse_fingerprint(bad)


# --- commands in-process ----------------------------------------------------------------------
def test_db_check_counts_and_exit_status(small: Path, cache: Path, capsys) -> None:
    assert db_cmd.main(["check", str(small), "--no-prefilter"]) == 0
    out = capsys.readouterr().out
    assert "probes     3 (2 TCP, 1 UDP)" in out and "match      3" in out and "softmatch  1" in out
    assert db_cmd.main(["check", str(small), "--json", "--no-prefilter"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["services"] == 4 and report["lines_with_cpe"] == 1 and report["errors"] == []


def test_db_check_reports_every_error(tmp_path: Path, cache: Path, capsys) -> None:
    f = tmp_path / "broken"
    f.write_bytes(SMALL + b"rarity 0\nmatch x m/(/\nbogus\n")
    assert db_cmd.main(["check", str(f), "--no-prefilter"]) == 1
    out = capsys.readouterr().out
    assert (
        f"{f}:10: rarity 0" in out
        and f"{f}:11: pattern:" in out
        and f"{f}:12: unknown directive" in out
    )
    assert "errors     3" in out


def test_db_check_usage_errors(capsys, cache: Path) -> None:
    assert db_cmd.main(["check", "/nonexistent/probes"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert db_cmd.main([]) == 2
    with pytest.raises(SystemExit) as info:
        db_cmd.main(["check", "--bogus"])
    assert info.value.code == 2


def test_match_hex_and_json(small: Path, cache: Path, capsys) -> None:
    hexed = b"SSH-2.0-OpenSSH_9.2p1\r\n".hex()
    assert (
        match_cmd.main(["--db", str(small), "--probe", "NULL", "--hex", hexed, "--no-prefilter"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("ssh  OpenSSH 9.2p1 (protocol 2.0)") and f"{small}:3" in out
    assert "cpe:/a:openbsd:openssh:9.2p1" in out
    assert (
        match_cmd.main(
            ["--db", str(small), "--probe", "GetRequest", "--json", "--hex", b"nope".hex()]
        )
        == 1
    )
    assert json.loads(capsys.readouterr().out)["match"] is None


def test_match_file_and_udp(small: Path, tmp_path: Path, cache: Path, capsys) -> None:
    f = tmp_path / "resp.bin"
    f.write_bytes(b"\0\0\x90\x05")
    assert (
        match_cmd.main(["--db", str(small), "--probe", "DNSStatusRequest", "--file", str(f)]) == 0
    )
    assert "domain  DNS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--probe", "Nul", "--hex", "00"], "did you mean NULL"),
        (["--probe", "NULL", "--hex", "zz"], "not hexadecimal"),
        (["--probe", "NULL", "--file", "/nonexistent"], "cannot read"),
        (["--hex", "00"], "--probe NAME is required"),
        (["--probe", "NULL", "--fingerprint", "x"], "do not go together"),
        (["--fingerprint", "/nonexistent"], "cannot read"),
    ],
)
def test_match_usage_errors(
    small: Path, cache: Path, capsys, argv: list[str], message: str
) -> None:
    assert match_cmd.main(["--db", str(small), *argv]) == 2
    assert message in capsys.readouterr().err


def test_match_fingerprint(small: Path, tmp_path: Path, cache: Path, capsys) -> None:
    f = tmp_path / "scan.nmap"
    f.write_text(
        wrap_fingerprint(
            2222, "tcp", [("GetRequest", b"SSH-2.0-OpenSSH_9.2p1\r\n"), ("Unknown", b"x")]
        )
        + wrap_fingerprint(9999, "tcp", [("NULL", b"\x01\x02")])
    )
    assert match_cmd.main(["--db", str(small), "--fingerprint", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"{f}:1: 2222/tcp  ssh  OpenSSH 9.2p1" in out
    assert "r(Unknown, 1 bytes): unknown probe" in out and "9999/tcp  no match" in out
    assert match_cmd.main(["--db", str(small), "--fingerprint", str(f), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["result"]["product"] == "OpenSSH" and data[1]["result"] is None


# --- the real entry point ---------------------------------------------------------------------
def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, "-m", "servprobe", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=300,
    )


def test_cli_db_check_nmap_file() -> None:
    proc = run_cli("db", "check", str(NMAP_DB))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode()
    nmatch = sum(
        ln.startswith("match ") for ln in NMAP_DB.read_text(encoding="latin-1").splitlines()
    )
    assert f"match      {nmatch}" in text and "errors     0" in text


def test_cli_match_stdin_never_prints_raw_bytes(small: Path, cache: Path) -> None:
    proc = run_cli(
        "match", "--db", str(small), "--probe", "NULL", stdin=b"SSH-2.0-OpenSSH_9\x1b[2J\r\n"
    )
    assert proc.returncode == 0 and b"\x1b" not in proc.stdout
    assert b"Traceback" not in proc.stderr


def test_cli_garbage_probe_file_no_traceback(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "garbage"
    f.write_bytes(os.urandom(3000) + b"\nmatch\n\xff\xfe")
    proc = run_cli("db", "check", str(f), "--no-prefilter")
    assert proc.returncode == 1 and b"Traceback" not in proc.stderr
    assert all(
        line.startswith(str(f).encode()) or line.startswith(b" ") or b"sha256" in line
        for line in proc.stdout.splitlines()
        if line
    )


def test_prefilter_background_build(small: Path, cache: Path) -> None:
    require("hyperscan", "fast", "hyperscan")  # an optional extra: may skip off x86_64
    import time

    from servprobe.probes.prefilter import HyperscanPrefilter

    db = loader.load_db(str(small), prefilter=False)
    pf = HyperscanPrefilter(db, background=True)
    null = db.probe("NULL")
    first = pf.candidates(null, b"220 ftp\r\n")
    deadline = time.monotonic() + 60
    while pf.candidates(null, b"220 ftp\r\n") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first in (None, [1])  # None while building: the matcher then uses its own index
    assert pf.candidates(null, b"220 ftp\r\n") == [1]
    # meanwhile and afterwards, the answers are the same
    from servprobe.probes.matcher import Matcher

    assert Matcher(db, prefilter=pf).match(null, b"220 ftp\r\n").service == "ftp"


def test_db_check_examples_hook(
    small: Path, cache: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--examples hands the loaded database to servprobe.probes.examples.check (H5's)."""
    import types

    seen = {}

    def fake_check(db, directory):
        seen["args"] = (db.path, directory, db.match("NULL", b"220 x").service)
        return types.SimpleNamespace(
            examples=2,
            missing=["f:4 softmatch ftp"],
            failures=["f:3 bad"],
            unknown_ids=[],
            ok=False,
        )

    monkeypatch.setitem(
        sys.modules, "servprobe.probes.examples", types.SimpleNamespace(check=fake_check)
    )
    import servprobe.probes

    monkeypatch.setattr(
        servprobe.probes, "examples", sys.modules["servprobe.probes.examples"], raising=False
    )
    assert db_cmd.main(["check", str(small), "--no-prefilter", "--examples", "EXDIR"]) == 1
    out = capsys.readouterr().out
    assert seen["args"] == (str(small), "EXDIR", "ftp")
    assert "failing example: f:3 bad" in out and "no example: f:4 softmatch ftp" in out


def test_xml_fingerprint_with_wrapping() -> None:
    fp = wrap_fingerprint(21, "tcp", [("NULL", b"220 (vsFTPd 3.0.3)\r\n" * 8)])
    value = fp.strip().replace('"', "&quot;").replace("\n", "&#xa;")
    (got,) = read_fingerprints(f'<port><service name="ftp" servicefp="{value}"/></port>')
    assert got.responses[0].data == b"220 (vsFTPd 3.0.3)\r\n" * 8


_FP_PIECES = [*'SF-Port21TCP:%r(NULL,3"\\x0a)\n;&quot=', "SF:", "SF-Port80-UDP:", 'r(X,2,"', '")']


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_FP_PIECES), max_size=60).map("".join))
def test_fingerprint_reader_never_crashes(text: str) -> None:
    try:
        fps = read_fingerprints(text)
    except FingerprintError:
        return
    for fp in fps:
        assert fp.proto in ("tcp", "udp")
        assert all(isinstance(r.data, bytes) for r in fp.responses)


def test_lines_hyperscan_rejects_are_always_candidates(tmp_path: Path, cache: Path) -> None:
    require("hyperscan", "fast", "hyperscan")  # an optional extra: may skip off x86_64
    from servprobe.probes.matcher import Matcher

    f = tmp_path / "p"
    f.write_bytes(
        b"Probe TCP NULL q||\nmatch one m|^x1|\nmatch kept m|^ab\\Kcd|\nmatch three m=^(?|(q)|(r))z=\nmatch four m|^x4|\n"
    )
    db = loader.load_db(str(f), prefilter=True)
    pf = db.matcher.prefilter
    null = db.probe("NULL")
    assert pf.filter_for(null).always == [1, 2]  # \K and branch reset: hyperscan refuses them
    assert pf.candidates(null, b"x4") == [1, 2, 3]
    plain = Matcher(db)
    for data in (b"abcd", b"rz", b"x4", b"x1", b"nothing"):
        a, b = db.matcher.find(null, data), plain.find(null, data)
        assert (a and (a[0].service, a[1].span())) == (b and (b[0].service, b[1].span()))
    assert db.match("NULL", b"abcd").service == "kept"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["NULL", "GetRequest", "X-1"]), st.binary(min_size=1, max_size=300)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_roundtrip_with_the_engines_fingerprint_writer(responses) -> None:
    """What servprobe.engine.fingerprint writes, probes.fpreader reads back byte for byte."""
    from servprobe.engine.fingerprint import MAX_RESPONSE, build_fingerprint

    text = build_fingerprint(
        8080, "tcp", 7, responses, now=1_700_000_000, platform="x86_64-pc-linux-gnu"
    )
    (fp,) = read_fingerprints("Nmap output\n" + text + "\n")
    assert (fp.port, fp.proto, fp.fields["I"]) == (8080, "tcp", "7")
    got = [(r.probe, r.length, r.data) for r in fp.responses]
    want = [(n, len(d), d[:MAX_RESPONSE]) for n, d in responses][: len(got)]
    assert got == want and got


def test_warnings_are_listed_but_do_not_fail(tmp_path: Path, cache: Path, capsys) -> None:
    f = tmp_path / "warned"
    f.write_bytes(SMALL + b"match x m/^(q)/ p/$2/\nrarity 3\nrarity 4\n")
    for _ in range(2):  # computed, then from the cache: same report
        assert db_cmd.main(["check", str(f), "--no-prefilter"]) == 0
        out = capsys.readouterr().out
        assert (
            f"{f}:10: warning: p/ template '$2'" in out
            and f"{f}:12: warning: duplicate 'rarity'" in out
        )
        assert "warnings   2" in out and "errors     0" in out
        db = loader.load_db(str(f), prefilter=False)
        assert [e.line for e in db.errors] == [10, 12]
        assert db.probe("DNSStatusRequest", "udp").rarity == 4
        assert db.match("DNSStatusRequest", b"q", "udp").service == "x"
