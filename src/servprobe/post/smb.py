"""smb2-security-mode, smb2-time, smb-ntlm-info: SMB2 NEGOTIATE, then an NTLMSSP challenge.

Asks (over direct TCP, NetBIOS session framing): an SMB2 NEGOTIATE offering dialects 2.0.2
to 3.1.1 (with the preauth-integrity context 3.1.1 requires), then a SESSION_SETUP whose
SPNEGO token carries an NTLMSSP NEGOTIATE message. No credentials are ever sent: the
exchange stops at the server's challenge.
Reads: the dialect the server picked, its security mode (signing enabled/required), system
time and start time; from the NTLMSSP CHALLENGE its target info (NetBIOS and DNS computer and
domain names, DNS tree name) and the Version block (OS major.minor.build). The NetBIOS
computer name becomes the hostname. A version the walk guessed from the SMB2 layout (nmap's
fixed "Samba smbd 4.6.2") is dropped: SMB2 and NTLMSSP never state Samba's version.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.result import ScriptResult, ServiceResult

DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
NTLMSSP = b"NTLMSSP\x00"
# UNICODE, OEM, REQUEST_TARGET, NTLM, ALWAYS_SIGN, EXTENDED_SESSIONSECURITY, TARGET_INFO,
# VERSION, 128, KEY_EXCH, 56 (MS-NLMP 2.2.2.5)
NTLM_FLAGS = 0xE2088207
AV_NAMES = {1: "NetBIOS_Computer_Name", 2: "NetBIOS_Domain_Name", 3: "DNS_Computer_Name",
            4: "DNS_Domain_Name", 5: "DNS_Tree_Name"}
FILETIME_EPOCH = 11644473600  # seconds from 1601-01-01 to 1970-01-01


def _header(command: int, message_id: int) -> bytes:
    return (b"\xfeSMB" + struct.pack("<HHIHHIIQII", 64, 0, 0, command, 31, 0, 0, message_id, 0xFEFF, 0)
            + struct.pack("<Q", 0) + b"\x00" * 16)


def _frame(smb: bytes) -> bytes:
    return struct.pack(">I", len(smb))  # direct TCP: a zero byte and a 24-bit length


def negotiate() -> bytes:
    dialects = b"".join(struct.pack("<H", d) for d in DIALECTS)
    fixed = 64 + 36 + len(dialects)
    pad = (-fixed) % 8
    context_offset = fixed + pad
    # SMB2_PREAUTH_INTEGRITY_CAPABILITIES: one hash (SHA-512), a 32-byte salt
    data = struct.pack("<HHH", 1, 32, 1) + bytes(range(32))
    context = struct.pack("<HHI", 1, len(data), 0) + data
    body = struct.pack("<HHHHI", 36, len(DIALECTS), 1, 0, 0) + b"servprobe-client"
    body += struct.pack("<IHH", context_offset, 1, 0) + dialects + b"\x00" * pad + context
    smb = _header(0, 0) + body
    return _frame(smb) + smb


def _der(tag: int, value: bytes) -> bytes:
    from servprobe.post.ber import tlv

    return tlv(tag, value)


def session_setup() -> bytes:
    ntlm = NTLMSSP + struct.pack("<II", 1, NTLM_FLAGS) + b"\x00" * 16 + bytes([6, 1, 0, 0, 0, 0, 0, 15])
    mech = _der(0x06, bytes.fromhex("2b0601040182370202 0a".replace(" ", "")))
    init = _der(0x30, _der(0xA0, _der(0x30, mech)) + _der(0xA2, _der(0x04, ntlm)))
    token = _der(0x60, _der(0x06, bytes.fromhex("2b0601050502")) + _der(0xA0, init))
    offset = 64 + 24
    body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, offset, len(token), 0) + token
    smb = _header(1, 1) + body
    return _frame(smb) + smb


def filetime(raw: int) -> str | None:
    if raw <= 0:
        return None
    try:
        return datetime.fromtimestamp(raw / 10_000_000 - FILETIME_EPOCH, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None


def parse_challenge(blob: bytes) -> dict[str, str]:
    """Target info and OS version of an NTLMSSP CHALLENGE found anywhere in blob."""
    at = blob.find(NTLMSSP + b"\x02\x00\x00\x00")
    if at < 0 or len(blob) < at + 56:
        return {}
    msg = blob[at:]
    out: dict[str, str] = {}
    tlen, _, toff = struct.unpack_from("<HHI", msg, 12)
    if tlen and toff + tlen <= len(msg):
        out["Target_Name"] = text(msg[toff : toff + tlen].decode("utf-16-le", "replace"), 256)
    ilen, _, ioff = struct.unpack_from("<HHI", msg, 40)
    info = msg[ioff : ioff + ilen] if ioff + ilen <= len(msg) else b""
    i = 0
    while i + 4 <= len(info):
        av, n = struct.unpack_from("<HH", info, i)
        value = info[i + 4 : i + 4 + n]
        i += 4 + n
        if av == 0:
            break
        if av in AV_NAMES:
            out[AV_NAMES[av]] = text(value.decode("utf-16-le", "replace"), 256)
    flags = struct.unpack_from("<I", msg, 20)[0]
    if flags & 0x02000000 and toff >= 56 and ioff >= 56:
        major, minor, build = msg[48], msg[49], struct.unpack_from("<H", msg, 50)[0]
        out["Product_Version"] = f"{major}.{minor}.{build}"
    return out


class SmbMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.negotiated: dict[str, object] | None = None
        self.ntlm: dict[str, str] = {}

    def start(self, now: float) -> list[bytes]:
        return [negotiate()]

    def parse(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while not self.done and len(self.buf) >= 4:
            size = struct.unpack(">I", self.buf[:4])[0] & 0xFFFFFF
            if self.buf[0] != 0 or size < 64:
                self.done = True
                break
            if len(self.buf) < 4 + size:
                break
            smb, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
            if not smb.startswith(b"\xfeSMB"):
                self.done = True
                break
            command = struct.unpack_from("<H", smb, 12)[0]
            if command == 0 and self.negotiated is None:
                self.negotiated = self._negotiate(smb[64:])
                out.append(session_setup())
                if self.negotiated is None:
                    self.done = True
            elif command == 1:
                self.ntlm = parse_challenge(smb[64:])
                self.done = True
        return out

    def _negotiate(self, body: bytes) -> dict[str, object] | None:
        if len(body) < 64:
            return None
        mode, dialect = struct.unpack_from("<HH", body, 2)
        system, start = struct.unpack_from("<QQ", body, 40)
        return {"dialect": dialect, "signing_enabled": bool(mode & 1), "signing_required": bool(mode & 2),
                "date": filetime(system), "start_date": filetime(start)}

    def finish(self) -> Finding | None:
        n = self.negotiated
        if n is None:
            return None
        d = int(n["dialect"])  # type: ignore[call-overload]
        dialect = f"{d >> 8}{(d >> 4) & 0xF}{d & 0xF}"  # 0x0311 → "311", as nmap 7.93 writes it
        if n["signing_required"]:
            mode = "Message signing enabled and required"
        elif n["signing_enabled"]:
            mode = "Message signing enabled but not required"
        else:
            mode = "Message signing is disabled and not required!"
        sec = {dialect: [mode]}
        f = Finding(ScriptResult("smb2-security-mode", format_output(sec), sec))
        times = {"date": n["date"] or "N/A", "start_date": n["start_date"] or "N/A"}
        f.more.append(ScriptResult("smb2-time", format_output(times), times))  # type: ignore[arg-type]
        if self.ntlm:
            f.more.append(ScriptResult("smb-ntlm-info", format_output(self.ntlm), dict(self.ntlm)))
            if "NetBIOS_Computer_Name" in self.ntlm:
                f.fields["hostname"] = self.ntlm["NetBIOS_Computer_Name"]
        if self.result.version and (self.result.product or "").startswith("Samba"):
            f.fields["version"] = ""  # the walk's version is a layout guess; nothing states it
        return f


POST = PostProcessor(
    "smb2-security-mode",
    Trigger(services=frozenset({"microsoft-ds", "netbios-ssn", "smb"}), ports=frozenset({445, 139}),
            tunnel="plain"),
    SmbMachine,
    "SMB2 NEGOTIATE (dialect, signing, time) and the NTLMSSP challenge's names and OS build",
)


# ------------------------------------------------------------------- SMB1, where still enabled


def _smb1(command: int, words: bytes, data: bytes, mid: int) -> bytes:
    # flags: case-insensitive paths, canonical names; flags2: long names, NT status codes (no
    # extended security and no Unicode, so the answer's strings are plain OEM text)
    head = b"\xffSMB" + struct.pack("<BIBHH8sHHHHH", command, 0, 0x18, 0x4001, 0, b"", 0, 0, 0xFEFF, 0, mid)
    smb = head + bytes([len(words) // 2]) + words + struct.pack("<H", len(data)) + data
    return struct.pack(">I", len(smb)) + smb


def smb1_negotiate() -> bytes:
    return _smb1(0x72, b"", b"\x02NT LM 0.12\x00", 1)


def smb1_session_setup() -> bytes:
    words = struct.pack("<BBHHHHIHHII", 0xFF, 0, 0, 16644, 1, 0, 0, 1, 0, 0, 0x0000D4)
    data = b"\x00" + b"\x00" + b"\x00" + b"Unix\x00" + b"servprobe\x00"
    return _smb1(0x73, words, data, 2)


class Smb1Machine(Buffered):
    """SMB1 NEGOTIATE (NT LM 0.12) then an anonymous SESSION_SETUP_ANDX: NativeOS and
    NativeLanMan, where Samba states its real version ("Samba 4.17.12-Debian")."""

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.native: list[str] = []

    def start(self, now: float) -> list[bytes]:
        return [smb1_negotiate()]

    def parse(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while not self.done and len(self.buf) >= 4:
            size = struct.unpack(">I", self.buf[:4])[0] & 0xFFFFFF
            if self.buf[0] != 0 or size < 35:
                self.done = True
                break
            if len(self.buf) < 4 + size:
                break
            smb, self.buf = self.buf[4 : 4 + size], self.buf[4 + size :]
            if not smb.startswith(b"\xffSMB"):  # an SMB2 answer: SMB1 is disabled
                self.done = True
                break
            command, status = smb[4], struct.unpack_from("<I", smb, 5)[0]
            if command == 0x72:
                if status or smb[32] != 17:
                    self.done = True
                else:
                    out.append(smb1_session_setup())
            elif command == 0x73:
                self.done = True
                words = smb[32]
                at = 33 + 2 * words
                if words == 3 and len(smb) >= at + 2:
                    count = struct.unpack_from("<H", smb, at)[0]
                    strings = smb[at + 2 : at + 2 + count].split(b"\x00")
                    self.native = [text(s, 128) for s in strings[:3]]
        return out

    def finish(self) -> Finding | None:
        if len(self.native) < 2 or not any(self.native[:2]):
            return None
        native_os, lanman = self.native[0], self.native[1]
        elements = {"OS": f"{native_os} ({lanman})" if lanman else native_os, "NativeOS": native_os,
                    "NativeLanMan": lanman}
        if len(self.native) > 2 and self.native[2]:
            elements["Domain name"] = self.native[2]
        f = Finding(ScriptResult("smb-os-discovery", format_output(elements), elements))
        if lanman.startswith("Samba "):
            version = lanman[6:].split()[0]
            f.fields = {"product": "Samba smbd", "version": version}
            upstream = version.split("-")[0]
            f.cpes = [f"cpe:/a:samba:samba:{upstream}"]
        return f


POST_SMB1 = PostProcessor(
    "smb-os-discovery",
    Trigger(services=frozenset({"microsoft-ds", "netbios-ssn", "smb"}), ports=frozenset({445, 139}),
            tunnel="plain"),
    Smb1Machine,
    "SMB1 NativeOS/NativeLanMan where SMB1 is enabled (Samba's real version)",
)
