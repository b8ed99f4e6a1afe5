"""The SF- fingerprint writer: nmap's escaping and wrapping, and round trip through the reader."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from record_nmap import printed_fingerprints, recorded
from servprobe.engine import fingerprint
from servprobe.engine.fingerprint import MAX_RESPONSE, build_fingerprint, escape_response
from servprobe.probes.fpreader import read_fingerprints


def test_escaping_rules():
    assert escape_response(b"abcXYZ019") == "abcXYZ019"
    assert escape_response(b"\x00a") == "\\0a"
    assert escape_response(b"\x001") == "\\x001"  # NUL before a digit: not an octal escape
    assert escape_response(b'\\?"[]().*+$^|') == '\\\\\\?\\"\\[\\]\\(\\)\\.\\*\\+\\$\\^\\|'
    assert escape_response(b"%;,:=-_/@#&!~`'<>{}") == "%;,:=-_/@#&!~`'<>{}"
    assert escape_response(b"\r\n\t ") == "\\r\\n\\t\\x20"
    assert escape_response(b"\x7f\x80\xff") == "\\x7f\\x80\\xff"


def test_header_and_wrapping():
    fp = build_fingerprint(8000, "tcp", 7, [("NULL", b"x" * 300)], now=0, platform="x86_64-pc-linux-gnu")
    assert fp is not None and fp.endswith('");')
    lines = fp.split("\n")
    assert lines[0].startswith("SF-Port8000-TCP:V=") and "%I=7%D=1/1%Time=0%P=x86_64-pc-linux-gnu" in lines[0]
    assert all(len(line) == 74 for line in lines[:-1])
    assert all(line.startswith("SF:") for line in lines[1:])
    assert "%T=SSL" in build_fingerprint(443, "tcp", 7, [("NULL", b"a")], tls=True)


def test_limits():
    fp = build_fingerprint(1, "udp", 7, [("P", b"a" * 5000)])
    flat = fp.replace("\nSF:", "")
    assert "%r(P,1388," in flat and flat.count("a") >= MAX_RESPONSE
    assert len(flat.split('"')[1]) == MAX_RESPONSE
    many = build_fingerprint(1, "tcp", 7, [(f"P{i}", b"\xff" * 200) for i in range(20)])
    assert 2200 < len(many.replace("\nSF:", "")) < 2200 + 5 * 200 + 100  # stops growing past 2200


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["NULL", "GetRequest", "DNSVersionBindReqTCP"]), st.binary(min_size=1, max_size=1200)), min_size=1, max_size=4))
def test_round_trip_through_reader(responses):
    fp = build_fingerprint(31337, "tcp", 7, responses)
    (parsed,) = read_fingerprints(fp)
    assert parsed.port == 31337 and parsed.proto == "tcp"
    assert parsed.fields["I"] == "7"
    for got, (name, data) in zip(parsed.responses, responses, strict=False):
        assert got.probe == name
        assert got.length == len(data)
        assert got.data == data[:MAX_RESPONSE]


# --- against fingerprints nmap 7.93 printed (tests/data/nmap/README.md) ---------------------

FP_RUN, FP_NORMAL, FP_XML = recorded("fingerprints")


def _sent_replies(port: int) -> list[bytes]:
    (server,) = [s for s in FP_RUN["servers"] if s["port"] == port]
    return [bytes.fromhex(x) for x in server["sent"]]


@pytest.mark.parametrize("printed", printed_fingerprints(FP_NORMAL),
                         ids=lambda t: t.split(":", 1)[0])
def test_writer_equals_what_nmap_printed(printed: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Given nmap's header values and the bytes the server really sent for each probe nmap
    names, our writer prints nmap's text character for character: escaping, the 74-column
    wrap, the 900-byte cut and where it stops adding responses. Fails (checked) with WRAP 77,
    MAX_RESPONSE 1000 or MAX_LENGTH 3500 in engine/fingerprint.py."""
    head = dict(x.split("=", 1) for x in printed.split(":", 1)[1].split("%r(")[0].split("%"))
    port = int(printed.split("-")[1].removeprefix("Port"))
    sent = _sent_replies(port)
    responses = []
    for rec in read_fingerprints(printed)[0].responses:
        # which of the server's replies this record is (the reader only picks it: what the
        # writer gets are the bytes the server logged, and the text is compared with nmap's)
        (data,) = {d for d in sent if len(d) == rec.length and d.startswith(rec.data)}
        responses.append((rec.probe, data))
    if len(printed.replace("\nSF:", "")) > 2200:
        # nmap stopped adding responses (the long banner answered every probe; nmap printed
        # only these): one more must not be added by ours either
        responses.append(("GenericLines", responses[-1][1]))
    monkeypatch.setattr(fingerprint, "__version__", head["V"])
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        ours = build_fingerprint(port, "tcp", int(head["I"]), responses, now=int(head["Time"], 16),
                                 platform=head["P"])
    finally:
        monkeypatch.undo()
        time.tzset()
    assert ours == printed
