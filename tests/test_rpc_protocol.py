"""ONC RPC wire format, portmapper lists, RPC table and the sans-IO grinder (no sockets)."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servprobe.rpc.grind import Grinder, Outcome
from servprobe.rpc.portmap import (
    encode_pmap_v2,
    parse_dump_reply,
    parse_pmap_v2,
    parse_rpcb_dump,
    port_of_uaddr,
)
from servprobe.rpc.protocol import (
    AUTH_SYS,
    AcceptStat,
    RecordReader,
    RejectStat,
    RpcError,
    decode_call,
    decode_reply,
    encode_call,
    encode_reply,
    record_mark,
)
from servprobe.rpc.table import RpcTableError, load_table, parse_table

# -- protocol -------------------------------------------------------------------------------


def test_call_layout_matches_rfc5531() -> None:
    msg = encode_call(0x01020304, 100024, 7, 0)
    assert len(msg) == 40
    xid, mtype, rpcvers, prog, vers, proc = struct.unpack_from(">6I", msg)
    assert (xid, mtype, rpcvers, prog, vers, proc) == (0x01020304, 0, 2, 100024, 7, 0)
    assert msg[24:] == b"\0" * 16  # AUTH_NONE credential and verifier
    call = decode_call(msg)
    assert (call.prog, call.vers, call.proc, call.args) == (100024, 7, 0, b"")


def test_auth_sys_call_decodes() -> None:
    from servprobe.rpc.protocol import auth_sys_body

    msg = encode_call(9, 100003, 3, cred_flavor=AUTH_SYS, cred_body=auth_sys_body(machine="abc"))
    assert struct.unpack_from(">I", msg, 24)[0] == AUTH_SYS
    assert decode_call(msg).prog == 100003


@pytest.mark.parametrize(
    "accept", [AcceptStat.SUCCESS, AcceptStat.PROG_UNAVAIL, AcceptStat.PROC_UNAVAIL,
               AcceptStat.GARBAGE_ARGS, AcceptStat.SYSTEM_ERR]
)
def test_reply_roundtrip(accept: AcceptStat) -> None:
    r = decode_reply(encode_reply(77, accept, body=b"\0\0\0\1"))
    assert r.xid == 77 and r.accept == accept and r.reject is None


def test_prog_mismatch_carries_range() -> None:
    r = decode_reply(encode_reply(5, AcceptStat.PROG_MISMATCH, low=2, high=4))
    assert (r.accept, r.low, r.high) == (AcceptStat.PROG_MISMATCH, 2, 4)


def test_denied_replies() -> None:
    rpc_mismatch = struct.pack(">IIIIII", 1, 1, 1, 0, 2, 2)
    r = decode_reply(rpc_mismatch)
    assert r.reject == RejectStat.RPC_MISMATCH and (r.low, r.high) == (2, 2)
    auth = struct.pack(">IIIII", 2, 1, 1, 1, 5)
    r = decode_reply(auth)
    assert r.reject == RejectStat.AUTH_ERROR and r.auth_stat == 5


@pytest.mark.parametrize(
    "junk",
    [b"", b"\0\0\0\1", b"HTTP/1.1 400 Bad Request\r\n\r\n", encode_call(1, 2, 3),
     struct.pack(">III", 1, 1, 7), struct.pack(">IIIII", 1, 1, 0, 0, 5000)],
)
def test_not_a_reply_raises(junk: bytes) -> None:
    with pytest.raises(RpcError):
        decode_reply(junk)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_decode_reply_only_raises_rpcerror(data: bytes) -> None:
    try:
        decode_reply(data)
    except RpcError:
        pass


def test_record_marking_reassembles_fragments_split_anywhere() -> None:
    msgs = [encode_reply(i, AcceptStat.PROG_UNAVAIL) for i in range(5)]
    stream = b"".join(record_mark(m, fragment_size=7) for m in msgs)
    for chunk in (1, 3, 5, 64, len(stream)):
        reader = RecordReader()
        out: list[bytes] = []
        for i in range(0, len(stream), chunk):
            out += reader.feed(stream[i : i + chunk])
        assert out == msgs
        assert reader.pending == 0


def test_record_cap_rejects_before_buffering() -> None:
    reader = RecordReader(max_record=1000)
    with pytest.raises(RpcError, match="exceeds cap"):
        reader.feed(struct.pack(">I", 0x80000000 | 5000))
    # The cap counts the whole record, across fragments.
    reader = RecordReader(max_record=100)
    with pytest.raises(RpcError):
        reader.feed(struct.pack(">I", 60) + b"x" * 60 + struct.pack(">I", 0x80000000 | 60))


# -- portmapper lists --------------------------------------------------------------------


def test_pmap_v2_dump_parse() -> None:
    body = encode_pmap_v2([(100000, 2, 6, 111), (100024, 1, 17, 40111), (100024, 1, 6, 40111)])
    entries = parse_pmap_v2(body)
    assert [(m.prog, m.vers, m.proto, m.port) for m in entries] == [
        (100000, 2, "tcp", 111), (100024, 1, "udp", 40111), (100024, 1, "tcp", 40111)]
    reply = encode_reply(3, AcceptStat.SUCCESS, body=body)
    assert len(parse_dump_reply(reply, 2)) == 3
    with pytest.raises(RpcError):
        parse_pmap_v2(body[:-8])


def _xdr_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">I", len(b)) + b + b"\0" * ((-len(b)) % 4)


def test_rpcb_dump_parse_filters_family() -> None:
    body = b""
    for prog, vers, netid, uaddr in [(100024, 1, "tcp", "0.0.0.0.156.175"),
                                     (100024, 1, "tcp6", "::.156.175"),
                                     (100000, 4, "local", "/run/rpcbind.sock")]:
        body += struct.pack(">III", 1, prog, vers) + _xdr_string(netid) + _xdr_string(uaddr)
        body += _xdr_string("superuser")
    body += struct.pack(">I", 0)
    v4 = parse_rpcb_dump(body, 4)
    v6 = parse_rpcb_dump(body, 6)
    assert [(m.proto, m.port, m.netid) for m in v4] == [("tcp", 40111, "tcp")]
    assert [(m.proto, m.port, m.netid) for m in v6] == [("tcp", 40111, "tcp6")]


@pytest.mark.parametrize(
    ("uaddr", "port"),
    [("127.0.0.1.0.111", 111), ("::1.3.215", 983), ("fe80::1.255.255", 65535),
     ("/run/rpcbind.sock", None), ("1.2.3.4.256.1", None), ("x", None)],
)
def test_universal_address_port(uaddr: str, port: int | None) -> None:
    assert port_of_uaddr(uaddr) == port


# -- table ------------------------------------------------------------------------------


def test_bundled_table_entries_have_sources_and_known_programs() -> None:
    table = load_table(system=False)
    assert len(table) >= 80
    for prog in table:
        assert prog.source, prog
    expected = {100000: "rpcbind", 100003: "nfs", 100005: "mountd", 100011: "rquotad",
                100021: "nlockmgr", 100024: "status", 100004: "ypserv", 100007: "ypbind",
                100009: "yppasswdd", 100227: "nfs_acl"}
    for number, name in expected.items():
        assert table.name(number) == name
    assert table.lookup("portmapper").number == 100000
    assert table.lookup("statd").number == 100024
    assert table.name(123456789) == "rpc-123456789"


def test_system_files_extend_the_table() -> None:
    import os

    if not os.path.exists("/etc/rpc"):
        pytest.fail("/etc/rpc (netbase) is expected on the test machine")
    full = load_table()
    ours = load_table(system=False)
    assert len(full) > len(ours)
    assert "/etc/rpc" in full.files
    # ours first, in ascending order: the grind order is stable
    head = full.numbers()[: len(ours)]
    assert head == sorted(head) == ours.numbers()


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [("good 100 a\nbad\n", "t:2", "expected"),
     ("x 100\ny abc\n", "t:2", "bad program number"),
     ("x 100\ny 100\n", "t:2", "already listed at line 1"),
     ("x 0\n", "t:1", "out of range")],
)
def test_table_errors_carry_file_and_line(text: str, where: str, what: str) -> None:
    with pytest.raises(RpcTableError) as err:
        parse_table(text, "t")
    assert str(err.value).startswith(where + ":")
    assert what in str(err.value)


def test_lenient_parse_skips_bad_lines_of_foreign_files() -> None:
    progs = parse_table("a 1\nbroken\nb 2 alias # c\n", "/etc/rpc", strict=False)
    assert [(p.name, p.number, p.aliases) for p in progs] == [("a", 1, ()), ("b", 2, ("alias",))]


# -- the sans-IO grinder ------------------------------------------------------------------


class FakeServer:
    """Answers Grinder calls in memory, like a SunRPC server hosting `programs`."""

    def __init__(self, programs: dict[int, tuple[int, int]], promiscuous: bool = False,
                 drop: int = 0, ignore_versions: bool = False) -> None:
        self.programs = programs
        self.promiscuous = promiscuous
        self.drop = drop
        self.ignore_versions = ignore_versions
        self.seen = 0

    def __call__(self, msg: bytes) -> bytes | None:
        self.seen += 1
        if self.seen <= self.drop:
            return None
        call = decode_call(msg)
        if self.promiscuous:
            return encode_reply(call.xid, AcceptStat.SUCCESS)
        if call.prog not in self.programs:
            return encode_reply(call.xid, AcceptStat.PROG_UNAVAIL)
        low, high = self.programs[call.prog]
        if self.ignore_versions or low <= call.vers <= high:
            return encode_reply(call.xid, AcceptStat.SUCCESS)
        return encode_reply(call.xid, AcceptStat.PROG_MISMATCH, low=low, high=high)


def run_machine(m: Grinder, server, *, reverse: bool = False, max_rounds: int = 10_000):
    """Deliver every call's answer (optionally in reverse order per batch), fake clock."""
    now = 0.0
    for _ in range(max_rounds):
        out = m.poll(now)
        replies = [r for r in (server(msg) for msg in out) if r is not None]
        if reverse:
            replies.reverse()
        for r in replies:
            m.receive(r, now + 0.001)
        if m.done:
            return m.result
        if not replies:
            deadline = m.next_deadline()
            now = deadline if deadline is not None else now + 0.01
        now += 0.001
    raise AssertionError("grinder did not finish")


TABLE = [100000 + i for i in range(300)]


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_finds_program_and_version_range(stream: bool, reverse: bool) -> None:
    m = Grinder(TABLE, stream=stream, window=16, rng=random.Random(1))
    res = run_machine(m, FakeServer({100150: (2, 4)}), reverse=reverse)
    assert res.outcome is Outcome.FOUND
    assert (res.program, res.lowver, res.highver) == (100150, 2, 4)
    # it stopped near the hit instead of walking the whole table
    assert res.calls < 150 + 2 * 16


@pytest.mark.parametrize("reverse", [False, True])
def test_two_programs_on_one_port_report_the_earliest_in_table(reverse: bool) -> None:
    for seed in range(5):
        m = Grinder(TABLE, stream=False, window=64, rng=random.Random(seed))
        res = run_machine(m, FakeServer({100003: (2, 4), 100040: (3, 3)}), reverse=reverse)
        assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100003, 2, 4)


def test_promiscuous_server_gets_no_identity() -> None:
    m = Grinder(TABLE, stream=True, window=16, rng=random.Random(2))
    res = run_machine(m, FakeServer({}, promiscuous=True))
    assert res.outcome is Outcome.PROMISCUOUS
    assert res.program is None


def test_ignoring_versions_leaves_range_unknown() -> None:
    m = Grinder(TABLE, stream=False, rng=random.Random(3))
    res = run_machine(m, FakeServer({100024: (1, 1)}, ignore_versions=True))
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100024, None, None)


def test_exhausted_table() -> None:
    m = Grinder(TABLE[:50], stream=True, rng=random.Random(4))
    res = run_machine(m, FakeServer({999: (1, 1)}))
    assert res.outcome is Outcome.EXHAUSTED
    assert res.calls == 51  # every program once, plus the canary


def test_udp_loss_is_retransmitted() -> None:
    m = Grinder(TABLE, stream=False, window=8, rng=random.Random(5))
    res = run_machine(m, FakeServer({100010: (1, 2)}, drop=12))
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100010, 1, 2)
    assert res.calls > res.replies


def test_udp_silence_gives_up_early() -> None:
    m = Grinder(TABLE, stream=False, window=8, max_tries=3, rng=random.Random(6))
    res = run_machine(m, lambda msg: None)
    assert res.outcome is Outcome.NO_RESPONSE
    assert res.calls <= 8 * 3 + 8  # the first window and its retransmits, not the table


def test_tcp_silence_times_out() -> None:
    m = Grinder(TABLE, stream=True, window=8, reply_timeout=2.0, rng=random.Random(7))
    res = run_machine(m, lambda msg: None)
    assert res.outcome is Outcome.NO_RESPONSE and res.calls == 8


@pytest.mark.parametrize("stream", [True, False])
def test_malformed_reply_gives_up(stream: bool) -> None:
    m = Grinder(TABLE, stream=stream, window=8, rng=random.Random(8))
    res = run_machine(m, lambda msg: b"SSH-2.0-OpenSSH_9.2\r\n")
    assert res.outcome is Outcome.NOT_RPC
    assert res.calls <= 8


def test_foreign_xids_give_up() -> None:
    m = Grinder(TABLE, stream=True, window=8, rng=random.Random(9))
    res = run_machine(
        m, lambda msg: encode_reply(decode_call(msg).xid ^ 0xFFFF, AcceptStat.PROG_UNAVAIL)
    )
    assert res.outcome is Outcome.NOT_RPC and "xid" in res.detail


def test_auth_error_switches_to_auth_sys_once() -> None:
    inner = FakeServer({100005: (1, 3)})

    def server(msg: bytes) -> bytes:
        xid = decode_call(msg).xid
        if struct.unpack_from(">I", msg, 24)[0] != AUTH_SYS:
            return struct.pack(">IIIII", xid, 1, 1, 1, 5)
        return inner(msg)

    m = Grinder(TABLE, stream=False, window=8, rng=random.Random(10))
    res = run_machine(m, server)
    assert (res.outcome, res.program, res.lowver, res.highver) == (Outcome.FOUND, 100005, 1, 3)

    m = Grinder(TABLE, stream=False, window=8, rng=random.Random(11))
    res = run_machine(m, lambda msg: struct.pack(">IIIII", decode_call(msg).xid, 1, 1, 1, 1))
    assert res.outcome is Outcome.DENIED


def test_connection_loss_requeues_then_gives_up() -> None:
    m = Grinder(TABLE, stream=True, window=8, max_reconnects=2, rng=random.Random(12))
    m.poll(0.0)
    assert m.connection_lost(0.1) is True
    again = m.poll(0.2)
    assert len(again) == 8  # the lost calls go out again
    assert m.connection_lost(0.3) is True
    assert m.connection_lost(0.4) is False
    assert m.result.outcome is Outcome.CLOSED


BEHAVIOURS = ["refuse", "mismatch", "success", "drop", "garbage", "foreign", "dup", "denied"]


@given(
    behaviours=st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=60),
    stream=st.booleans(),
    window=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=200, deadline=None)
def test_grinder_always_terminates_with_a_consistent_answer(
    behaviours: list[str], stream: bool, window: int, seed: int
) -> None:
    """Whatever a server does per call, the machine ends, bounded, and never names a program
    that did not answer as reached."""
    table = TABLE[:80]
    answered_reached: set[int] = set()
    n = 0

    def server(msg: bytes) -> bytes | None:
        nonlocal n
        call = decode_call(msg)
        b = behaviours[n % len(behaviours)]
        n += 1
        if b == "drop":
            return None
        if b == "garbage":
            return b"\x80\0\0\x10garbage!garbage!"
        if b == "foreign":
            return encode_reply(call.xid ^ 0x1234, AcceptStat.PROG_UNAVAIL)
        if b == "denied":
            return struct.pack(">IIIII", call.xid, 1, 1, 1, 1)
        if b == "refuse":
            return encode_reply(call.xid, AcceptStat.PROG_UNAVAIL)
        answered_reached.add(call.prog)
        if b == "mismatch":
            return encode_reply(call.xid, AcceptStat.PROG_MISMATCH, low=1, high=2)
        return encode_reply(call.xid, AcceptStat.SUCCESS)

    m = Grinder(table, stream=stream, window=window, rng=random.Random(seed))
    res = run_machine(m, server, max_rounds=5000)
    assert res.calls <= (len(table) + 1) * 2 * 4  # at most: each call, AUTH_SYS retry, 4 tries
    if res.outcome is Outcome.FOUND:
        assert res.program in table and res.program in answered_reached
    if res.outcome is Outcome.PROMISCUOUS:
        assert res.program is None


@given(st.lists(st.binary(max_size=50), max_size=30))
@settings(max_examples=200, deadline=None)
def test_record_reader_only_raises_rpcerror(chunks: list[bytes]) -> None:
    reader = RecordReader(max_record=4096)
    try:
        for c in chunks:
            for rec in reader.feed(c):
                assert len(rec) <= 4096
    except RpcError:
        pass
