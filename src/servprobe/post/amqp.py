"""amqp-info: AMQP 0-9-1 Connection.Start — product, version, platform, capabilities.

Asks: the AMQP 0-9-1 protocol header `AMQP\\0\\0\\x09\\x01`.
Reads: the server's first method frame, Connection.Start (class 10, method 10): the
protocol version it speaks (major-minor, nmap's extrainfo "0-9"), its server-properties
field table (product, version, platform, cluster_name, copyright, information and the nested
capabilities table), its SASL mechanisms and locales. A server that does not speak 0-9-1
answers with its own protocol header and closes: that is reported, and nothing is refined.
"""

from __future__ import annotations

import struct
from typing import Any

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.result import ScriptResult, ServiceResult

HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE


class Malformed(ValueError):
    """The frame does not parse as AMQP 0-9-1."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.d = data
        self.i = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.d):
            raise Malformed("truncated")
        out = self.d[self.i : self.i + n]
        self.i += n
        return out

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def shortstr(self) -> bytes:
        return self.take(self.unpack(">B"))

    def longstr(self) -> bytes:
        return self.take(self.unpack(">I"))


_SCALARS = {"b": ">b", "B": ">B", "s": ">h", "u": ">H", "I": ">i", "i": ">I", "l": ">q",
            "L": ">Q", "f": ">f", "d": ">d", "T": ">Q"}


def _value(r: _Reader, depth: int) -> Any:
    kind = chr(r.unpack(">B"))
    if kind == "t":
        return "YES" if r.unpack(">B") else "NO"
    if kind in _SCALARS:
        return str(r.unpack(_SCALARS[kind]))
    if kind == "D":
        scale, value = r.unpack(">B"), r.unpack(">I")
        return str(value / (10**scale)) if scale else str(value)
    if kind in "Sx":
        return text(r.longstr())
    if kind == "V":
        return ""
    if kind == "F":
        return _table(_Reader(r.longstr()), depth + 1)
    if kind == "A":
        sub = _Reader(r.longstr())
        items = []
        while sub.i < len(sub.d):
            items.append(_value(sub, depth + 1))
        return items
    raise Malformed(f"unknown field type {kind!r}")


def _table(r: _Reader, depth: int = 0) -> dict[str, Any]:
    if depth > 8:
        raise Malformed("tables nested too deep")
    out: dict[str, Any] = {}
    while r.i < len(r.d):
        name = text(r.shortstr())
        out[name] = _value(r, depth)
    return out


def parse_start(frame_payload: bytes) -> tuple[str, dict[str, Any], str, str]:
    """Connection.Start's (version "0-9", server properties, mechanisms, locales)."""
    r = _Reader(frame_payload)
    cls, meth = r.unpack(">H"), r.unpack(">H")
    if (cls, meth) != (10, 10):
        raise Malformed(f"method {cls}.{meth} is not Connection.Start")
    major, minor = r.unpack(">B"), r.unpack(">B")
    props = _table(_Reader(r.longstr()))
    mechanisms = text(r.longstr())
    locales = text(r.longstr())
    return f"{major}-{minor}", props, mechanisms, locales


class AmqpMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.finding: Finding | None = None

    def start(self, now: float) -> list[bytes]:
        return [HEADER]

    def parse(self, now: float) -> list[bytes]:
        buf = self.buf
        if buf.startswith(b"AMQP"):
            if len(buf) >= 8:
                self.done = True
                major, minor, rev = buf[5], buf[6], buf[7]
                out = f"server does not speak AMQP 0-9-1; it offers {major}-{minor}-{rev}"
                self.finding = Finding(ScriptResult("amqp-info", out, {"offered": f"{major}-{minor}-{rev}"}))
            return []
        if len(buf) < 7:
            return []
        kind, _channel, size = struct.unpack(">BHI", buf[:7])
        if kind != 1 or size > len(buf) + 65536:
            self.done = True  # not a method frame: not AMQP 0-9-1
            return []
        if len(buf) < 8 + size:
            return []
        self.done = True
        if buf[7 + size] != FRAME_END:
            return []
        try:
            proto, props, mechanisms, locales = parse_start(buf[7 : 7 + size])
        except (Malformed, struct.error, OverflowError):
            return []
        elements: dict[str, Any] = dict(props)
        elements["mechanisms"] = mechanisms
        elements["locales"] = locales
        fields = {"extrainfo": proto}
        for key in ("product", "version"):
            if isinstance(props.get(key), str) and props[key]:
                fields[key] = props[key]
        self.finding = Finding(ScriptResult("amqp-info", format_output(elements), elements), fields)
        return []

    def finish(self) -> Finding | None:
        return self.finding


POST = PostProcessor(
    "amqp-info",
    Trigger(services=frozenset({"amqp"}), ports=frozenset({5672})),
    AmqpMachine,
    "AMQP 0-9-1 Connection.Start: product, version, platform, capabilities",
)
