"""nmap target syntax: expansion properties, bad inputs and their messages, laziness, -iL,
--exclude, names and IPv6."""

from __future__ import annotations

import io
import ipaddress
import itertools
import socket
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servprobe.scan.targets import (
    NameSpec,
    NetworkSpec,
    OctetSpec,
    TargetError,
    build_target_list,
    parse_target,
)


def fake_resolver(table: dict[str, list[str]]):
    def resolve(name: str, family: int) -> list[str]:
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [a for a in table[name] if (":" in a) == (family == socket.AF_INET6)]

    return resolve


octet_range = st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: (min(t), max(t)))
octet = st.lists(octet_range, min_size=1, max_size=3)


def octet_text(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


@settings(max_examples=150, deadline=None)
@given(st.lists(octet, min_size=4, max_size=4))
def test_octet_ranges_expand_to_exactly_the_product(octets: list[list[tuple[int, int]]]) -> None:
    text = ".".join(octet_text(o) for o in octets)
    spec = parse_target(text)
    assert isinstance(spec, OctetSpec)
    allowed = [{v for lo, hi in o for v in range(lo, hi + 1)} for o in octets]
    expected_count = 1
    for a in allowed:
        expected_count *= len(a)
    assert spec.count() == expected_count
    # check a bounded prefix of the expansion (counts can reach 2^32)
    sample = list(itertools.islice(iter(spec), 2000))
    assert len(sample) == min(2000, expected_count)
    assert len({h.address for h in sample}) == len(sample)
    for host in sample:
        parts = [int(x) for x in host.address.split(".")]
        assert all(p in allowed[i] for i, p in enumerate(parts))
        assert spec.contains(ipaddress.ip_address(host.address))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(16, 32))
def test_cidr_covers_its_block_network_and_broadcast_included(addr: int, prefix: int) -> None:
    text = f"{ipaddress.IPv4Address(addr)}/{prefix}"
    spec = parse_target(text)
    assert isinstance(spec, NetworkSpec)
    net = ipaddress.IPv4Network(text, strict=False)
    assert spec.count() == net.num_addresses
    got = [h.address for h in itertools.islice(iter(spec), 5000)]
    assert got[0] == str(net.network_address)
    if net.num_addresses <= 5000:
        assert got[-1] == str(net.broadcast_address)
        assert len(got) == net.num_addresses
    assert all(ipaddress.ip_address(a) in net for a in got)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
def test_exclusions_remove_exactly_the_excluded(a: int, b: int, c: int) -> None:
    lo, hi = min(b, c), max(b, c)
    tl = build_target_list([f"10.{a}.0.0/24"], exclude=[f"10.{a}.0.{lo}-{hi}"])
    got = [h.address for h in tl]
    assert len(got) == 256 - (hi - lo + 1)
    assert all(not (lo <= int(x.split(".")[3]) <= hi) for x in got)


# the offending text must appear in the message
BAD_TARGETS = [
    ("1.2.3.256", "octet out of range 0-255"),
    ("1.2.3", "IPv4 target needs 4 octets"),
    ("1.2.3.4.5", "IPv4 target needs 4 octets"),
    ("1.2.3.4/33", "prefix length must be 0-32"),
    ("1.2.3.4/", "missing prefix length"),
    ("1.2.3.4/x", "bad prefix length"),
    ("1.2.3.9-2", "octet range goes backwards"),
    ("1.2.3.1--2", "bad octet range"),
    ("1.2,,3.3.4", "empty item in octet list"),
    ("1..3.4", "empty octet"),
    ("1.2-3.3.4/24", "CIDR prefix on an octet range"),
    ("::1", "IPv6 target needs -6"),
    ("fe80::zz", "not a valid IPv6 address"),
    ("a..b", "not a valid hostname or address"),
    ("-foo", "not a valid hostname or address"),
    ("ho$t", "not a valid hostname or address"),
    ("12345", "not an IPv4 address or hostname"),
    ("", "empty or malformed target"),
]


@pytest.mark.parametrize(("text", "message"), BAD_TARGETS)
def test_bad_targets_name_the_offending_text(text: str, message: str) -> None:
    with pytest.raises(TargetError) as err:
        parse_target(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)
    assert err.value.text == text


def test_ipv4_in_an_ipv6_scan_is_refused() -> None:
    with pytest.raises(TargetError, match="IPv6 scan"):
        parse_target("127.0.0.1", ipv6=True)


def test_ipv6_addresses_and_prefixes() -> None:
    spec = parse_target("::1", ipv6=True)
    assert [h.address for h in spec] == ["::1"]
    assert [h.family for h in spec] == [socket.AF_INET6]
    spec = parse_target("fd00::/126", ipv6=True)
    assert [h.address for h in spec] == ["fd00::", "fd00::1", "fd00::2", "fd00::3"]
    big = parse_target("2001:db8::/32", ipv6=True)
    assert big.count() == 2**96
    assert next(iter(big)).address == "2001:db8::"
    assert [h.address for h in parse_target("[::1]", ipv6=True)] == ["::1"]


def test_a_slash_8_is_generated_lazily() -> None:
    tracemalloc.start()
    try:
        tl = build_target_list(["10.0.0.0/8", "11.0-255.0-255.0-255"])
        assert tl.count() == 2 * 2**24
        it = iter(tl)
        first = [next(it).address for _ in range(3)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert peak < 2_000_000  # expanding 2^25 addresses would take gigabytes


def test_hostnames_resolve_when_iterated_and_keep_the_name() -> None:
    warnings: list[str] = []
    resolver = fake_resolver({"web.test": ["127.0.0.7"], "v6.test": ["::1"]})
    tl = build_target_list(["web.test", "nowhere.test", "web.test/30"], resolver=resolver, warn=warnings.append)
    assert isinstance(tl.specs[0], NameSpec)
    hosts = list(tl)
    assert [(h.address, h.hostname) for h in hosts][:1] == [("127.0.0.7", "web.test")]
    assert [h.address for h in hosts[1:]] == ["127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7"]
    assert warnings == ['Failed to resolve "nowhere.test".']
    v6 = list(build_target_list(["v6.test"], ipv6=True, resolver=resolver))
    assert [(h.address, h.family) for h in v6] == [("::1", socket.AF_INET6)]


def test_real_resolver_localhost() -> None:
    assert [h.address for h in parse_target("localhost")] == ["127.0.0.1"]


def test_input_file_comments_and_stdin(tmp_path) -> None:
    f = tmp_path / "targets.txt"
    f.write_text("# lab\n127.0.0.1 127.0.0.2\n\n127.0.1.0/31  # two more\n")
    assert [h.address for h in build_target_list([], input_file=str(f))] == [
        "127.0.0.1", "127.0.0.2", "127.0.1.0", "127.0.1.1",
    ]
    stdin = io.StringIO("127.0.0.9\n127.0.0.10-11\n")
    tl = build_target_list(["127.0.0.1"], input_file="-", stdin=stdin)
    assert [h.address for h in tl] == ["127.0.0.1", "127.0.0.9", "127.0.0.10", "127.0.0.11"]


def test_bad_line_in_input_file_is_reported_before_scanning(tmp_path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("127.0.0.1\n127.0.0.300\n")
    with pytest.raises(TargetError, match=r"'127\.0\.0\.300'"):
        build_target_list([], input_file=str(f))
    with pytest.raises(TargetError, match="cannot read target file"):
        build_target_list([], input_file=str(tmp_path / "missing"))


def test_exclude_and_excludefile(tmp_path) -> None:
    ex = tmp_path / "ex.txt"
    ex.write_text("127.0.0.3\n")
    tl = build_target_list(["127.0.0.0/29"], exclude=["127.0.0.1,127.0.0.5-6"], exclude_file=str(ex))
    assert [h.address for h in tl] == ["127.0.0.0", "127.0.0.2", "127.0.0.4", "127.0.0.7"]
    with pytest.raises(TargetError, match="--exclude"):
        build_target_list(["127.0.0.1"], exclude=["127.0.0.400"])
