"""Reading nmap service fingerprints (SF-Port… / SF: lines, or XML servicefp attributes).

An nmap fingerprint looks like

    SF-Port21-TCP:V=7.93%I=7%D=11/24%Time=6743A2F1%P=x86_64-pc-linux-gnu%r(NULL,
    SF:14,"220\\x20\\(vsFTPd\\x203\\.0\\.3\\)\\r\\n")%r(GenericLines,…);

wrapped at 80 columns with `SF:` continuation prefixes (the wrap may split an escape). Each
`r(PROBE,HEXLEN,"…")` record is one response: HEXLEN is the real response length, the
string may be shorter (nmap caps what it prints). The string escapes every non-alphanumeric
byte as nmap writes it: `\\xHH`, `\\0`, `\\r`, `\\n`, `\\t`, or a backslash before a
punctuation character; the decoder accepts any such escape (and \\a \\b \\f \\v too).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

_SIMPLE = {"0": 0, "r": 13, "n": 10, "t": 9, "a": 7, "b": 8, "f": 12, "v": 11}
_HEX = re.compile(r"[0-9a-fA-F]{2}")


class FingerprintError(ValueError):
    """A fingerprint that cannot be read; the message says where."""


@dataclass(slots=True)
class FingerprintResponse:
    probe: str
    length: int  # the response's real length (HEXLEN)
    data: bytes  # what the fingerprint holds (may be shorter: truncated)

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.length


@dataclass(slots=True)
class ServiceFingerprint:
    port: int | None
    proto: str  # "tcp" | "udp"
    fields: dict[str, str] = field(default_factory=dict)  # V, I, D, Time, P, …
    responses: list[FingerprintResponse] = field(default_factory=list)
    line: int = 0  # where it started in the input (1-based)


def decode_string(text: str) -> bytes:
    """Decode the escaped string of an r(…) record."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\":
            out += c.encode("latin-1", "replace")
            i += 1
            continue
        if i + 1 >= n:
            raise FingerprintError("string ends with a lone backslash")
        e = text[i + 1]
        if e == "x":
            hh = text[i + 2 : i + 4]
            if not _HEX.fullmatch(hh):
                raise FingerprintError(f"bad \\x escape {text[i : i + 4]!r}")
            out.append(int(hh, 16))
            i += 4
        elif e in _SIMPLE:
            out.append(_SIMPLE[e])
            i += 2
        else:
            out += e.encode("latin-1", "replace")
            i += 2
    return bytes(out)


def _parse_body(body: str, fp: ServiceFingerprint) -> None:
    i, n = 0, len(body)
    while i < n:
        if body.startswith("r(", i):
            comma1 = body.find(",", i + 2)
            comma2 = body.find(",", comma1 + 1) if comma1 >= 0 else -1
            if comma1 < 0 or comma2 < 0 or body[comma2 + 1 : comma2 + 2] != '"':
                raise FingerprintError(f"bad r(…) record at {body[i : i + 30]!r}")
            probe = body[i + 2 : comma1]
            try:
                length = int(body[comma1 + 1 : comma2], 16)
            except ValueError:
                raise FingerprintError(f"bad length in record {probe!r}") from None
            j = comma2 + 2
            while j < n and body[j] != '"':
                j += 2 if body[j] == "\\" else 1
            if j >= n or body[j + 1 : j + 2] != ")":
                raise FingerprintError(f"unterminated string in record {probe!r}")
            fp.responses.append(
                FingerprintResponse(probe, length, decode_string(body[comma2 + 2 : j]))
            )
            i = j + 2
        elif body[i] in "%;\n\r ":
            i += 1
        else:
            end = body.find("%", i)
            end = n if end < 0 else end
            key, _, value = body[i:end].partition("=")
            fp.fields[key] = value
            i = end


_HEAD = re.compile(r"SF-Port(\d+)-(TCP|UDP):")


def parse_fingerprint(text: str, line: int = 0) -> ServiceFingerprint:
    """One fingerprint, already unwrapped (no SF: prefixes)."""
    m = _HEAD.match(text)
    if not m:
        raise FingerprintError("a fingerprint starts with SF-Port<N>-<TCP|UDP>:")
    fp = ServiceFingerprint(port=int(m.group(1)), proto=m.group(2).lower(), line=line)
    _parse_body(text[m.end() :], fp)
    return fp


def read_fingerprints(text: str) -> list[ServiceFingerprint]:
    """Every fingerprint in nmap output (normal output, a pasted fingerprint, or XML)."""
    if "servicefp=" in text:
        found = []
        for m in re.finditer(r'servicefp="([^"]*)"', text):
            line = text.count("\n", 0, m.start()) + 1
            text_fp = html.unescape(m.group(1))
            # nmap's XML may keep the 80-column wrapping (newline + "SF:") inside the value
            text_fp = re.sub(r"\r?\n(?:SF:)?", "", text_fp)
            found.append(parse_fingerprint(text_fp, line))
        return found
    found = []
    parts: list[str] = []
    start = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if s.startswith("SF-Port"):
            if parts:
                found.append(parse_fingerprint("".join(parts), start))
            parts, start = [s], lineno
        elif s.startswith("SF:") and parts:
            parts.append(s[3:])
        elif parts:
            found.append(parse_fingerprint("".join(parts), start))
            parts = []
    if parts:
        found.append(parse_fingerprint("".join(parts), start))
    return found
