"""Portmapper / rpcbind DUMP, sans-IO: the call bytes and the parsers of the registration lists.

PMAPPROC_DUMP (program 100000 version 2, procedure 4) returns (prog, vers, protocol, port)
entries for IPv4 TCP/UDP. RPCBPROC_DUMP (versions 3 and 4, also procedure 4) returns
(prog, vers, netid, universal address, owner) and covers tcp6/udp6 as well. Both are decoded
into one PortMap: which programs (and versions) the portmapper says live on which port.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from .protocol import AcceptStat, RpcError, decode_reply, encode_call

PMAP_PROG = 100000
PMAP_PORT = 111
DUMP_PROC = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# The list is a linked list on the wire; a hostile server could send an endless one.
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Mapping:
    prog: int
    vers: int
    proto: str  # "tcp" | "udp" | other netid
    port: int
    netid: str = ""
    owner: str = ""


@dataclass(slots=True)
class PortMap:
    """Registrations of one host, as one portmapper reported them."""

    entries: list[Mapping] = field(default_factory=list)
    source: str = ""  # e.g. "tcp/111 v4"

    def programs_at(self, proto: str, port: int) -> dict[int, list[int]]:
        """{program: sorted versions} registered on this port/protocol."""
        found: dict[int, set[int]] = {}
        for m in self.entries:
            if m.proto == proto and m.port == port:
                found.setdefault(m.prog, set()).add(m.vers)
        return {p: sorted(v) for p, v in sorted(found.items())}

    def ports(self) -> set[tuple[str, int]]:
        return {(m.proto, m.port) for m in self.entries}


def dump_call(xid: int, version: int) -> bytes:
    return encode_call(xid, PMAP_PROG, version, DUMP_PROC)


def _u32(buf: bytes, off: int) -> tuple[int, int]:
    return struct.unpack_from(">I", buf, off)[0], off + 4


def _string(buf: bytes, off: int, limit: int = 1024) -> tuple[str, int]:
    n, off = _u32(buf, off)
    if n > limit or off + n > len(buf):
        raise RpcError(f"string of {n} bytes at offset {off}")
    text = bytes(buf[off : off + n]).decode("ascii", "replace")
    return text, off + n + (-n) % 4


def parse_pmap_v2(body: bytes) -> list[Mapping]:
    """Results of PMAPPROC_DUMP: a linked list of (prog, vers, prot, port)."""
    out: list[Mapping] = []
    off = 0
    try:
        more, off = _u32(body, off)
        while more:
            if more != 1:
                raise RpcError(f"bad XDR bool {more}")
            prog, vers, prot, port = struct.unpack_from(">IIII", body, off)
            off += 16
            proto = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}.get(prot, str(prot))
            if port <= 0xFFFF:
                out.append(Mapping(prog, vers, proto, port, netid=proto))
            if len(out) > MAX_ENTRIES:
                raise RpcError("portmapper list too long")
            more, off = _u32(body, off)
    except struct.error as exc:
        raise RpcError("truncated PMAPPROC_DUMP result") from exc
    return out


def port_of_uaddr(uaddr: str) -> int | None:
    """Port of an RFC 5665 universal address ("127.0.0.1.3.215" → 983)."""
    parts = uaddr.rsplit(".", 2)
    if len(parts) != 3:
        return None
    try:
        hi, lo = int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if not (0 <= hi <= 255 and 0 <= lo <= 255):
        return None
    return hi * 256 + lo


def parse_rpcb_dump(body: bytes, family: int = 4) -> list[Mapping]:
    """Results of RPCBPROC_DUMP (v3/v4): (prog, vers, netid, uaddr, owner) entries.

    Entries whose netid belongs to the other address family (tcp6 for an IPv4 target) and
    local transports are kept out: their ports mean nothing at the address being scanned.
    """
    wanted = {"tcp": "tcp", "udp": "udp"} if family == 4 else {"tcp6": "tcp", "udp6": "udp"}
    out: list[Mapping] = []
    off = 0
    count = 0
    try:
        more, off = _u32(body, off)
        while more:
            if more != 1:
                raise RpcError(f"bad XDR bool {more}")
            prog, vers = struct.unpack_from(">II", body, off)
            off += 8
            netid, off = _string(body, off)
            uaddr, off = _string(body, off)
            owner, off = _string(body, off)
            count += 1
            if count > MAX_ENTRIES:
                raise RpcError("rpcbind list too long")
            proto = wanted.get(netid)
            port = port_of_uaddr(uaddr)
            if proto and port is not None:
                out.append(Mapping(prog, vers, proto, port, netid=netid, owner=owner))
            more, off = _u32(body, off)
    except struct.error as exc:
        raise RpcError("truncated RPCBPROC_DUMP result") from exc
    return out


def parse_dump_reply(msg: bytes, version: int, family: int = 4) -> list[Mapping]:
    """Decode a whole REPLY to a DUMP call of the given version; RpcError if it failed."""
    reply = decode_reply(msg)
    if reply.accept != AcceptStat.SUCCESS:
        raise RpcError(f"DUMP v{version} not accepted: {reply.accept or reply.reject}")
    if version == 2:
        return parse_pmap_v2(reply.body)
    return parse_rpcb_dump(reply.body, family)


def merge(maps: Iterable[list[Mapping]]) -> list[Mapping]:
    seen: set[tuple[int, int, str, int]] = set()
    out: list[Mapping] = []
    for entries in maps:
        for m in entries:
            key = (m.prog, m.vers, m.proto, m.port)
            if key not in seen:
                seen.add(key)
                out.append(m)
    return out


def encode_pmap_v2(entries: Iterable[tuple[int, int, int, int]]) -> bytes:
    """PMAPPROC_DUMP result body (for the test servers)."""
    out = bytearray()
    for prog, vers, prot, port in entries:
        out += struct.pack(">IIIII", 1, prog, vers, prot, port)
    out += struct.pack(">I", 0)
    return bytes(out)
