"""Making untrusted service bytes safe to show: terminals, XML, JSON, nmap fingerprints.

A banner may carry ANSI escapes, NUL bytes, invalid UTF-8 or XML metacharacters; nothing
from a service reaches an output without passing through one of these functions.
"""

from __future__ import annotations

import re

_PRINTABLE = frozenset(range(0x20, 0x7F))


def printable_bytes(data: bytes) -> str:
    """Bytes as text with every non-printable byte written \\xHH (and backslash doubled)."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b in _PRINTABLE:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


# C0 and C1 controls, DEL; tab is kept out too (it moves the cursor)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Text for a terminal: control characters (ESC included) shown as \\xHH."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# Characters XML 1.0 forbids outright
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def xml_safe(text: str) -> str:
    """Text that an XML 1.0 document may contain (forbidden characters as \\xHH)."""
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
