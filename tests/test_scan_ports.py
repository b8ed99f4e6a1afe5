"""Port selection (-p, -F, --top-ports, names, T:/U:) and the port table (bundled and nmap's)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servprobe.portspec import PortSpecError, parse_portspec
from servprobe.scan.ports import compress, select_ports
from servprobe.scan.services import NMAP_SERVICES, bundled_path, load_port_table, service_name


@pytest.fixture(scope="module")
def bundled():
    return load_port_table("bundled")


def test_bundled_table_header_names_its_sources(bundled) -> None:
    head = bundled_path().read_text().splitlines()[:12]
    text = "\n".join(head)
    assert "netbase" in text and "IANA" in text and "Not derived from nmap-services" in text
    assert bundled.name(22, "tcp") == "ssh"
    assert bundled.name(53, "udp") == "domain"
    assert bundled.name(3389, "tcp") == "ms-wbt-server"
    assert bundled.name(5900, "tcp") == "vnc"  # from our ranked list, not netbase


def test_bundled_top_ports(bundled) -> None:
    top10 = bundled.top_ports(10, "tcp")
    assert {22, 80, 443, 21, 25}.issubset(top10)
    assert len(top10) == 10
    top1000 = bundled.top_ports(1000, "tcp")
    assert len(top1000) == len(set(top1000)) == 1000
    assert set(top10) <= set(top100 := bundled.top_ports(100, "tcp")) <= set(top1000)
    assert len(top100) == 100
    assert {53, 161, 123}.issubset(bundled.top_ports(10, "udp"))
    assert len(bundled.top_ports(65535, "tcp")) == 65535


def test_nmap_services_is_read_at_run_time_when_installed() -> None:
    table = load_port_table("nmap")
    assert table.source == str(NMAP_SERVICES)
    assert table.name(953, "tcp") == "rndc"
    # nmap -F == top 100 by frequency; 80 and 22 are always among them
    assert {22, 80, 443}.issubset(table.top_ports(100, "tcp"))
    assert len(table.top_ports(1000, "tcp")) == 1000


def test_service_name_for_engine_guesses() -> None:
    assert service_name(22, "tcp") == "ssh"
    assert service_name(1, "udp") in (None, "tcpmux")
    assert service_name(0, "tcp") is None or isinstance(service_name(0, "tcp"), str)


def test_default_fast_top_and_explicit(bundled) -> None:
    assert len(select_ports(["tcp"], table=bundled).get("tcp")) == 1000
    assert len(select_ports(["tcp"], fast=True, table=bundled).get("tcp")) == 100
    assert len(select_ports(["tcp"], top=5, table=bundled).get("tcp")) == 5
    sel = select_ports(["tcp", "udp"], spec="22,U:53,T:80-82", table=bundled)
    assert sel.ports == {"tcp": [22, 80, 81, 82], "udp": [22, 53]}
    # items before a prefix go to every scanned protocol
    sel = select_ports(["tcp", "udp"], spec="53", table=bundled)
    assert sel.ports == {"tcp": [53], "udp": [53]}
    assert select_ports(["tcp"], spec="-", table=bundled).total() == 65535
    assert select_ports(["tcp"], spec="ssh,http", table=bundled).get("tcp") == [22, 80]
    assert 443 in select_ports(["tcp"], spec="http*", table=bundled).get("tcp")
    # -p with --top-ports keeps the most common of the given ports
    assert select_ports(["tcp"], spec="1-1024", top=2, table=bundled).get("tcp") == [80, 443]
    sel = select_ports(["tcp"], spec="20-25", exclude="21,23", table=bundled)
    assert sel.get("tcp") == [20, 22, 24, 25]


BAD_PORTS = [
    ("70000", "port out of range 0-65535", "70000"),
    ("1-70000", "port out of range", "1-70000"),
    ("9-2", "range goes backwards", "9-2"),
    ("22,,80", "empty item", "22,,80"),
    ("nosuchservice", "unknown service name", "nosuchservice"),
    ("U:53", "UDP ports given but no -sU", "U:53"),
    ("T:", "protocol prefix without ports", "T:"),
    ("", "empty port list", ""),
]


@pytest.mark.parametrize(("spec", "message", "offending"), BAD_PORTS)
def test_bad_port_lists_name_the_offending_text(bundled, spec: str, message: str, offending: str) -> None:
    with pytest.raises(PortSpecError) as err:
        select_ports(["tcp"], spec=spec, table=bundled)
    assert message in str(err.value)
    assert repr(offending) in str(err.value)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(1, 65535), min_size=1, max_size=300))
def test_compress_round_trips_through_the_port_parser(ports: set[int]) -> None:
    text = compress(ports)
    assert parse_portspec(text).tcp == ports
    assert ",," not in text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(1, 65535)), min_size=1, max_size=8))
def test_ranges_select_exactly_their_union(ranges: list[tuple[int, int]]) -> None:
    spec = ",".join(f"{min(a, b)}-{max(a, b)}" for a, b in ranges)
    expected = set()
    for a, b in ranges:
        expected.update(range(min(a, b), max(a, b) + 1))
    table = load_port_table("bundled")
    assert select_ports(["tcp"], spec=spec, table=table).get("tcp") == sorted(expected)


def test_builder_reproduces_the_bundled_table(tmp_path: Path) -> None:
    from servprobe.scan.build_port_table import build

    # /etc/services: Debian package netbase (Makefile APT_PACKAGES)
    rebuilt = [ln for ln in build("/etc/services").splitlines() if not ln.startswith("#")]
    shipped = [ln for ln in bundled_path().read_text().splitlines() if not ln.startswith("#")]
    assert rebuilt == shipped
