"""nmap's port-list syntax (`-p`, the probe file's Exclude/ports/sslports), shared by all.

Grammar: comma-separated items; an item is `N`, `N-M`, `-M` (from 1), `N-` (to 65535),
`-` (1-65535), or a service name (resolved through `name_lookup`, `*`/`?` wildcards
allowed). `T:`, `U:` (and `S:`, accepted and ignored like SCTP) switch the protocol for the
items that follow, until the next prefix. Items before any prefix go to `default_protos`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

MAX_PORT = 65535


class PortSpecError(ValueError):
    """A bad port list; `text` is the offending part, for the message."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(f"{message}: {text!r}")
        self.text = text


@dataclass(slots=True)
class PortSpec:
    tcp: set[int] = field(default_factory=set)
    udp: set[int] = field(default_factory=set)

    def get(self, proto: str) -> set[int]:
        return self.tcp if proto == "tcp" else self.udp

    def pairs(self) -> frozenset[tuple[str, int]]:
        return frozenset([("tcp", p) for p in self.tcp] + [("udp", p) for p in self.udp])

    def __bool__(self) -> bool:
        return bool(self.tcp or self.udp)


def _port(text: str, item: str) -> int:
    if not (text.isascii() and text.isdigit()):  # not "²" nor other Unicode digits
        raise PortSpecError("not a port number", item)
    value = int(text)
    if value > MAX_PORT:
        raise PortSpecError("port out of range 0-65535", item)
    return value


def parse_portspec(
    text: str,
    default_protos: Iterable[str] = ("tcp",),
    name_lookup: Callable[[str], Iterable[tuple[str, int]]] | None = None,
) -> PortSpec:
    """Parse nmap port syntax into a PortSpec.

    `name_lookup(pattern)` returns (proto, port) pairs for a service name or wildcard; without
    it, names are an error.
    """
    spec = PortSpec()
    protos: tuple[str, ...] = tuple(default_protos)
    if not text or not text.strip():
        raise PortSpecError("empty port list", text)
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise PortSpecError("empty item in port list", text)
        upper = item[:2].upper()
        if upper in ("T:", "U:", "S:"):
            protos = {"T:": ("tcp",), "U:": ("udp",), "S:": ()}[upper]
            item = item[2:].strip()
            if not item:
                raise PortSpecError("protocol prefix without ports", raw.strip())
        if item.startswith("[") and item.endswith("]"):
            item = item[1:-1].strip()
            if not item:  # "[]" (found by fuzzing: was an IndexError)
                raise PortSpecError("empty item in port list", raw.strip())
        if item[0].isdigit() or item[0] == "-":
            if "-" in item:
                lo_s, _, hi_s = item.partition("-")
                lo = _port(lo_s, raw.strip()) if lo_s else 1
                hi = _port(hi_s, raw.strip()) if hi_s else MAX_PORT
                if lo > hi:
                    raise PortSpecError("range goes backwards", raw.strip())
                ports: Iterable[int] = range(lo, hi + 1)
            else:
                ports = (_port(item, raw.strip()),)
            for proto in protos:
                spec.get(proto).update(ports)
        else:
            if name_lookup is None:
                raise PortSpecError("not a port number or range", raw.strip())
            found = [(pr, po) for pr, po in name_lookup(item) if pr in protos]
            if not found:
                raise PortSpecError("unknown service name", raw.strip())
            for proto, port in found:
                spec.get(proto).add(port)
    return spec


def lookup_in_table(table: Iterable[tuple[str, str, int]]) -> Callable[[str], list[tuple[str, int]]]:
    """Build a name_lookup from (name, proto, port) rows, with fnmatch wildcards."""
    rows = list(table)

    def lookup(pattern: str) -> list[tuple[str, int]]:
        pat = pattern.lower()
        if any(c in pat for c in "*?"):
            return [(pr, po) for name, pr, po in rows if fnmatch.fnmatchcase(name.lower(), pat)]
        return [(pr, po) for name, pr, po in rows if name.lower() == pat]

    return lookup
