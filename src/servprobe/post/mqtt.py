"""mqtt-subscribe: MQTT 3.1.1 CONNECT, then SUBSCRIBE to `$SYS/broker/version`.

Asks: CONNECT (protocol "MQTT" level 4, clean session, a fixed client id, no credentials);
after a CONNACK accepting it, SUBSCRIBE to the single topic `$SYS/broker/version` (QoS 0).
Reads: CONNACK's return code (a refusal is reported as such), then PUBLISH packets; the
retained message of that topic names the broker ("mosquitto version 2.0.11" → product
Mosquitto, version 2.0.11). The service name stays `mqtt` (nmap 7.93 overwrites it with
the payload, GH#2657). Unlike nmap's script, which listens to every `$SYS/#` topic for
seconds, only the version topic is asked, so the exchange ends as soon as it arrives.
"""

from __future__ import annotations

import re
import struct

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.result import ScriptResult, ServiceResult

TOPIC = b"$SYS/broker/version"
CLIENT_ID = b"servprobe"
HEADING = "Topics and their most recent payloads"
CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def _remaining(n: int) -> bytes:
    """MQTT's variable-length 'remaining length' encoding."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining(len(body)) + body


def _str(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


CONNECT = _packet(0x10, _str(b"MQTT") + bytes([4, 0x02]) + struct.pack(">H", 30) + _str(CLIENT_ID))
SUBSCRIBE = _packet(0x82, struct.pack(">H", 1) + _str(TOPIC) + b"\x00")


def split_packet(buf: bytes) -> tuple[int, bytes, int] | None:
    """(first byte, body, total length) of the first whole packet in buf, or None."""
    if len(buf) < 2:
        return None
    length, mult, i = 0, 1, 1
    while True:
        if i >= len(buf) or i > 4:
            if i > 4:
                raise ValueError("remaining length longer than 4 bytes")
            return None
        b = buf[i]
        length += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            break
    if len(buf) < i + length:
        return None
    return buf[0], buf[i : i + length], i + length


_VERSION = re.compile(r"^mosquitto version (\S+)", re.IGNORECASE)


class MqttMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.refused: str | None = None
        self.payload: str | None = None
        self.accepted = False

    def start(self, now: float) -> list[bytes]:
        return [CONNECT]

    def parse(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while not self.done:
            try:
                got = split_packet(self.buf)
            except ValueError:
                self.done = True
                break
            if got is None:
                break
            first, body, total = got
            self.buf = self.buf[total:]
            kind = first >> 4
            if kind == 2 and not self.accepted:  # CONNACK
                code = body[1] if len(body) >= 2 else 255
                if code:
                    self.refused = CONNACK_CODES.get(code, f"return code {code}")
                    self.done = True
                else:
                    self.accepted = True
                    out.append(SUBSCRIBE)
            elif kind == 3 and len(body) >= 2:  # PUBLISH
                n = struct.unpack(">H", body[:2])[0]
                topic = body[2 : 2 + n]
                rest = body[2 + n :]
                if first & 0x06:  # QoS 1/2 carry a packet id
                    rest = rest[2:]
                if topic == TOPIC:
                    self.payload = text(rest, 256)
                    self.done = True
            elif kind not in (2, 3, 9):  # anything but CONNACK, PUBLISH, SUBACK: not MQTT
                self.done = True
        return out

    def finish(self) -> Finding | None:
        if self.refused is not None:
            return Finding(ScriptResult("mqtt-subscribe", f"Connection refused: {self.refused}",
                                        {"refused": self.refused}))
        if self.payload is None:
            return None
        elements = {HEADING: {TOPIC.decode(): self.payload}}
        fields = {}
        m = _VERSION.match(self.payload)
        if m:
            fields = {"product": "Mosquitto", "version": m.group(1)}
        return Finding(ScriptResult("mqtt-subscribe", format_output(elements), elements), fields,
                       cpes=["cpe:/a:eclipse:mosquitto:" + m.group(1)] if m else [])


POST = PostProcessor(
    "mqtt-subscribe",
    Trigger(services=frozenset({"mqtt"}), ports=frozenset({1883})),
    MqttMachine,
    "MQTT CONNECT and $SYS/broker/version: the broker's product and version",
)
