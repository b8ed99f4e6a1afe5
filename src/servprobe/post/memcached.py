"""memcached-info: memcached's `version` command over TCP, and over UDP's frame header.

Asks: `version\\r\\n`; over UDP preceded by memcached's 8-byte frame header (request id,
sequence 0, 1 datagram, reserved 0), which the walk's probes lack — that is why a UDP
memcached stays unrecognised by the probe file.
Reads: `VERSION x.y.z` → product Memcached, version x.y.z (over UDP after the echoed frame
header, checked against our request id).
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
    text,
)
from servprobe.result import ScriptResult, ServiceResult

REQUEST_ID = 0x5E1F
_VERSION = re.compile(rb"^VERSION (\d[\w.+~-]*)\r\n")
SERVICES = frozenset({"memcached", "memcache"})


def _finding(version: str, proto: str) -> Finding:
    out = f"version {version}" + (" (UDP)" if proto == "udp" else "")
    return Finding(ScriptResult("memcached-info", out, {"version": version, "proto": proto}),
                   {"product": "Memcached", "version": version},
                   [f"cpe:/a:memcached:memcached:{version}"], service="memcached")


class MemcachedTcp(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.version: str | None = None

    def start(self, now: float) -> list[bytes]:
        return [b"version\r\n"]

    def parse(self, now: float) -> list[bytes]:
        if b"\r\n" in self.buf or len(self.buf) > 256:
            self.done = True
            m = _VERSION.match(self.buf)
            if m:
                self.version = text(m.group(1), 64)
        return []

    def finish(self) -> Finding | None:
        return _finding(self.version, "tcp") if self.version else None


class MemcachedUdp(Machine):
    proto = "udp"

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.version: str | None = None

    def start(self, now: float) -> list[bytes]:
        return [struct.pack(">HHHH", REQUEST_ID, 0, 1, 0) + b"version\r\n"]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        if len(data) < 8 or struct.unpack(">H", data[:2])[0] != REQUEST_ID:
            return []
        m = _VERSION.match(data[8:])
        if m:
            self.version = text(m.group(1), 64)
        self.done = True
        return []

    def finish(self) -> Finding | None:
        return _finding(self.version, "udp") if self.version else None


def _unknown_udp(r: ServiceResult) -> bool:
    # the walk never recognises UDP memcached (its probes lack the frame header): ask every
    # UDP port it could not name, one datagram each
    return r.service is None or r.service in SERVICES


POST = PostProcessor(
    "memcached-info",
    Trigger(services=SERVICES, ports=frozenset({11211}), tunnel="plain"),
    MemcachedTcp,
    "memcached version (TCP)",
)
POST_UDP = PostProcessor(
    "memcached-info",
    Trigger(proto="udp", services=SERVICES, ports=frozenset({11211}), when=_unknown_udp),
    MemcachedUdp,
    "memcached version over UDP (frame header)",
    deadline=UNKNOWN_UDP_DEADLINE,
)
