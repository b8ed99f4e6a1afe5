"""krb5-info: a Kerberos 5 AS-REQ for a principal that cannot exist → the KDC's KRB-ERROR.

Asks (UDP, or TCP with its 4-byte length prefix; RFC 4120 §5.4.1, §7.2): an AS-REQ for
client `servprobe-probe` and server `krbtgt/REALM`, with REALM the realm the walk already
read (nmap's line puts it in the hostname field) or a placeholder.
Reads: the KRB-ERROR (§5.9.1): the KDC's own time (stime/susec, compared with ours: the
skew), the error code by name (PRINCIPAL_UNKNOWN, WRONG_REALM…) and the realm it answered
for. Never a password, never a ticket.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime
from typing import Any

from servprobe.post.base import (
    Buffered,
    Finding,
    Machine,
    PostProcessor,
    Trigger,
    format_output,
    responses,
    text,
)
from servprobe.post.ber import BerError, as_int, ber_int, decode, seq, tlv, whole
from servprobe.result import ScriptResult, ServiceResult

PLACEHOLDER_REALM = "SERVPROBE.INVALID"
ERRORS = {6: "KDC_ERR_C_PRINCIPAL_UNKNOWN", 7: "KDC_ERR_S_PRINCIPAL_UNKNOWN", 14: "KDC_ERR_ETYPE_NOSUPP",
          24: "KDC_ERR_PREAUTH_FAILED", 25: "KDC_ERR_PREAUTH_REQUIRED", 37: "KRB_AP_ERR_SKEW",
          60: "KRB_ERR_GENERIC", 68: "KDC_ERR_WRONG_REALM"}
_REALM = re.compile(r"^[A-Z0-9][A-Z0-9.-]{0,200}$")


def _ctx(n: int, inner: bytes) -> bytes:
    return tlv(0xA0 + n, inner)


def _principal(kind: int, *names: str) -> bytes:
    return seq(_ctx(0, ber_int(kind)), _ctx(1, seq(*(tlv(0x1B, n.encode()) for n in names))))


def as_req(realm: str, nonce: int = 0x5E1F5E1F) -> bytes:
    body = seq(
        _ctx(0, tlv(0x03, b"\x00\x50\x80\x00\x00")),  # forwardable, renewable, canonicalize
        _ctx(1, _principal(1, "servprobe-probe")),
        _ctx(2, tlv(0x1B, realm.encode())),
        _ctx(3, _principal(2, "krbtgt", realm)),
        _ctx(5, tlv(0x18, b"20370913024805Z")),
        _ctx(7, ber_int(nonce)),
        _ctx(8, seq(ber_int(18), ber_int(17), ber_int(23))),  # aes256, aes128, rc4
    )
    return tlv(0x6A, seq(_ctx(1, ber_int(5)), _ctx(2, ber_int(10)), _ctx(4, body)))


def parse_error(data: bytes) -> dict[str, Any] | None:
    """The fields of a KRB-ERROR ([APPLICATION 30]), or None for anything else."""
    (tag, body), *_ = decode(data)
    if tag != 0x7E:
        return None
    fields = {t & 0x1F: v for t, v in body[0][1]}
    out: dict[str, Any] = {}
    if 4 in fields:
        out["stime"] = fields[4][0][1].decode("ascii", "replace")
    if 6 in fields:
        code = as_int(fields[6][0][1])
        out["error"] = ERRORS.get(code, f"error {code}")
    if 9 in fields:
        realm = text(fields[9][0][1], 200)
        if realm != PLACEHOLDER_REALM:  # our own guess echoed back tells nothing
            out["realm"] = realm
    if 11 in fields:
        out["e-text"] = text(fields[11][0][1], 200)
    return out


def _skew(stime: str, now: float) -> str | None:
    try:
        t = datetime.strptime(stime, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
    return f"{round(t - now):+d}s"


class _Krb:
    info: dict[str, Any] | None
    now: float
    result: ServiceResult

    def realm(self) -> str:
        h = self.result.hostname or ""
        return h if _REALM.match(h) else PLACEHOLDER_REALM

    def found(self) -> Finding | None:
        if not self.info:
            return None
        info = dict(self.info)
        if "stime" in info:
            t = info.pop("stime")
            info["server time"] = f"{t[0:4]}-{t[4:6]}-{t[6:8]} {t[8:10]}:{t[10:12]}:{t[12:14]}Z" if len(t) >= 15 else t
            skew = _skew(t, self.now)
            if skew:
                info["clock skew"] = skew
        return Finding(ScriptResult("krb5-info", format_output(info), info), service="kerberos-sec")


class KrbUdp(_Krb, Machine):
    proto = "udp"

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info = None
        self.now = 0.0

    def start(self, now: float) -> list[bytes]:
        return [as_req(self.realm())]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        try:
            self.info = parse_error(data)
        except (BerError, IndexError, TypeError, ValueError):
            return []
        self.now = now
        self.done = self.info is not None
        return []

    def finish(self) -> Finding | None:
        return self.found()


class KrbTcp(_Krb, Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info = None
        self.now = 0.0

    def start(self, now: float) -> list[bytes]:
        req = as_req(self.realm())
        return [struct.pack(">I", len(req)) + req]

    def parse(self, now: float) -> list[bytes]:
        if len(self.buf) < 4:
            return []
        size = struct.unpack(">I", self.buf[:4])[0]
        if size > 65536:
            self.done = True
            return []
        if len(self.buf) < 4 + size:
            return []
        self.done = True
        try:
            if whole(self.buf[4 : 4 + size]) is not None:
                self.info = parse_error(self.buf[4 : 4 + size])
                self.now = now
        except (BerError, IndexError, TypeError, ValueError):
            pass
        return []

    def finish(self) -> Finding | None:
        return self.found()


def _krb_error_seen(r: ServiceResult) -> bool:
    # unrecognized, but some probe drew a KRB-ERROR ([APPLICATION 30]): nmap's 7.93 file has
    # no UDP line for MIT's answer to its own Kerberos probe
    return r.service is None and any(data[:1] == b"\x7e" for data in responses(r))


_SERVICES = frozenset({"kerberos-sec", "kerberos"})
POST_UDP = PostProcessor("krb5-info", Trigger(proto="udp", services=_SERVICES, ports=frozenset({88}),
                                              when=_krb_error_seen), KrbUdp,
                         "Kerberos AS-REQ → KRB-ERROR: realm, server time and skew (UDP)")
POST_TCP = PostProcessor("krb5-info", Trigger(services=_SERVICES, ports=frozenset({88}), tunnel="plain"), KrbTcp,
                         "Kerberos AS-REQ → KRB-ERROR: realm, server time and skew (TCP)")
