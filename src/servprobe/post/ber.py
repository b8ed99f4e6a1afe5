"""Just enough ASN.1 BER for the SNMP and LDAP post-processors: encode TLVs, decode nested.

Definite lengths only (≤ 4 length bytes), nesting bounded; anything else raises BerError so
a machine can end its exchange cleanly.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 12


class BerError(ValueError):
    """Not the BER this module reads."""


def _len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _len(len(value)) + value


def ber_int(n: int, tag: int = 0x02) -> bytes:
    return tlv(tag, n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big", signed=True))


def seq(*items: bytes, tag: int = 0x30) -> bytes:
    return tlv(tag, b"".join(items))


def decode(data: bytes, depth: int = 0) -> list[tuple[int, Any]]:
    """A list of (tag, value): constructed tags (bit 0x20) hold lists, others bytes."""
    if depth > MAX_DEPTH:
        raise BerError("nested too deep")
    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise BerError("truncated")
        tag, n = data[i], data[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            if k == 0 or k > 4 or i + k > len(data):
                raise BerError("bad length")
            n = int.from_bytes(data[i : i + k], "big")
            i += k
        if i + n > len(data):
            raise BerError("truncated")
        value = data[i : i + n]
        i += n
        out.append((tag, decode(value, depth + 1) if tag & 0x20 else value))
    return out


def whole(data: bytes) -> tuple[int, int] | None:
    """(tag, total length) of the first complete TLV in data, or None while it is incomplete."""
    if len(data) < 2:
        return None
    n = data[1]
    head = 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4:
            raise BerError("bad length")
        if len(data) < 2 + k:
            return None
        n = int.from_bytes(data[2 : 2 + k], "big")
        head += k
    return (data[0], head + n) if len(data) >= head + n else None


def as_int(v: Any) -> int:
    if not isinstance(v, bytes) or not v:
        raise BerError("not an integer")
    return int.from_bytes(v, "big", signed=True)
