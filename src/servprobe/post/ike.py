"""ike-version: an IKEv1 main-mode offer, and the vendor IDs the responder sends back.

Asks (UDP): one ISAKMP Identity Protection (main mode) message 1 (RFC 2409): a random
initiator cookie and an SA payload whose one proposal offers several pre-shared-key
transforms (AES-128/256 with SHA-1, SHA2-256 or MD5, MODP 1024/2048). Nothing is
authenticated: the exchange stops at the responder's message 2 (or its notification).
The machine asks for source port 500 (`source_port`); some peers answer only there.
Reads: every Vendor ID payload of the answer (and a notification's type). A vendor ID is
named when it is the MD5 of a vendor's published string (that is how strongSwan, Microsoft,
the NAT-T drafts and RFC 3947 define theirs) or one of the fixed capability IDs (DPD, RFC
3706; XAUTH); the others are listed as unmatched hex. strongSwan's ID names the product,
not its version: the walk's version (nmap's fixed "4.3.6" for any strongSwan notification)
is dropped, as the SMB post-processor does, since nothing the daemon sent states it.
"""

from __future__ import annotations

import hashlib
import struct

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output
from servprobe.result import ScriptResult, ServiceResult

IKE_PORT = 500
SA, NOTIFY, VID = 1, 11, 13  # payload types (RFC 2408 3.1)
MAIN_MODE = 2  # exchange type: Identity Protection
NOTIFY_NAMES = {
    14: "NO-PROPOSAL-CHOSEN",
    24: "AUTHENTICATION-FAILED",
    5: "INVALID-MAJOR-VERSION",
    16: "PAYLOAD-MALFORMED",
}


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


# hex vendor ID (or its prefix) -> (what it says, product it names or None)
_NAMED: dict[str, tuple[str, str | None]] = {
    _md5("strongSwan"): ("strongSwan", "strongSwan"),
    _md5("MS NT5 ISAKMPOAKLEY"): ("Microsoft Windows", "Microsoft Windows IKE"),
    _md5("RFC 3947"): ("RFC 3947 NAT-T", None),
    _md5("draft-ietf-ipsec-nat-t-ike-02\n"): ("draft-ietf-ipsec-nat-t-ike-02", None),
    _md5("draft-ietf-ipsec-nat-t-ike-03"): ("draft-ietf-ipsec-nat-t-ike-03", None),
    _md5("FRAGMENTATION"): ("IKE Fragmentation", None),
    "afcad71368a1f1c96b8696fc77570100": ("Dead Peer Detection v1.0", None),  # RFC 3706
    "09002689dfd6b712": ("XAUTH", None),  # draft-beaulieu-ike-xauth
}

# (encryption, key bits, hash, DH group): AES=7, hash MD5=1 SHA=2 SHA2-256=4, MODP 2 / 14
TRANSFORMS = [
    (7, 128, 2, 14),
    (7, 128, 2, 2),
    (7, 256, 4, 14),
    (7, 256, 2, 2),
    (7, 128, 1, 2),
    (7, 256, 4, 2),
]


def _transform(n: int, last: bool, enc: int, bits: int, hash_: int, group: int) -> bytes:
    tv = b"".join(
        struct.pack(">HH", 0x8000 | t, v)
        for t, v in ((1, enc), (14, bits), (2, hash_), (3, 1), (4, group), (11, 1))
    )
    tv += struct.pack(">HHI", 12, 4, 28800)  # life duration: 8 hours (TLV)
    body = struct.pack(">BBH", n, 1, 0) + tv  # transform n, KEY_IKE
    return struct.pack(">BBH", 0 if last else 3, 0, 4 + len(body)) + body


def main_mode(cookie: bytes) -> bytes:
    """Message 1 of main mode with TRANSFORMS in one proposal."""
    ts = b"".join(_transform(i + 1, i == len(TRANSFORMS) - 1, *t) for i, t in enumerate(TRANSFORMS))
    proposal = struct.pack(">BBBB", 1, 1, 0, len(TRANSFORMS)) + ts  # #1, PROTO_ISAKMP, no SPI
    proposal = struct.pack(">BBH", 0, 0, 4 + len(proposal)) + proposal
    sa = struct.pack(">II", 1, 1) + proposal  # DOI IPsec, SIT_IDENTITY_ONLY
    sa = struct.pack(">BBH", 0, 0, 4 + len(sa)) + sa
    header = cookie + b"\x00" * 8 + struct.pack(">BBBBII", SA, 0x10, MAIN_MODE, 0, 0, 28 + len(sa))
    return header + sa


def payloads(msg: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each payload of an ISAKMP message; stops at the first malformed one."""
    if len(msg) < 28 or msg[17] >> 4 != 1:
        return []
    out: list[tuple[int, bytes]] = []
    kind, at = msg[16], 28
    seen = 0
    while kind and at + 4 <= len(msg) and seen < 64:
        nxt, _, length = struct.unpack_from(">BBH", msg, at)
        if length < 4 or at + length > len(msg):
            break
        out.append((kind, msg[at + 4 : at + length]))
        kind, at, seen = nxt, at + length, seen + 1
    return out


def name_vid(vid: bytes) -> tuple[str, str | None] | None:
    h = vid.hex()
    for key, named in _NAMED.items():
        if h == key or (len(key) < 32 and h.startswith(key)):
            return named
    return None


class IkeMachine(Buffered):
    proto = "udp"
    source_port = IKE_PORT  # asked of the runner; below 1024 needs root

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.cookie = b""
        self.vids: list[bytes] = []
        self.notify: int | None = None
        self.answered = False

    def start(self, now: float) -> list[bytes]:
        # sans-IO: the cookie comes from what the machine is given (unique per target and
        # moment), not from a random source of its own
        seed = f"{self.result.address}:{self.result.port}:{now!r}".encode()
        self.cookie = hashlib.sha256(seed).digest()[:8]
        return [main_mode(self.cookie)]

    def feed(self, data: bytes, now: float) -> list[bytes]:
        # one datagram is one message; one that is not an answer to our cookie is ignored
        if len(data) >= 28 and data[:8] == self.cookie:
            self.answered = True
            for kind, body in payloads(data):
                if kind == VID and body:
                    self.vids.append(body[:64])
                elif kind == NOTIFY and len(body) >= 8:
                    self.notify = struct.unpack_from(">H", body, 6)[0]
            self.done = True
        return []

    def finish(self) -> Finding | None:
        if not self.answered:
            return None
        named: list[str] = []
        unmatched: list[str] = []
        product = None
        for vid in self.vids:
            hit = name_vid(vid)
            if hit is None:
                unmatched.append(vid.hex())
            else:
                named.append(hit[0])
                product = product or hit[1]
        elements: dict[str, object] = {}
        if product:
            elements["vendor_id"] = product
        if unmatched:
            elements["unmatched_ids"] = unmatched
        capabilities = [n for n in named if n != product and n != "Microsoft Windows"]
        if capabilities:
            elements["attributes"] = capabilities
        if self.notify is not None:
            elements["notification"] = NOTIFY_NAMES.get(self.notify, str(self.notify))
        if not elements:
            return None
        f = Finding(ScriptResult("ike-version", format_output(elements), elements))
        if not self.result.service:
            f.service = "isakmp"
        if product:
            f.fields["product"] = product
            if self.result.version:
                f.fields["version"] = ""  # a vendor ID names the product, never its version
            if product.startswith("Microsoft"):
                f.fields["ostype"] = "Windows"
        return f


POST = PostProcessor(
    "ike-version",
    Trigger(proto="udp", services=frozenset({"isakmp"}), ports=frozenset({IKE_PORT})),
    IkeMachine,
    "IKEv1 main-mode offer from port 500: the responder's vendor IDs (strongSwan, DPD, NAT-T)",
)
