"""Property tests (hypothesis) for the parsers and the store: invariants over generated input."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from servprobe.portspec import PortSpecError, parse_portspec
from servprobe.result import RpcInfo, ServiceResult

ports = st.integers(min_value=0, max_value=65535)


def _ranges(values: set[int]) -> str:
    """Compact nmap text for a set of ports: 1-3,7,9-10."""
    out, run = [], []
    for p in sorted(values):
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [p]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


@given(st.sets(ports, min_size=1, max_size=200), st.sets(ports, max_size=50))
def test_portspec_round_trips(tcp: set[int], udp: set[int]) -> None:
    text = "T:" + _ranges(tcp) + ("," + "U:" + _ranges(udp) if udp else "")
    spec = parse_portspec(text)
    assert spec.tcp == tcp and spec.udp == udp


@given(st.text(alphabet=string.printable + "²١\u00a0-:,", max_size=40))
def test_portspec_only_raises_its_error(text: str) -> None:
    try:
        spec = parse_portspec(text, ("tcp", "udp"))
    except PortSpecError:
        return
    assert all(0 <= p <= 65535 for p in spec.tcp | spec.udp)


_names = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_any_text = st.one_of(st.none(), st.text(max_size=60))  # incl. surrogates, NUL, escapes


@st.composite
def results(draw: st.DrawFn) -> ServiceResult:
    rpc = draw(st.one_of(st.none(), st.builds(
        RpcInfo, program=st.integers(0, 2**32 - 1), name=st.text(max_size=10),
        lowver=st.integers(0, 2**32 - 1), highver=st.integers(0, 2**32 - 1),
        via=st.sampled_from(["grind", "portmapper"]))))
    return ServiceResult(
        address=draw(st.sampled_from(["127.0.0.1", "::1", "10.0.0.1"])),
        port=draw(ports),
        proto=draw(st.sampled_from(["tcp", "udp"])),
        state=draw(st.sampled_from(["open", "open|filtered", "closed"])),
        reason=draw(st.text(max_size=10)),
        service=draw(_any_text), product=draw(_any_text), version=draw(_any_text),
        extrainfo=draw(_any_text), hostname=draw(_any_text), ostype=draw(_any_text),
        devicetype=draw(_any_text),
        cpes=draw(st.lists(st.text(max_size=30), max_size=3)),
        tunnel=draw(st.sampled_from([None, "ssl"])),
        method=draw(st.sampled_from(["probed", "table"])),
        conf=draw(st.integers(0, 10)), soft=draw(st.booleans()),
        matched=draw(_any_text), probe=draw(st.one_of(st.none(), _names)),
        fingerprint=draw(_any_text), rpc=rpc,
        hostnames=draw(st.lists(_names, max_size=2)),
        finished=draw(st.one_of(st.none(), st.floats(0, 2e9))),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(results(), max_size=8))
def test_store_keeps_every_result_exactly(rs: list[ServiceResult]) -> None:
    from servprobe.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "p.sqlite") as store:
        sid = store.begin_scan(["x"], {})
        expected: dict[tuple[str, str, int], ServiceResult] = {}
        for r in rs:
            store.record(sid, r)
            expected[r.key] = r
        got = {r.key: r for r in store.results(sid)}
        assert store.finished(sid) == set(expected)
        for key, r in expected.items():
            g = got[key]
            if r.finished is None:  # the store stamps a time when the result had none
                g.finished = None
            assert g == r


@settings(max_examples=100)
@given(st.lists(results(), max_size=10), st.lists(results(), max_size=10))
def test_diff_is_symmetric(a: list[ServiceResult], b: list[ServiceResult]) -> None:
    from servprobe.commands.diff import Snapshot, compare

    old = Snapshot("a", {r.key: r for r in a})
    new = Snapshot("b", {r.key: r for r in b})
    assert compare(old, old) == []
    forward = {(c.address, c.proto, c.port, c.kind) for c in compare(old, new)}
    back = {(c.address, c.proto, c.port, c.kind) for c in compare(new, old)}
    swap = {"opened": "closed", "closed": "opened", "changed": "changed"}
    assert {(a_, p, n, swap[k]) for a_, p, n, k in forward} == back


_directives = st.sampled_from([
    "Probe TCP X q|GET / HTTP/1.0\\r\\n\\r\\n|", "Probe UDP Y q|\\x00\\x01|", "Probe TCP NULL q||",
    "match http m|^HTTP/1\\.[01] (\\d+)| p/Web $1/ v/$2/ cpe:/a:x:y:$1/",
    "softmatch ftp m|^220 |i", "match x m=^a(b)=s p/$P(1)/ i/$SUBST(1,\"a\",\"b\")/ o/$I(1,\">\")/",
    "ports 1-100,T:22", "sslports 443", "rarity 7", "fallback X,Y", "totalwaitms 5000",
    "tcpwrappedms 99", "Exclude T:9100-9107", "# comment", "", "match m|", "match a m|(|",
    "match e m|a*|", "rarity 10", "Probe TCP q||",
])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_directives, st.text(max_size=40)), max_size=25))
def test_probe_parser_never_raises(lines: list[str]) -> None:
    from servprobe.probes.parser import parse_bytes

    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    _db, errors = parse_bytes(data, "prop.probes")
    # list items may hold newlines themselves: count the lines the parser really sees
    for e in errors:
        assert 0 <= e.line <= data.count(b"\n") + 1
