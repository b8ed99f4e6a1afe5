"""The probe-file parser: nmap's real file, every directive, and malformed input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servprobe.probes.matcher import Matcher
from servprobe.probes.parser import (
    ParseError,
    ProbeFileError,
    parse_bytes,
    parse_file,
    parse_file_strict,
    unescape_probe_string,
)

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")


def independent_counts(text: str) -> dict[str, int]:
    """Counts of nmap's file by plain string operations, independent of our parser."""
    lines = text.splitlines()
    matches = [ln for ln in lines if ln.startswith("match ")]
    softs = [ln for ln in lines if ln.startswith("softmatch ")]
    return {
        "tcp": sum(ln.startswith("Probe TCP ") for ln in lines),
        "udp": sum(ln.startswith("Probe UDP ") for ln in lines),
        "match": len(matches),
        "softmatch": len(softs),
        "services": len({ln.split(" ", 2)[1] for ln in matches + softs}),
        "cpe": sum(" cpe:" in ln for ln in matches + softs),
        "ports": sum(ln.startswith("ports ") for ln in lines),
        "sslports": sum(ln.startswith("sslports ") for ln in lines),
        "fallback": sum(ln.startswith("fallback ") for ln in lines),
    }


@pytest.fixture(scope="module")
def nmap_parsed():
    if not NMAP_DB.is_file():
        pytest.fail("nmap-common is a test dependency: /usr/share/nmap/nmap-service-probes missing")
    # the fast check here; every pattern is then compiled by test_every_nmap_pattern_compiles
    return parse_file(NMAP_DB, validate=True, full=False)


def test_nmap_file_parses_without_errors_and_counts_match(nmap_parsed) -> None:
    db, errors = nmap_parsed
    assert errors == []
    want = independent_counts(NMAP_DB.read_text(encoding="latin-1"))
    lines = [m for p in db.probes for m in p.matches]
    assert sum(p.proto == "tcp" for p in db.probes) == want["tcp"]
    assert sum(p.proto == "udp" for p in db.probes) == want["udp"]
    assert sum(not m.soft for m in lines) == want["match"]
    assert sum(m.soft for m in lines) == want["softmatch"]
    assert len({m.service for m in lines}) == want["services"]
    assert sum(bool(m.template.cpes) for m in lines) == want["cpe"]
    assert sum(bool(p.ports) for p in db.probes) == want["ports"]
    assert sum(bool(p.sslports) for p in db.probes) == want["sslports"]
    assert sum(bool(p.fallback) for p in db.probes) == want["fallback"]
    # Debian's nmap-common 7.93 (the facts file): 148 probes, 11,721 match, 196 softmatch
    assert want["match"] > 10_000 and want["tcp"] + want["udp"] > 100


def test_nmap_file_details(nmap_parsed) -> None:
    db, _ = nmap_parsed
    null = db.probe("NULL", "tcp")
    assert null.payload == b"" and null.is_null
    assert null.totalwaitms == 6000 and null.tcpwrappedms == 3000
    assert db.exclude == frozenset(("tcp", p) for p in range(9100, 9108))
    get = db.probe("GetRequest", "tcp")
    assert get.payload == b"GET / HTTP/1.0\r\n\r\n"
    assert 80 in get.ports and 443 in get.sslports and get.rarity == 1
    # a TCP probe falling back to a UDP probe's lines exists in nmap's file
    tcp_dns = db.probe("DNSVersionBindReqTCP", "tcp")
    assert tcp_dns.fallback == ("DNSVersionBindReq",)
    for p in db.probes:
        assert [m.index for m in p.matches] == list(range(len(p.matches)))
        assert all(
            m.source.file == str(NMAP_DB) and m.source.line > p.source.line for m in p.matches
        )


@pytest.mark.slow
def test_every_nmap_pattern_compiles(nmap_parsed) -> None:
    db, _ = nmap_parsed
    assert Matcher(db).compile_all() == []
    assert all(m.compiled is not None for p in db.probes for m in p.matches)


def test_strict_variant_raises_with_every_error(tmp_path: Path) -> None:
    f = tmp_path / "bad-probes"
    f.write_bytes(b"Probe TCP NULL q||\nbogus 1\nrarity 12\nmatch x m/(/\n")
    with pytest.raises(ProbeFileError) as info:
        parse_file_strict(f)
    lines = [e.line for e in info.value.errors]
    assert lines == [2, 3, 4]
    assert str(info.value).startswith(f"{f}:2: ")


def test_unreadable_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(ProbeFileError) as info:
        parse_file(tmp_path / "missing")
    assert "cannot read" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "payload"),
    [
        (rb"", b""),
        (rb"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"),
        (rb"\0\x10\xff\\\a\b\f\t\v", b"\x00\x10\xff\\\x07\x08\x0c\x09\x0b"),
        (rb"\01", b"\x001"),  # \0 takes one character, like nmap
        (rb"a\"b\;c\.", b'a"b;c.'),  # escaped punctuation stands for itself
        (rb"\xAb\xcD", b"\xab\xcd"),
    ],
)
def test_probe_string_escapes(raw: bytes, payload: bytes) -> None:
    assert unescape_probe_string(raw) == payload


@pytest.mark.parametrize(
    "raw", [rb"\x", rb"\x4", rb"\xzz", rb"\x4g", rb"abc\\", rb"\1", rb"\q", rb"\e", b"\\"]
)
def test_bad_probe_string_escapes(raw: bytes) -> None:
    if raw == rb"abc\\":
        assert unescape_probe_string(raw) == b"abc\\"
        return
    with pytest.raises(ValueError):
        unescape_probe_string(raw)


GOOD = b"""# comment
Exclude 53,T:9100-9102,U:30000-30001

Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssh m|^SSH-([\\d.]+)-OpenSSH_(\\S+)| p/OpenSSH/ v/$2/ i/protocol $1/ cpe:/a:openbsd:openssh:$2/
softmatch ftp m/^220 [-.\\w ]+ftp.*\\r\\n$/i
match weird m=^x{2}y= p|prod/uct| v%1.0% h@host@ o#Linux# d!router! cpe:|o:linux:linux_kernel|a
match dotall m@^a.b@si

Probe UDP DNSStatusRequest q|\\0\\0\\x10\\0\\0\\0\\0\\0\\0\\0\\0\\0| no-payload
rarity 3
ports 53,135
match domain m|^\\0\\0\\x90\\x04|

Probe TCP GenericLines q|\\r\\n\\r\\n|
rarity 1
ports 21-23,25
sslports 990
fallback NULL,DNSStatusRequest
"""


def test_every_directive_of_a_good_file() -> None:
    db, errors = parse_bytes(GOOD, "good")
    assert errors == []
    assert db.exclude == frozenset(
        {
            ("tcp", 53),
            ("udp", 53),
            ("tcp", 9100),
            ("tcp", 9101),
            ("tcp", 9102),
            ("udp", 30000),
            ("udp", 30001),
        }
    )
    null, dns, generic = db.probes
    assert (null.totalwaitms, null.tcpwrappedms, null.rarity) == (6000, 3000, None)
    ssh, ftp, weird, dotall = null.matches
    assert ssh.pattern == rb"^SSH-([\d.]+)-OpenSSH_(\S+)" and ssh.flags == "" and not ssh.soft
    assert ssh.template.product == "OpenSSH" and ssh.template.version == "$2"
    assert ssh.template.info == "protocol $1" and ssh.template.cpes == (
        "cpe:/a:openbsd:openssh:$2",
    )
    assert ftp.soft and ftp.flags == "i" and ftp.service == "ftp"
    t = weird.template
    assert (t.product, t.version, t.hostname, t.ostype, t.devicetype) == (
        "prod/uct",
        "1.0",
        "host",
        "Linux",
        "router",
    )
    assert t.cpes == ("cpe:/o:linux:linux_kernel",)
    assert dotall.flags == "is"
    assert dns.proto == "udp" and dns.payload == b"\0\0\x10" + b"\0" * 9 and dns.no_payload
    assert dns.rarity == 3 and dns.ports == frozenset({53, 135})
    assert generic.ports == frozenset({21, 22, 23, 25}) and generic.sslports == frozenset({990})
    assert generic.fallback == ("NULL", "DNSStatusRequest")
    assert [str(m.source) for m in null.matches] == ["good:7", "good:8", "good:9", "good:10"]


def test_crlf_line_endings_and_indentation_are_accepted() -> None:
    db, errors = parse_bytes(GOOD.replace(b"\n", b"\r\n"), "crlf")
    assert errors == [] and len(db.probes) == 3


HEAD = b"Probe TCP NULL q||\n"
MALFORMED = [
    # (content, line, message fragment)
    (b"bogus directive\n", 1, "unknown directive 'bogus'"),
    (b"\x00\xff\xfe\x01garbage\n", 1, "not a directive"),
    (b"match ssh m/x/\n", 1, "before any Probe"),
    (b"Probe SCTP X q||\n", 1, "protocol must be TCP or UDP"),
    (b"Probe TCP q||\n", 1, "probe string must start with q"),
    (b"Probe TCP X q|abc\n", 1, "no closing '|'"),
    (b"Probe TCP X q|\\xZZ|\n", 1, "bad \\x escape"),
    (b"Probe TCP X q|\\x4|\n", 1, "bad \\x escape"),
    (b"Probe TCP X q|\\1|\n", 1, "unsupported escape"),
    (b"Probe TCP X q|a| junk\n", 1, "text after the probe string ignored"),
    (b"Probe TCP X q|a|\nProbe TCP X q|b|\n", 2, "duplicate probe TCP X ignored (first on line 1)"),
    (HEAD + b"Exclude 80\n", 2, "Exclude must come before"),
    (b"Exclude 80\nExclude 81\n", 2, "only one Exclude"),
    (b"Exclude 80-x\n", 1, "Exclude:"),
    (HEAD + b"rarity 0\n", 2, "rarity 0 out of range 1-9"),
    (HEAD + b"rarity 10\n", 2, "out of range"),
    (HEAD + b"rarity high\n", 2, "not a number"),
    (HEAD + b"rarity\n", 2, "needs a value"),
    (HEAD + b"totalwaitms 99\n", 2, "totalwaitms 99 out of range 100-300000"),
    (HEAD + b"totalwaitms 300001\n", 2, "out of range"),
    (HEAD + b"tcpwrappedms 50\n", 2, "tcpwrappedms 50 out of range"),
    (HEAD + b"ports 80\nports 81\n", 3, "duplicate 'ports'"),
    (HEAD + b"rarity 1\nrarity 2\n", 3, "duplicate 'rarity'"),
    (HEAD + b"ports 80-x\n", 2, "ports:"),
    (HEAD + b"sslports 99999\n", 2, "sslports:"),
    (HEAD + b"fallback Nope\n", 2, "fallback: no probe named 'Nope'"),
    (HEAD + b"match ssh\n", 2, "missing pattern"),
    (HEAD + b"match ssh x/abc/\n", 2, "must start with m"),
    (HEAD + b"match ssh m/abc\n", 2, "no closing '/'"),
    (HEAD + b"match ssh m/abc/g\n", 2, "unknown option 'g'"),
    (HEAD + b"match ssh m/abc/ii\n", 2, "repeated option"),
    (HEAD + b"match ssh m/(abc/\n", 2, "bad regular expression"),
    (HEAD + b"match ssh m/a*/\n", 2, "can match the empty string"),
    (HEAD + b"match ssh m/^/\n", 2, "can match the empty string"),
    (HEAD + b"match ssh m/(?=SSH)/\n", 2, "can match the empty string"),
    (HEAD + b"match ssh m/x|/\n", 2, "can match the empty string"),
    (HEAD + b"match ssh m/(a?)\\1/\n", 2, "can match the empty string"),
    (HEAD + b"match ssh m//\n", 2, "empty pattern"),
    (HEAD + b"match ssh m/abc\\/\n", 2, "ends with a backslash"),
    (HEAD + b"match ssh m/[abc/\n", 2, "missing terminating ]"),
    (HEAD + b"match ssh m/abc/ z/x/\n", 2, "unknown version field"),
    (HEAD + b"match ssh m/abc/ p/x\n", 2, "no closing '/'"),
    (HEAD + b"match ssh m/abc/ p/x/ p/y/\n", 2, "duplicate p/ field"),
    (HEAD + b"match ssh m/abc/ p/x/q\n", 2, "unexpected option 'q'"),
    (HEAD + b"match ssh m/abc/ cpe:/a:b:c/x\n", 2, "cpe: unknown option"),
    (HEAD + b"match ssh m/abc/ cpe://\n", 2, "cpe: empty value"),
    (HEAD + b"match ssh m/abc/ p/x/-v/y/\n", 2, "expected a space"),
    (HEAD + b"match ssh m/^(a)/ p/$2/\n", 2, "p/ template '$2': $2: the pattern has only 1 groups"),
    (HEAD + b"match ssh m/^(a)/ v/$FOO(1)/\n", 2, "v/ template"),
    (HEAD + b"match ssh m/^(a)/ cpe:/a:x:$P(4)/\n", 2, "cpe: template"),
    (HEAD + b'match ssh m/^(a)/ i/$SUBST(1,"a")/\n', 2, "i/ template"),
    (HEAD + b"match ssh m/abc/ p\n", 2, "missing delimiter"),
]


@pytest.mark.parametrize(("content", "line", "fragment"), MALFORMED)
def test_malformed_input_gives_file_line_errors(content: bytes, line: int, fragment: str) -> None:
    _db, errors = parse_bytes(content, "f.probes")
    assert errors, f"no error for {content!r}"
    first = errors[0]
    assert isinstance(first, ParseError)
    assert (first.file, first.line) == ("f.probes", line)
    assert fragment in first.message, str(first)
    assert str(first).startswith(f"f.probes:{line}: ")


def test_all_errors_are_collected_and_parsing_continues() -> None:
    content = (
        b"".join(c for c, _, _ in MALFORMED[14:30])
        + HEAD.replace(b"NULL", b"Last")
        + b"match ok m/ok/\n"
    )
    db, errors = parse_bytes(content, "many")
    assert len(errors) >= 10
    assert [e.line for e in errors] == sorted(e.line for e in errors)
    assert db.probe("Last").matches[0].service == "ok"  # the good lines at the end still parse


def test_lines_of_a_bad_probe_are_still_checked() -> None:
    _, errors = parse_bytes(b"Probe TCP X q|\\xZZ|\nmatch a m/(/\nrarity 99\n", "f")
    assert [e.line for e in errors] == [1, 2, 3]  # no cascade of "before any Probe" errors


# --- generated malformed input: never a traceback, always FILE:LINE ---------------------------
FRAGMENTS = [
    b"Probe TCP NULL q||",
    b"Probe UDP X q|\\x00|",
    b"Probe TCP Y q/abc/ no-payload",
    b"Exclude T:80",
    b"match ssh m|^SSH-(\\d)| p/x/ v/$1/",
    b"softmatch ftp m/^220/i",
    b"rarity 5",
    b"ports 1-10",
    b"sslports 443",
    b"fallback NULL",
    b"totalwaitms 5000",
    b"tcpwrappedms 3000",
    b"# comment",
    b"",
    b"match x m=(?<=a)b= cpe:/a:b:c/a",
]


def _check_never_raises(content: bytes) -> None:
    nlines = content.count(b"\n") + 1
    db, errors = parse_bytes(content, "gen.probes")
    for e in errors:
        assert 1 <= e.line <= nlines
        assert re.match(r"gen\.probes:\d+: \S", str(e)), str(e)
    # whatever parsed must be usable
    m = Matcher(db, timeout=0.05)
    for p in db.probes:
        m.find(p, b"SSH-2.0-x\r\n220 ftp\r\n")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=40)), max_size=12),
    st.randoms(),
)
def test_generated_files_never_raise(parts: list[bytes], rnd) -> None:
    # mutate some fragments: cut, duplicate a character, or splice random bytes
    out = []
    for p in parts:
        if p and rnd.random() < 0.4:
            i = rnd.randrange(len(p))
            p = rnd.choice(
                [
                    p[:i],
                    p[:i] + p[i : i + 1] * 2 + p[i + 1 :],
                    p[:i] + bytes([rnd.randrange(256)]) + p[i + 1 :],
                ]
            )
        out.append(p)
    _check_never_raises(b"\n".join(out))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400))
def test_binary_garbage_never_raises(data: bytes) -> None:
    _check_never_raises(data)


@pytest.mark.parametrize(
    ("content", "line", "fragment"), [c for c in MALFORMED if c[0].startswith(HEAD)]
)
def test_fast_check_finds_the_same_errors(content: bytes, line: int, fragment: str) -> None:
    """load_db's check (stdlib parser, no regex compile) reports what the full check does."""
    _, full = parse_bytes(content, "f", full=True)
    _, fast = parse_bytes(content, "f", full=False)
    assert [(e.line, e.message) for e in fast] == [(e.line, e.message) for e in full]


# mistakes nmap 7.93 accepts silently (checked against nmap itself): warnings, not errors
WARNINGS = [
    b"Probe TCP X q|a| junk\n",
    b"Probe TCP X q|a|\nProbe TCP X q|b|\n",
    HEAD + b"ports 80\nports 81\n",
    HEAD + b"rarity 1\nrarity 2\n",
    HEAD + b"fallback Nope\n",
    HEAD + b"match ssh m/abc/ p/x/ p/y/\n",
    HEAD + b"match ssh m/abc/ p/x/q\n",
    HEAD + b"match ssh m/abc/ cpe:/a:b:c/x\n",
    HEAD + b"match ssh m/^(a)/ p/$2/\n",
    HEAD + b"match ssh m/^(a)/ v/US$5.00/\n",
]


@pytest.mark.parametrize("content", WARNINGS)
def test_warnings_do_not_stop_loading(tmp_path: Path, content: bytes) -> None:
    _db, errors = parse_bytes(content, "w")
    assert errors and all(e.kind == "warning" for e in errors), errors
    assert all(": warning: " in str(e) for e in errors)
    f = tmp_path / "w"
    f.write_bytes(content)
    parse_file_strict(f)  # does not raise


def test_warned_directives_behave_like_nmap() -> None:
    db, _ = parse_bytes(
        HEAD
        + b"rarity 1\nrarity 2\nfallback Nope,NULL\nmatch a m/^(x)/ p/one/ p/two/ v/$3/\n"
        + b"Probe TCP NULL q|dup|\nmatch b m/^y/\n",
        "w",
    )
    (null,) = db.probes  # the duplicate probe is ignored
    assert null.payload == b"" and null.rarity == 2 and [m.service for m in null.matches] == ["a"]
    assert null.matches[0].template.product == "two" and null.fallback == ("Nope", "NULL")
    ident = db.match("NULL", b"x")
    assert ident.product == "two" and ident.version is None  # $3 cannot be filled: left out
