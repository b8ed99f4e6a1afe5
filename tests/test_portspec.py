"""nmap port-list syntax shared by -p and the probe file's Exclude/ports directives."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servprobe.portspec import PortSpecError, lookup_in_table, parse_portspec


def test_ranges_lists_and_open_ends():
    spec = parse_portspec("22,80-82,-3,65534-")
    assert spec.tcp == {22, 80, 81, 82, 1, 2, 3, 65534, 65535}
    assert spec.udp == set()


def test_dash_alone_is_every_port():
    assert parse_portspec("-").tcp == set(range(1, 65536))


def test_protocol_prefixes_switch_until_next_prefix():
    spec = parse_portspec("T:9100-9102,U:53,161,T:25")
    assert spec.tcp == {9100, 9101, 9102, 25}
    assert spec.udp == {53, 161}
    assert ("udp", 161) in spec.pairs()


def test_default_protocols_apply_before_a_prefix():
    spec = parse_portspec("53", default_protos=("tcp", "udp"))
    assert spec.tcp == {53} and spec.udp == {53}


def test_service_names_through_a_table():
    lookup = lookup_in_table([("http", "tcp", 80), ("https", "tcp", 443), ("domain", "udp", 53)])
    spec = parse_portspec("http*,U:domain", name_lookup=lookup)
    assert spec.tcp == {80, 443}
    assert spec.udp == {53}


@pytest.mark.parametrize(
    ("text", "offending"),
    [
        ("", ""),
        ("70000", "70000"),
        ("90-80", "90-80"),
        ("22,,23", "22,,23"),
        ("T:", "T:"),
        ("ssh", "ssh"),
        ("1-2-3", "1-2-3"),
        ("12a", "12a"),
    ],
)
def test_bad_port_lists_name_the_offending_text(text, offending):
    with pytest.raises(PortSpecError) as err:
        parse_portspec(text)
    assert err.value.text == offending
    assert repr(offending) in str(err.value)


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=20))
def test_any_list_of_ports_round_trips(ports):
    spec = parse_portspec(",".join(map(str, ports)))
    assert spec.tcp == set(ports)


@given(st.text(max_size=30))
def test_arbitrary_text_parses_or_raises_portspec_error(text):
    try:
        parse_portspec(text)
    except PortSpecError:
        pass
