"""rfc868-time: the Time protocol (RFC 868): seconds since 1900 as a 32-bit big-endian number.

Asks: nothing over TCP (the server sends on connect and closes); one datagram (a newline:
xinetd ignores an empty one) over UDP.
Reads: exactly 4 bytes (8 for the 64-bit variant): the server's time, shown as an ISO 8601
UTC timestamp with the skew from our clock; extrainfo "32 bits" / "64 bits", as nmap's
rfc868-time sets it. Any other length is no Time service.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger
from servprobe.result import ScriptResult, ServiceResult

EPOCH_1900 = 2208988800  # seconds from 1900-01-01 to 1970-01-01


class TimeMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.now = 0.0

    def start(self, now: float) -> list[bytes]:
        # RFC 868 says any datagram; xinetd ignores an empty one
        return [b"\n"] if self.proto == "udp" else []

    def parse(self, now: float) -> list[bytes]:
        self.now = now
        if self.proto == "udp" or len(self.buf) > 8:
            self.done = True
        return []

    def finish(self) -> Finding | None:
        if len(self.buf) not in (4, 8):
            return None
        stamp = struct.unpack(">I", self.buf[:4])[0] - EPOCH_1900
        try:
            when = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return None
        info = {"time": when, "clock skew": f"{round(stamp - self.now):+d}s" if self.now else "?"}
        fields = {"extrainfo": "32 bits" if len(self.buf) == 4 else "64 bits"}
        return Finding(ScriptResult("rfc868-time", when, info), fields, service="time")


class TimeUdp(TimeMachine):
    proto = "udp"


POST_TCP = PostProcessor("rfc868-time", Trigger(services=frozenset({"time"}), ports=frozenset({37}), tunnel="plain"),
                         TimeMachine, "RFC 868 time: the server's clock and its skew")
POST_UDP = PostProcessor("rfc868-time", Trigger(proto="udp", services=frozenset({"time"}), ports=frozenset({37})),
                         TimeUdp, "RFC 868 time over UDP")
