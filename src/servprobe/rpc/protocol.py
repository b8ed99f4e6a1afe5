"""ONC RPC v2 (RFC 5531) wire format, sans-IO: CALL encoding, REPLY decoding, TCP record marking.

Nothing here touches a socket. Callers hand bytes in and get bytes or parsed messages out, so
the same code serves the asyncio transports, the test servers and the fuzz tests.

Only what a scanner needs is implemented: calls carry AUTH_NONE (or a minimal AUTH_SYS)
credentials and opaque, already-XDR-encoded arguments; replies are decoded up to the accept
status, with the body (procedure results) left as raw bytes for the caller.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

RPC_VERSION = 2

CALL = 0
REPLY = 1

AUTH_NONE = 0
AUTH_SYS = 1

# A reply to a NULL call is a few dozen bytes; anything near this is not a NULL reply.
DEFAULT_MAX_RECORD = 1 << 20
# TCP record marking: high bit of the 4-byte header flags the last fragment of a record.
LAST_FRAGMENT = 0x80000000


class ReplyStat(enum.IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class RpcError(ValueError):
    """The bytes are not a well-formed ONC RPC message."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded REPLY message.

    accept is set for MSG_ACCEPTED, reject for MSG_DENIED. low/high carry the version range of
    PROG_MISMATCH (or the RPC version range of RPC_MISMATCH); auth_stat the reason of
    AUTH_ERROR; body the procedure results that follow SUCCESS.
    """

    xid: int
    accept: AcceptStat | None = None
    reject: RejectStat | None = None
    low: int | None = None
    high: int | None = None
    auth_stat: int | None = None
    body: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.accept is not None


def _opaque_auth(flavor: int, body: bytes = b"") -> bytes:
    pad = (-len(body)) % 4
    return struct.pack(">II", flavor, len(body)) + body + b"\0" * pad


def auth_sys_body(stamp: int = 0, machine: str = "servprobe", uid: int = 0, gid: int = 0) -> bytes:
    """AUTH_SYS credential body (RFC 5531 appendix A): stamp, machinename, uid, gid, no gids."""
    name = machine.encode("ascii")[:255]
    return (
        struct.pack(">II", stamp, len(name))
        + name
        + b"\0" * ((-len(name)) % 4)
        + struct.pack(">III", uid, gid, 0)
    )


def encode_call(
    xid: int,
    prog: int,
    vers: int,
    proc: int = 0,
    args: bytes = b"",
    *,
    cred_flavor: int = AUTH_NONE,
    cred_body: bytes = b"",
) -> bytes:
    """One CALL message (no record mark). proc 0 is the NULL procedure every program has."""
    return (
        struct.pack(">IIIIII", xid & 0xFFFFFFFF, CALL, RPC_VERSION, prog, vers, proc)
        + _opaque_auth(cred_flavor, cred_body)
        + _opaque_auth(AUTH_NONE)
        + args
    )


def peek_xid(msg: bytes) -> int | None:
    return struct.unpack_from(">I", msg)[0] if len(msg) >= 4 else None


def decode_reply(msg: bytes) -> Reply:
    """Decode a REPLY; raises RpcError on anything that is not one."""
    try:
        xid, mtype, stat = struct.unpack_from(">III", msg)
    except struct.error as exc:
        raise RpcError(f"short message ({len(msg)} bytes)") from exc
    if mtype != REPLY:
        raise RpcError(f"message type {mtype} is not REPLY")
    off = 12
    try:
        if stat == ReplyStat.MSG_ACCEPTED:
            _flavor, vlen = struct.unpack_from(">II", msg, off)
            if vlen > 400:  # RFC 5531: opaque_auth bodies are at most 400 bytes
                raise RpcError(f"verifier length {vlen} > 400")
            off += 8 + vlen + (-vlen) % 4
            (astat,) = struct.unpack_from(">I", msg, off)
            off += 4
            try:
                accept = AcceptStat(astat)
            except ValueError as exc:
                raise RpcError(f"unknown accept_stat {astat}") from exc
            if accept == AcceptStat.PROG_MISMATCH:
                low, high = struct.unpack_from(">II", msg, off)
                return Reply(xid, accept=accept, low=low, high=high)
            if off > len(msg):
                raise RpcError("truncated accepted reply")
            return Reply(xid, accept=accept, body=bytes(msg[off:]))
        if stat == ReplyStat.MSG_DENIED:
            (rstat,) = struct.unpack_from(">I", msg, off)
            off += 4
            if rstat == RejectStat.RPC_MISMATCH:
                low, high = struct.unpack_from(">II", msg, off)
                return Reply(xid, reject=RejectStat.RPC_MISMATCH, low=low, high=high)
            if rstat == RejectStat.AUTH_ERROR:
                (why,) = struct.unpack_from(">I", msg, off)
                return Reply(xid, reject=RejectStat.AUTH_ERROR, auth_stat=why)
            raise RpcError(f"unknown reject_stat {rstat}")
    except struct.error as exc:
        raise RpcError("truncated reply") from exc
    raise RpcError(f"unknown reply_stat {stat}")


def encode_reply(
    xid: int,
    accept: AcceptStat = AcceptStat.SUCCESS,
    *,
    low: int = 0,
    high: int = 0,
    body: bytes = b"",
) -> bytes:
    """An accepted REPLY (used by the test servers and the fuzz tests)."""
    head = struct.pack(">III", xid, REPLY, ReplyStat.MSG_ACCEPTED) + _opaque_auth(AUTH_NONE)
    head += struct.pack(">I", accept)
    if accept == AcceptStat.PROG_MISMATCH:
        return head + struct.pack(">II", low, high)
    return head + body


@dataclass(frozen=True, slots=True)
class Call:
    """A decoded CALL header (for the test servers)."""

    xid: int
    prog: int
    vers: int
    proc: int
    args: bytes


def decode_call(msg: bytes) -> Call:
    try:
        xid, mtype, rpcvers, prog, vers, proc = struct.unpack_from(">IIIIII", msg)
        off = 24
        for _ in range(2):  # credential, then verifier
            _flavor, alen = struct.unpack_from(">II", msg, off)
            if alen > 400:
                raise RpcError("auth body > 400 bytes")
            off += 8 + alen + (-alen) % 4
    except struct.error as exc:
        raise RpcError("truncated call") from exc
    if mtype != CALL or rpcvers != RPC_VERSION:
        raise RpcError("not an RPC v2 CALL")
    return Call(xid, prog, vers, proc, bytes(msg[off:]))


def record_mark(msg: bytes, fragment_size: int = 0) -> bytes:
    """Frame one message for a stream transport (RFC 5531 section 11).

    fragment_size > 0 splits it into fragments of at most that size (the test servers use it
    to exercise reassembly); the default sends a single last fragment.
    """
    if fragment_size <= 0 or len(msg) <= fragment_size:
        return struct.pack(">I", LAST_FRAGMENT | len(msg)) + msg
    out = bytearray()
    for start in range(0, len(msg), fragment_size):
        piece = msg[start : start + fragment_size]
        last = LAST_FRAGMENT if start + fragment_size >= len(msg) else 0
        out += struct.pack(">I", last | len(piece)) + piece
    return bytes(out)


class RecordReader:
    """Reassembles record-marked messages from a byte stream.

    feed() returns the complete records found so far. A record longer than max_record (the
    sum of its fragments) raises RpcError at once, before the bytes arrive: a stream that
    claims a huge record is either not RPC or hostile, and buffering it helps nobody.
    """

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self._record = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 4:
            (head,) = struct.unpack_from(">I", self._buf)
            size = head & 0x7FFFFFFF
            if len(self._record) + size > self.max_record:
                raise RpcError(
                    f"record of {len(self._record) + size} bytes exceeds cap {self.max_record}"
                )
            if len(self._buf) < 4 + size:
                break
            self._record += self._buf[4 : 4 + size]
            del self._buf[: 4 + size]
            if head & LAST_FRAGMENT:
                out.append(bytes(self._record))
                self._record.clear()
        return out

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole record."""
        return len(self._buf) + len(self._record)
