"""The matcher gives PCRE's answers: cross-checked with PCRE2 itself (the `pcre2` package),
with and without the hyperscan prefilter, over real captures, hand-written responses and
generated inputs.

Known, documented difference: nmap stops PCRE at a match limit of 50,000 (a limit hit counts
as no match); we stop `regex` on a time limit. On pathological backtracking PCRE may give up
where `regex` still answers; the corpus here contains no such case, so answers must be equal.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pcre2
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from extras import require
from servprobe.probes.corpus import read_corpus
from servprobe.probes.loader import load_db
from servprobe.probes.matcher import Matcher, check_pattern, compile_pattern
from servprobe.probes.parser import parse_bytes
from servprobe.probes.pcre import translate

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
DATA = Path(__file__).resolve().parent / "data"
CORPUS_DIRS = [DATA / "responses", DATA / "captures"]  # captures: real daemons (H4), if present


@pytest.fixture(scope="module")
def db():
    return load_db(NMAP_DB, prefilter=False)


@pytest.fixture(scope="module")
def pcre(db):
    """Every line of the database compiled by PCRE2 itself, from the raw pattern."""
    out = {}
    for p in db.probes:
        for ln in p.matches:
            flags = (pcre2.I if "i" in ln.flags else 0) | (pcre2.S if "s" in ln.flags else 0)
            out[id(ln)] = pcre2.compile(ln.pattern, flags=flags, jit=False)
    return out


def corpus(db) -> list[tuple[object, bytes, str]]:
    items = []
    for r in read_corpus(CORPUS_DIRS):
        try:
            probe = db.probe(r.probe, r.proto)
        except KeyError:
            continue
        items.append((probe, r.data, str(r.path.relative_to(DATA))))
    return items


def generated(
    db, base: list[tuple[object, bytes, str]], n: int = 250
) -> list[tuple[object, bytes, str]]:
    """Deterministic variations of the corpus: truncations, byte flips, case and line-end
    changes, splices of two responses, and random bytes."""
    rnd = random.Random(20261124)
    probes = [p for p in db.probes]
    out = []
    for k in range(n):
        probe, data, name = rnd.choice(base)
        kind = k % 6
        if kind == 0 and data:
            data = data[: rnd.randrange(len(data))]
        elif kind == 1 and data:
            i = rnd.randrange(len(data))
            data = data[:i] + bytes([rnd.randrange(256)]) + data[i + 1 :]
        elif kind == 2:
            data = data.swapcase().replace(b"\r\n", b"\n")
        elif kind == 3:
            data = data + rnd.choice(base)[1]
        elif kind == 4:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64)))
            probe = rnd.choice(probes)
        else:
            data = data.replace(b" ", b"  ", 1) + b"\r\n"
        out.append((probe, data, f"generated-{k}-from-{name}"))
    return out


def psearch(pattern, data):
    """PCRE2's answer; its match limit counts as no match, as in nmap."""
    try:
        return pattern.search(data)
    except pcre2.LibraryError as exc:
        if "limit" in str(exc):
            return None
        raise


def _key(line, m):
    if m is None:
        return None
    groups = tuple(None if g is None else bytes(g) for g in m.groups())
    return (line.source.line, m.span(), groups)


def nmap_fallback_order(path: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """For each probe (proto, name): the probes whose lines nmap tries, by nmap's rule, read
    from the file's text here (not by our parser or Matcher.chain): the probe itself, then
    each probe of its `fallback` directive, then NULL for TCP only (nmap's
    AllProbes::compileFallbacks). A fallback name is a probe of the same protocol, else of
    the other one: nmap 7.93's own file has TCP DNSStatusRequestTCP fall back to UDP
    DNSStatusRequest, and nmap 7.93 run on a two-probe file (TCP probe, `fallback` naming a
    UDP probe whose line matches the answer) reported that line's service."""
    fallbacks: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    for raw in path.read_bytes().decode("latin-1").splitlines():
        words = raw.split()
        if raw.startswith("Probe ") and len(words) >= 3:
            current = (words[1].lower(), words[2])
            fallbacks[current] = []
        elif raw.startswith("fallback ") and current is not None:
            fallbacks[current] = [x for x in re.split(r"[,\s]+", raw[len("fallback "):]) if x]
    def lookup(proto: str, name: str) -> tuple[str, str]:
        other = "udp" if proto == "tcp" else "tcp"
        return (proto, name) if (proto, name) in fallbacks else (other, name)

    order = {}
    for (proto, name), names in fallbacks.items():
        seq = [(proto, name), *(lookup(proto, n) for n in names)]
        if proto == "tcp" and name != "NULL":
            seq.append(("tcp", "NULL"))
        order[(proto, name)] = seq
    return order


NMAP_ORDER = nmap_fallback_order(NMAP_DB)


def pcre_find(matcher, pcre, probe, data):
    """nmap's first match with PCRE2: the lines of nmap's probe order, first that matches.
    (test_first_match_equals_pcre2 fails, checked, when Matcher.chain ignores `fallback`.)"""
    for proto, name in NMAP_ORDER[(probe.proto, probe.name)]:
        for ln in matcher.db.probe(name, proto).matches:
            m = psearch(pcre[id(ln)], data)
            if m is not None:
                return ln, m
    return None


def test_corpus_is_not_trivial(db) -> None:
    items = corpus(db)
    assert len(items) >= 40
    plain = Matcher(db)
    hits = [x for x in items if plain.find(x[0], x[1])]
    assert len(hits) >= 30 and len(hits) < len(items)  # both matches and misses


def test_first_match_equals_pcre2(db, pcre) -> None:
    plain = Matcher(db)
    base = corpus(db)
    diffs = []
    for probe, data, name in base + generated(db, base):
        ours = plain.find(probe, data)
        theirs = pcre_find(plain, pcre, probe, data)
        a = _key(*ours) if ours else None
        b = _key(*theirs) if theirs else None
        if a != b:
            diffs.append((name, a, b))
    assert diffs == []


def test_every_own_line_agrees_with_pcre2(db, pcre) -> None:
    """Not only the first match: every line of the probe, matched or not, same answer."""
    plain = Matcher(db)
    diffs = []
    checked = 0
    for probe, data, name in corpus(db):
        for ln in probe.matches:
            ours = plain.search(ln, data)
            theirs = psearch(pcre[id(ln)], data)
            checked += 1
            if _key(ln, ours) != _key(ln, theirs):
                diffs.append((name, str(ln.source)))
    assert checked > 10_000
    assert diffs == []


def _starts(data: bytes, ln) -> bool:
    head = data[: len(ln.literal)]
    return head == ln.literal or ("i" in ln.flags and head.lower() == ln.literal)


def test_prefilter_gives_identical_results(db) -> None:
    require("hyperscan", "fast", "hyperscan")  # an optional extra: may skip off x86_64
    fast = load_db(NMAP_DB, prefilter=True)
    assert fast.matcher.prefilter is not None
    plain = Matcher(db)
    base = corpus(db)
    diffs = []
    for probe, data, name in base + generated(db, base):
        fprobe = fast.probe(probe.name, probe.proto)
        a = fast.matcher.find(fprobe, data)
        b = plain.find(probe, data)
        a = _key(*a) if a else None
        b = _key(*b) if b else None
        if a != b:
            diffs.append((name, a, b))
        # the prefilter's guarantee: every line that matches is a candidate (lines whose
        # anchored literal prefix the data lacks cannot match: not searched, for speed)
        for p in fast.matcher.chain(fprobe):
            cand = set(fast.matcher.prefilter.candidates(p, data))
            for i, ln in enumerate(p.matches):
                if i in cand or (ln.literal and not _starts(data, ln)):
                    continue
                if plain.search(ln, data) is not None:
                    diffs.append((name, "missed candidate", str(ln.source)))
    assert diffs == []


# --- PCRE semantics the translation must preserve --------------------------------------------
SEMANTICS = [
    (rb"\d+{infopark", [b"12{infopark", b"12infopark"]),
    (rb"x{2}y", [b"xxy", b"xy", b"x{2}y"]),
    (rb"x{2,}y", [b"xxxy", b"xy"]),
    (rb"x{2,3}y", [b"xxxy", b"x{2,3}y"]),
    (rb"a{b", [b"a{b"]),
    (rb"a{1,x}", [b"a{1,x}", b"a"]),
    (rb"[{}]+x", [b"{}x"]),
    (rb"^a\vb", [b"a\nb", b"a\x0bb", b"a\rb", b"a\x85b", b"a b"]),
    (rb"^a[\v]b", [b"a\nb", b"a\x0cb", b"a b"]),
    (rb"^a\hb", [b"a\tb", b"a b", b"a\xa0b", b"a\nb"]),
    (rb"^a\Vb", [b"a\nb", b"axb"]),
    (rb"^a\Hb", [b"a b", b"axb"]),
    (rb"^a\Rb", [b"a\r\nb", b"a\nb", b"a\rb", b"axb"]),
    (rb"^a\Nb", [b"a\nb", b"axb"]),
    (rb"^\Qa.b\E.", [b"a.bx", b"axbx"]),
    (rb"abc\z", [b"abc", b"abc\n"]),
    (rb"abc\Z", [b"abc", b"abc\n", b"abc\n\n"]),
    (rb"abc$", [b"abc", b"abc\n", b"abc\n\n", b"abc\r\n"]),
    (rb"^\w+\s\d", [b"caf\xe9 1", b"cafe 1", b"cafe\x0b1", b"\xe9\xe9 1"]),
    (rb"\bword\b", [b"\xe9word\xe9", b"a word."]),
    (rb"^[\w-]+$", [b"a-b_c", b"a\xe9"]),
    (b"(?i)^stra\xdfe", [b"STRASSE", b"STRA\xdfE", b"stra\xffe"]),
    (rb"^[^a]", [b"\n", b"a"]),
    (rb"^a.c", [b"a\nc", b"a\rc"]),
    (rb"\x41\0\x7f", [b"A\x00\x7f"]),
    (rb"[\x00-\x1f]+", [b"\x01\x02", b"ab"]),
    (rb"\cA\e", [b"\x01\x1b"]),
    (rb"(a)(?:b)\1", [b"aba", b"abb"]),
    (rb"(?<=SSH-)\d", [b"SSH-2"]),
    (rb"a++b", [b"aaab"]),
    (rb"(?>a+)b", [b"aab"]),
    (rb"[[:alpha:]]+\d", [b"abc1"]),
    (rb"[]a]+", [b"]a]"]),
    (rb"[^]a]+", [b"bc]"]),
    (rb"[a&&b]", [b"&"]),
    (rb"[a\]]+", [b"a]a"]),
    (rb"a|b{", [b"b{"]),
    (rb"\o{101}", [b"A"]),
]
# (the `pcre2` package compiles with ALT_BSUX, so \x{41} is "x" × 41 there; nmap's PCRE reads
# it as the byte 0x41: checked without the package below)


@pytest.mark.parametrize(("pattern", "subjects"), SEMANTICS)
@pytest.mark.parametrize("flags", ["", "i", "s", "is"])
def test_translation_keeps_pcre_semantics(
    pattern: bytes, subjects: list[bytes], flags: str
) -> None:
    pflags = (pcre2.I if "i" in flags else 0) | (pcre2.S if "s" in flags else 0)
    ref = pcre2.compile(pattern, flags=pflags, jit=False)
    ours = compile_pattern(pattern, flags)
    for s in subjects:
        a, b = ours.search(s), ref.search(s)
        assert (a and (a.span(), a.groups())) == (b and (b.span(), b.groups())), (pattern, s)


def test_translate_escapes_only_non_quantifier_braces() -> None:
    assert translate(rb"\d+{info") == rb"\d+\{info"
    assert translate(rb"a{2}b{3,}c{4,5}") == rb"a{2}b{3,}c{4,5}"
    assert translate(rb"[{]") == rb"[{]"
    assert translate(rb"\{") == rb"\{"
    # regex would read this as fuzzy matching syntax without the escape
    assert regex.compile(translate(rb"x{e<=1}")).search(b"y") is None


def test_short_hex_escapes_as_pcre() -> None:
    """Standard PCRE (nmap's) reads up to two hex digits; a bare \\x is NUL. (The `pcre2`
    package compiles with ALT_BSUX, where these differ, so no cross-check here.)"""
    assert compile_pattern(rb"a\xb", "").fullmatch(b"a\x0b")
    assert compile_pattern(rb"a\x", "").fullmatch(b"a\x00")
    assert compile_pattern(rb"[\x4]", "").fullmatch(b"\x04")
    assert compile_pattern(rb"\x411", "").fullmatch(b"A1")


def test_braced_hex_and_octal_are_bytes() -> None:
    assert compile_pattern(rb"x\x{41}\o{102}", "").fullmatch(b"xAB")
    assert "too large" in check_pattern(rb"\x{100}", "")


def test_check_pattern() -> None:
    assert check_pattern(rb"^SSH-", "") is None
    assert "empty" in check_pattern(rb"(?:x)?", "")
    assert "empty" in check_pattern(rb"\b", "")
    assert "bad regular expression" in check_pattern(rb"(?P<", "")


# --- matching rules -----------------------------------------------------------------------
RULES = b"""Probe TCP NULL q||
match null-svc m/^BANNER/
Probe TCP First q|a|
fallback Second,Udpish
match first-soft m/^soft/
match first m/^soft hard/
Probe TCP Second q|b|
match second m/^two/
match second-banner m/^BANNER two/
Probe UDP Udpish q|c|
match udp-only m/^udp/
Probe UDP Lonely q|d|
match lonely m/^lonely/
"""


@pytest.fixture()
def rules_db():
    db, errors = parse_bytes(RULES, "rules")
    assert errors == []
    db.matcher = Matcher(db)
    return db


@pytest.mark.parametrize(
    ("probe", "proto", "data", "service"),
    [
        ("First", "tcp", b"soft hard", "first-soft"),  # first line wins, soft or hard
        ("First", "tcp", b"two", "second"),  # fallback list, in order
        ("First", "tcp", b"udp", "udp-only"),  # fallback to a probe of the other protocol
        ("First", "tcp", b"BANNER", "null-svc"),  # then NULL (TCP)
        # the fallbacks before NULL, though NULL's line matches too (fails with NULL first)
        ("First", "tcp", b"BANNER two", "second-banner"),
        ("Second", "tcp", b"BANNER", "null-svc"),
        ("Lonely", "udp", b"BANNER", None),  # UDP never falls back to NULL
        ("Udpish", "udp", b"udp", "udp-only"),
        ("NULL", "tcp", b"two", None),
    ],
)
def test_fallback_order(rules_db, probe: str, proto: str, data: bytes, service: str | None) -> None:
    ident = rules_db.match(probe, data, proto)
    assert (ident.service if ident else None) == service


def test_timeout_counts_as_no_match() -> None:
    db, errors = parse_bytes(
        b"Probe TCP NULL q||\nmatch slow m/^(a|aa)+$/\nmatch next m/^a/\n", "slow"
    )
    assert errors == []
    matcher = Matcher(db, timeout=0.02)
    db.matcher = matcher
    ident = db.match("NULL", b"a" * 60 + b"b")
    assert ident is not None and ident.service == "next"  # the slow line gave up, the next won
    assert matcher.timeouts == 1


def test_hostile_response_is_answered_quickly(db) -> None:
    """The near-miss PHP 404 page that makes stdlib `re` backtrack for seconds."""
    import time

    plain = Matcher(db)
    probe = db.probe("FourOhFourRequest")
    data = b"HTTP/1.1 404 Not Found\r\nX-Powered-By: PHP/8\r\n\r\n" + b"<b>" * 120 + b" " * 250
    t = time.perf_counter()
    plain.find(probe, data)
    assert time.perf_counter() - t < 60  # generous: it is a few ms when compiled


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        (rb"^SSH-([\d.]+)", b"SSH-"),
        (rb"^220 \(vsFTPd", b"220 (vsFTPd"),
        (rb"^\0\x01\x02x?", b"\x00\x01\x02"),
        (rb"^\012", b"\n"),  # octal, as PCRE reads \0 followed by digits
        (rb"^ab+c", b"ab"),
        (rb"^ab*c", b"a"),
        (rb"^ab{2}", b"a"),
        (rb"^a|b", b""),  # top-level alternation: ^ binds to the first branch only
        (rb"^(?:a|b)", b""),
        (rb"abc", b""),
        (rb"^\d", b""),
        (rb"^[|]x|y", b""),
    ],
)
def test_literal_prefix(pattern: bytes, prefix: bytes) -> None:
    from servprobe.probes.pcre import literal_prefix

    assert literal_prefix(pattern) == prefix
    # soundness against PCRE2 itself: a subject without the prefix never matches
    if prefix:
        ref = pcre2.compile(pattern, jit=False)
        assert ref.search(b"\xfe" + prefix + b"bbbbcc") is None


@pytest.mark.parametrize(
    ("pattern", "linear"),
    [
        (rb"^SSH-([\d.]+)-", True),
        (rb"^SSH-([\d.]+)-(\S+)", False),  # two unbounded quantifiers: keeps the timeout
        (rb"^a.*b{1,3}", True),
        (rb"^a.*b.*c", False),
        (rb"^(ab)+", False),
        (rb"^(a)\1", False),
        (rb"^(?=a)a", False),
        (rb"^\w{1,100}\w{1,100}\w{1,100}z", False),
        (rb"a+", False),  # not anchored: tried at every offset
        (rb"^a|.*b", False),
    ],
)
def test_linear_shapes(pattern: bytes, linear: bool) -> None:
    from servprobe.probes.pcre import is_linear

    assert is_linear(pattern) is linear


def test_quantifier_limit_like_pcre() -> None:
    assert "too big" in check_pattern(rb"a{65536}", "")
    assert check_pattern(rb"a{65535}", "") is None


_REGEXY = st.lists(
    st.sampled_from(
        [
            b"^",
            b"$",
            b"a",
            b"\\",
            b"(",
            b")",
            b"[",
            b"]",
            b"{",
            b"}",
            b"2",
            b",",
            b"*",
            b"+",
            b"?",
            b"|",
            b".",
            b"\\x",
            b"\\d",
            b"(?",
            b"<",
            b"=",
            b"!",
            b"\\Q",
            b"\\E",
            b"\\1",
            b"\\v",
            b"\\R",
            b"\\o{",
            b"\\c",
            b"[:",
            b":]",
            b"\xff",
            b"\x00",
        ]
    ),
    max_size=16,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(_REGEXY, st.sampled_from(["", "i", "s", "is"]))
def test_check_pattern_never_raises(pattern: bytes, flags: str) -> None:
    problem = check_pattern(pattern, flags)
    if problem is None:  # accepted: it compiles, and it cannot match the empty string
        compiled = compile_pattern(pattern, flags)
        for subject in (b"", b"a", b"\n", b"a2,a", b"\xff\x00"):
            try:
                m = compiled.search(subject, timeout=0.5)
            except TimeoutError:
                continue
            assert m is None or m.end() > m.start(), (pattern, subject)


_PIECES = [
    b"SSH-2.0-",
    b"OpenSSH_",
    b"220 ",
    b"HTTP/1.1 200 OK\r\n",
    b"Server: ",
    b"nginx/",
    b"Apache/2.4.",
    b"\r\n",
    b"\n",
    b"\x00",
    b"\xff",
    b"1.2.3",
    b"(",
    b")",
    b" ",
    b"ESMTP",
    b"* OK ",
    b"+OK ",
    b"-ERR ",
    b"RFB 003.008",
    b"\x16\x03\x01",
    b"<html>",
    b"Debian",
]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=10).map(b"".join),
    st.sampled_from(["NULL", "GetRequest", "GenericLines", "HTTPOptions"]),
)
def test_generated_responses_first_match_equals_pcre2(
    db, pcre, data: bytes, probe_name: str
) -> None:
    plain = Matcher(db)
    probe = db.probe(probe_name)
    ours = plain.find(probe, data)
    theirs = pcre_find(plain, pcre, probe, data)
    assert (_key(*ours) if ours else None) == (_key(*theirs) if theirs else None)


def test_synthesized_matches_agree_with_pcre2(db, pcre) -> None:
    """Positive cases: responses hypothesis builds to match a line (from the pattern as the
    stdlib reads it), checked with our matcher and with PCRE2 — span and groups equal — and
    never filtered out by the first-byte index or the hyperscan prefilter."""
    import re
    import warnings

    from hypothesis import HealthCheck, Phase

    try:
        import hyperscan  # noqa: F401

        fast = load_db(NMAP_DB, prefilter=True)
    except ImportError:
        fast = None
    rnd = random.Random(7)
    triples = [(p, i, ln) for p in db.probes for i, ln in enumerate(p.matches)]
    plain = Matcher(db)
    tested, diffs = 0, []
    examples: list[bytes] = []
    for probe, i, ln in rnd.sample(triples, 300):
        flags = (re.I if "i" in ln.flags else 0) | (re.S if "s" in ln.flags else 0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                strategy = st.from_regex(re.compile(translate(ln.pattern), flags))
        except Exception:  # a pattern the stdlib cannot read: covered by the corpus tests
            continue
        examples.clear()

        @settings(
            max_examples=2,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def collect(s: bytes) -> None:
            examples.append(s)

        try:
            collect()
        except Exception:
            continue
        for s in examples:
            ours, theirs = plain.search(ln, s), psearch(pcre[id(ln)], s)
            tested += 1
            if _key(ln, ours) != _key(ln, theirs):
                diffs.append((str(ln.source), s[:60]))
            if ours is None:
                continue
            if i not in plain._index(probe).for_first_byte(s[0] if s else -1):
                diffs.append((str(ln.source), "first-byte index dropped it"))
            if fast is not None:
                fprobe = fast.probe(probe.name, probe.proto)
                if i not in fast.matcher.prefilter.candidates(fprobe, s):
                    diffs.append((str(ln.source), "hyperscan prefilter dropped it"))
    assert tested >= 400
    assert diffs == []
