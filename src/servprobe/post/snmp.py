"""snmp-info and snmp-sysdescr: SNMPv3 engine discovery, and sysDescr with community public.

snmp-info asks: an SNMPv3 GetRequest with no engine ID, no user and the reportable flag
(RFC 3414 §4 discovery). Reads: the Report's USM security parameters: the authoritative
engine ID (RFC 3411 SnmpEngineID: enterprise number, format, data), engine boots and engine
time. An engine ID naming net-snmp (enterprise 8072) makes the product "net-snmp SNMPv3
server", appended to what the walk found ("SNMPv1 server; net-snmp SNMPv3 server"), as nmap's
snmp-info does.

snmp-sysdescr asks: SNMPv1 and SNMPv2c GetRequests for sysDescr.0 and sysUpTime.0 with the
community `public`. Reads: the first GetResponse: the system description and uptime.
Both use post/ber.py's small BER codec; anything else ends the
exchange with nothing learnt.
"""

from __future__ import annotations

from typing import Any

from servprobe.post.base import Finding, Machine, PostProcessor, Trigger, format_output, text
from servprobe.post.ber import BerError, as_int, ber_int, decode, seq, tlv
from servprobe.result import ScriptResult, ServiceResult

# Enterprise numbers (IANA Private Enterprise Numbers) of common SNMP engines
ENTERPRISES = {2: "IBM", 9: "Cisco", 11: "Hewlett-Packard", 43: "3Com", 311: "Microsoft",
               2021: "ucd-snmp", 2636: "Juniper", 8072: "net-snmp", 4526: "Netgear",
               5624: "Enterasys", 12356: "Fortinet", 14988: "MikroTik", 25461: "Palo Alto"}
FORMATS = {1: "ipv4", 2: "ipv6", 3: "mac", 4: "text", 5: "octets"}
SYSDESCR = "1.3.6.1.2.1.1.1.0"
SYSUPTIME = "1.3.6.1.2.1.1.3.0"
REQUEST_ID = 0x5E1F


def ber_oid(oid: str) -> bytes:
    parts = [int(x) for x in oid.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def format_time(seconds: int) -> str:
    """nmap's compact duration: 45s, 2m05s, 1h02m03s, 3d04h05m06s."""
    d, rest = divmod(max(0, seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m{s:02d}s"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


# ------------------------------------------------------------------- SNMPv3 discovery

V3_DISCOVERY = seq(
    ber_int(3),
    seq(ber_int(REQUEST_ID), ber_int(65507), tlv(0x04, b"\x04"), ber_int(3)),
    tlv(0x04, seq(tlv(0x04, b""), ber_int(0), ber_int(0), tlv(0x04, b""), tlv(0x04, b""), tlv(0x04, b""))),
    seq(tlv(0x04, b""), tlv(0x04, b""),
        seq(ber_int(REQUEST_ID), ber_int(0), ber_int(0), seq(), tag=0xA0)),
)


def engine_info(engine_id: bytes) -> dict[str, str]:
    """RFC 3411 SnmpEngineID → enterprise, engineIDFormat, engineIDData (nmap's keys)."""
    out: dict[str, str] = {}
    if len(engine_id) < 5:
        out["engineIDData"] = engine_id.hex()
        return out
    enterprise = int.from_bytes(engine_id[:4], "big") & 0x7FFFFFFF
    out["enterprise"] = ENTERPRISES.get(enterprise, str(enterprise))
    if engine_id[0] & 0x80:
        fmt = engine_id[4]
        data = engine_id[5:]
        out["engineIDFormat"] = FORMATS.get(fmt, "unknown")
        if fmt == 1 and len(data) == 4:
            out["engineIDData"] = ".".join(str(b) for b in data)
        elif fmt == 3 and len(data) == 6:
            out["engineIDData"] = ":".join(f"{b:02x}" for b in data)
        elif fmt == 4:
            out["engineIDData"] = text(data, 128)
        else:
            out["engineIDData"] = data.hex()
    else:  # RFC 1910 form: enterprise then 8 bytes of its own
        out["engineIDData"] = engine_id[4:].hex()
    return out


class SnmpV3Machine(Machine):
    proto = "udp"

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info: dict[str, str] | None = None

    def start(self, now: float) -> list[bytes]:
        return [V3_DISCOVERY]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        try:
            (tag, msg), *_ = decode(data)
            if tag != 0x30 or as_int(msg[0][1]) != 3:
                return []
            params = decode(msg[2][1])[0][1]
            engine_id, boots, etime = params[0][1], as_int(params[1][1]), as_int(params[2][1])
        except (BerError, IndexError, TypeError, ValueError):
            return []  # not ours: keep listening until the deadline
        info = engine_info(engine_id)
        info["snmpEngineBoots"] = str(boots)
        info["snmpEngineTime"] = format_time(etime)
        self.info = info
        self.done = True
        return []

    def finish(self) -> Finding | None:
        if self.info is None:
            return None
        fields: dict[str, str] = {}
        enterprise = self.info.get("enterprise")
        if enterprise in ENTERPRISES.values():
            server = f"{enterprise} SNMPv3 server"
            product = self.result.product or ""
            if server not in product:
                fields["product"] = f"{product}; {server}" if product else server
        return Finding(ScriptResult("snmp-info", format_output(self.info), dict(self.info)), fields,
                       service="snmp")


# ------------------------------------------------------------------- v1/v2c sysDescr


def v1_get(version: int, community: bytes = b"public") -> bytes:
    binds = seq(seq(ber_oid(SYSDESCR), tlv(0x05, b"")), seq(ber_oid(SYSUPTIME), tlv(0x05, b"")))
    pdu = seq(ber_int(REQUEST_ID), ber_int(0), ber_int(0), binds, tag=0xA0)
    return seq(ber_int(version), tlv(0x04, community), pdu)


def _oid_text(raw: bytes) -> str:
    if not raw:
        return ""
    parts = [raw[0] // 40, raw[0] % 40]
    n = 0
    for b in raw[1:]:
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(n)
            n = 0
    return ".".join(str(p) for p in parts)


class SysDescrMachine(Machine):
    proto = "udp"

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.descr: str | None = None
        self.ticks: int | None = None

    def start(self, now: float) -> list[bytes]:
        return [v1_get(0), v1_get(1)]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        try:
            (tag, msg), *_ = decode(data)
            if tag != 0x30 or msg[2][0] != 0xA2 or as_int(msg[2][1][1][1]) != 0:
                return []
            for (_t, bind) in msg[2][1][3][1]:
                oid, (vtag, value) = _oid_text(bind[0][1]), bind[1]
                if oid == SYSDESCR and vtag == 0x04:
                    self.descr = text(value, 512)
                elif oid == SYSUPTIME and vtag == 0x43:
                    self.ticks = int.from_bytes(value, "big")
        except (BerError, IndexError, TypeError, ValueError):
            return []
        self.done = self.descr is not None
        return []

    def finish(self) -> Finding | None:
        if self.descr is None:
            return None
        elements: dict[str, Any] = {"sysDescr": self.descr}
        out = self.descr
        if self.ticks is not None:
            elements["sysUpTime"] = str(self.ticks)
            out += f"\n  System uptime: {self.ticks / 100:.2f}s ({self.ticks} timeticks)"
        return Finding(ScriptResult("snmp-sysdescr", out, elements))


_TRIGGER = Trigger(proto="udp", services=frozenset({"snmp"}), ports=frozenset({161}))
POST = PostProcessor("snmp-info", _TRIGGER, SnmpV3Machine,
                     "SNMPv3 engine discovery: enterprise, engine ID, boots and time")
POST_SYSDESCR = PostProcessor("snmp-sysdescr", _TRIGGER, SysDescrMachine,
                              "sysDescr and sysUpTime with community public (SNMPv1, v2c)")
