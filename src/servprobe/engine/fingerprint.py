"""The SF- service fingerprint writer: nmap's format for responses nothing recognized.

    SF-Port{port}-{TCP|UDP}:V={version}[%T=SSL]%I={intensity}%D={month}/{day}%Time={hex unix}
    %P={platform}%r({probe},{hex total length},"{escaped response}")...;

Sans-IO like the rest of engine/: the time and the platform triplet (nmap's NMAP_PLATFORM,
from servprobe.net.hostinfo) are given by the caller.

The text is wrapped exactly as nmap wraps it: a newline plus "SF:" is inserted whenever the
running length (wrappers included) reaches 74 modulo 75, so every line is 74 characters and
continuation lines start with "SF:". The terminating ';' is never wrapped.
Escaping (what nmap's reader, and `probes.fpreader`, expect): ASCII letters and digits raw;
NUL as \\0 (\\x00 when a digit follows, so a regex engine cannot read \\0 + digit as octal);
the regex metacharacters \\ ? " [ ] ( ) . * + $ ^ | backslash-escaped; other ASCII punctuation
raw; \\r \\n \\t; everything else (space included) \\xHH in lower case.
At most 900 bytes of each response are written (the length field still gives the total);
no response is added once the text is longer than 2200 characters.
"""

from __future__ import annotations

import string
import time

from servprobe import __version__

WRAP = 74
MAX_RESPONSE = 900
MAX_LENGTH = 2200
_ALNUM = frozenset((string.ascii_letters + string.digits).encode())
_META = frozenset(b'\\?"[]().*+$^|')
_PUNCT = frozenset(string.punctuation.encode())
_DIGITS = frozenset(string.digits.encode())


def escape_response(data: bytes) -> str:
    """One response as nmap writes it inside %r(...,"...")."""
    out: list[str] = []
    n = len(data)
    for i, b in enumerate(data):
        if b in _ALNUM:
            out.append(chr(b))
        elif b == 0:
            out.append("\\x00" if i + 1 < n and data[i + 1] in _DIGITS else "\\0")
        elif b in _META:
            out.append("\\" + chr(b))
        elif b in _PUNCT:
            out.append(chr(b))
        elif b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


class FingerprintBuilder:
    """Accumulates responses of one service into an SF- fingerprint, wrapped as nmap does."""

    __slots__ = ("_len", "_parts", "intensity", "now", "platform", "port", "proto", "tls")

    def __init__(
        self,
        port: int,
        proto: str,
        intensity: int,
        tls: bool = False,
        now: float | None = None,
        platform: str | None = None,
    ) -> None:
        self.port = port
        self.proto = proto
        self.intensity = intensity
        self.tls = tls
        self.now = now
        self.platform = platform
        self._parts: list[str] = []  # already-wrapped text, in chunks
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def _add(self, text: str) -> None:
        # nmap's rule, per character: when the length so far is 74 modulo 75, first add
        # "\nSF:"; done here a line's worth at a time
        while text:
            col = self._len % (WRAP + 1)
            if col == WRAP:
                self._parts.append("\nSF:")
                self._len += 4
                col = self._len % (WRAP + 1)
            room = WRAP - col
            chunk = text[:room]
            self._parts.append(chunk)
            self._len += len(chunk)
            text = text[room:]

    def add(self, probe_name: str, data: bytes, when: float | None = None) -> None:
        """Add one response; `when` (unix time) dates the fingerprint if it is the first."""
        if not data or self._len > MAX_LENGTH:
            return
        if not self._parts:
            when = when if self.now is None else self.now
            when = 0.0 if when is None else when  # sans-IO: the caller says what time it is
            tm = time.localtime(when)  # a conversion (nmap prints the local date), not a clock read
            head = (
                f"SF-Port{self.port}-{self.proto.upper()}:V={__version__}"
                f"{'%T=SSL' if self.tls else ''}%I={self.intensity}"
                f"%D={tm.tm_mon}/{tm.tm_mday}%Time={int(when):X}"
                f"%P={self.platform or 'unknown'}"
            )
            self._add(head)
        self._add(f'%r({probe_name},{len(data):X},"')
        self._add(escape_response(data[:MAX_RESPONSE]))
        self._add('")')

    def text(self) -> str | None:
        if not self._parts:
            return None
        return "".join(self._parts) + ";"


def build_fingerprint(
    port: int,
    proto: str,
    intensity: int,
    responses: list[tuple[str, bytes]],
    tls: bool = False,
    now: float | None = None,
    platform: str | None = None,
) -> str | None:
    """Convenience: the fingerprint of a list of (probe name, response) pairs."""
    fp = FingerprintBuilder(port, proto, intensity, tls, now, platform)
    for name, data in responses:
        fp.add(name, data)
    return fp.text()
