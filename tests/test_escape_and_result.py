"""Escaping of untrusted bytes and the display rules of the shared result model."""

import json
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from servprobe.escape import printable_bytes, terminal_safe, xml_safe
from servprobe.result import ServiceResult


def test_printable_bytes_escapes_controls_and_high_bytes():
    assert printable_bytes(b"SSH-2.0\r\n\x00\xff\\") == "SSH-2.0\\x0d\\x0a\\x00\\xff\\\\"


@given(st.binary(max_size=200))
def test_printable_bytes_output_is_plain_ascii(data):
    text = printable_bytes(data)
    assert all(0x20 <= ord(c) < 0x7F for c in text)


@given(st.text(max_size=200))
def test_terminal_safe_removes_every_control_character(text):
    out = terminal_safe(text)
    assert "\x1b" not in out
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


@given(st.text(max_size=200))
def test_xml_safe_text_always_parses(text):
    el = ET.Element("service", product=xml_safe(text))
    ET.fromstring(ET.tostring(el))
    json.loads(json.dumps(xml_safe(text)))


def test_display_columns_like_nmap():
    r = ServiceResult("127.0.0.1", 443, "tcp", service="http", product="nginx", version="1.22.1",
                      tunnel="ssl", method="probed", conf=10, ostype="Linux")
    assert r.display_service() == "ssl/http"
    assert r.display_version() == "nginx 1.22.1"
    guess = ServiceResult("127.0.0.1", 953, "tcp", service="rndc")
    assert guess.display_service() == "rndc?"
    ssh = ServiceResult("127.0.0.1", 22, "tcp", service="ssh", product="OpenSSH",
                        version="9.2p1 Debian 2+deb12u3", extrainfo="Ubuntu Linux; protocol 2.0",
                        method="probed")
    assert ssh.display_version() == "OpenSSH 9.2p1 Debian 2+deb12u3 (Ubuntu Linux; protocol 2.0)"
