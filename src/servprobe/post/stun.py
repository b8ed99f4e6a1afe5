"""stun-version: a STUN Binding request (RFC 8489 §5, §6) and the SOFTWARE attribute.

Asks: one Binding request (type 0x0001, no attributes, the magic cookie, a fixed
transaction id), over UDP or TCP (same framing).
Reads: the Binding success (0x0101) or error (0x0111) response with our transaction id; its
SOFTWARE attribute (0x8022) names the server ("Coturn-4.6.1 'Gorst'" → product Coturn,
version 4.6.1, as nmap's stun-version reports the whole string as product), and the mapped
address (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS) the server saw us from.
"""

from __future__ import annotations

import re
import struct

from servprobe.post.base import (
    UNKNOWN_UDP_DEADLINE,
    Buffered,
    Finding,
    Machine,
    PostProcessor,
    Trigger,
    format_output,
    text,
)
from servprobe.result import ScriptResult, ServiceResult

COOKIE = 0x2112A442
TXID = b"servprobe-st"  # 12 bytes
BINDING = struct.pack(">HHI", 0x0001, 0, COOKIE) + TXID
_SOFTWARE = re.compile(r"^([A-Za-z][\w .+-]*?)[- /]v?(\d[\w.~+-]*)")


def parse(msg: bytes) -> dict[str, str] | None:
    """SOFTWARE and the mapped address of a Binding response to our request, else None."""
    if len(msg) < 20:
        return None
    kind, length, cookie = struct.unpack(">HHI", msg[:8])
    if kind not in (0x0101, 0x0111) or cookie != COOKIE or msg[8:20] != TXID or len(msg) < 20 + length:
        return None
    out: dict[str, str] = {}
    i, end = 20, 20 + length
    while i + 4 <= end:
        atype, alen = struct.unpack(">HH", msg[i : i + 4])
        value = msg[i + 4 : i + 4 + alen]
        i += 4 + alen + (-alen % 4)
        if atype == 0x8022:
            out["software"] = text(value, 128)
        elif atype in (0x0020, 0x0001) and len(value) >= 8 and value[1] == 1 and "mapped" not in out:
            port, addr = struct.unpack(">H", value[2:4])[0], value[4:8]
            if atype == 0x0020:  # XOR-MAPPED-ADDRESS
                port ^= COOKIE >> 16
                addr = bytes(a ^ c for a, c in zip(addr, struct.pack(">I", COOKIE), strict=True))
            out["mapped"] = f"{'.'.join(str(b) for b in addr)}:{port}"
    return out


def _finding(info: dict[str, str] | None) -> Finding | None:
    if info is None:
        return None
    info = dict(sorted(info.items(), key=lambda kv: kv[0] != "software"))  # software first
    f = Finding(ScriptResult("stun-version", info.get("software", "(no SOFTWARE attribute)"), info),
                service="stun")
    software = info.get("software")
    if software:
        m = _SOFTWARE.match(software)
        f.fields = {"product": m.group(1), "version": m.group(2)} if m else {"product": software}
    f.script.output = f.script.output if len(info) == 1 else format_output(info)
    return f


class StunUdp(Machine):
    proto = "udp"

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info: dict[str, str] | None = None

    def start(self, now: float) -> list[bytes]:
        return [BINDING]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        self.info = parse(data)
        self.done = self.info is not None
        return []

    def finish(self) -> Finding | None:
        return _finding(self.info)


class StunTcp(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info: dict[str, str] | None = None

    def start(self, now: float) -> list[bytes]:
        return [BINDING]

    def parse(self, now: float) -> list[bytes]:
        if len(self.buf) >= 4:
            need = 20 + struct.unpack(">H", self.buf[2:4])[0]
            if len(self.buf) >= need:
                self.info = parse(self.buf[:need])
                self.done = True
        return []

    def finish(self) -> Finding | None:
        return _finding(self.info)


def _unknown(r: ServiceResult) -> bool:
    # one datagram to every UDP port the walk could not name: STUN servers often listen on
    # ports of their own (WebRTC, TURN relays) where no probe reaches them
    return r.service is None


POST_UDP = PostProcessor("stun-version", Trigger(proto="udp", services=frozenset({"stun"}), ports=frozenset({3478}),
                                                 when=_unknown),
                         StunUdp, "STUN Binding request: the SOFTWARE attribute and mapped address",
                         deadline=UNKNOWN_UDP_DEADLINE)
POST_TCP = PostProcessor("stun-version", Trigger(services=frozenset({"stun"}), ports=frozenset({3478}), tunnel="plain"),
                         StunTcp, "STUN Binding request over TCP")
