"""The port table: port/proto → registered service name, and a ranking for --top-ports / -F.

Source, chosen at run time: nmap's /usr/share/nmap/nmap-services when installed (so names and
top ports agree with nmap side by side; read, never copied), otherwise servprobe's bundled
table src/servprobe/data/servprobe-services (names from Debian netbase / IANA, ranking of our
own; see servprobe.scan.build_port_table). `SERVPROBE_SERVICES=PATH|bundled|nmap` forces one.

`service_name(port, proto)` is what the engine calls for "rndc?"-style table guesses.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

NMAP_SERVICES = Path("/usr/share/nmap/nmap-services")


def bundled_path() -> Path:
    return Path(str(resources.files("servprobe") / "data" / "servprobe-services"))


@dataclass
class PortTable:
    """Names and ranks of ports, per protocol."""

    source: str
    names: dict[tuple[str, int], str] = field(default_factory=dict)
    # (proto, port) → sort key; lower = more common (nmap: -frequency; bundled: rank)
    order: dict[tuple[str, int], float] = field(default_factory=dict)

    def name(self, port: int, proto: str, *, keep_unknown: bool = False) -> str | None:
        # nmap-services names some ports literally "unknown": nmap lists that name for closed
        # ports, but it is no guess worth a "?" on an open one
        name = self.names.get((proto, port))
        return name if keep_unknown or name != "unknown" else None

    def top_ports(self, n: int, proto: str) -> list[int]:
        """The n most common ports of `proto`; past the ranked ones, ascending port numbers."""
        n = max(0, min(n, 65535))
        ranked = sorted(
            (key for key in self.order if key[0] == proto),
            key=lambda k: (self.order[k], k[1]),
        )
        ports = [port for _, port in ranked[:n] if port > 0]
        if len(ports) < n:
            have = set(ports)
            for port in range(1, 65536):
                if len(ports) >= n:
                    break
                if port not in have:
                    ports.append(port)
        return sorted(ports)

    def lookup(self, pattern: str) -> list[tuple[str, int]]:
        """(proto, port) rows for a service name or fnmatch wildcard (for -p http,ssh*)."""
        pat = pattern.lower()
        if any(c in pat for c in "*?["):
            return [
                (pr, po)
                for (pr, po), name in self.names.items()
                if fnmatch.fnmatchcase(name.lower(), pat)
            ]
        return [(pr, po) for (pr, po), name in self.names.items() if name.lower() == pat]


def _read(path: Path, nmap_format: bool) -> PortTable:
    table = PortTable(source=str(path))
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2 or "/" not in fields[1]:
                continue
            port_s, _, proto = fields[1].partition("/")
            if not port_s.isdigit() or proto not in ("tcp", "udp"):
                continue
            key = (proto, int(port_s))
            table.names.setdefault(key, fields[0])
            if len(fields) >= 3:
                try:
                    value = float(fields[2])
                except ValueError:
                    continue
                # nmap-services gives a frequency (higher = commoner), ours a rank
                table.order.setdefault(key, -value if nmap_format else value)
    return table


@cache
def load_port_table(choice: str | None = None) -> PortTable:
    """The port table: "nmap", "bundled", a path, or None (nmap's if installed, else ours)."""
    choice = choice or os.environ.get("SERVPROBE_SERVICES") or None
    if choice == "bundled":
        return _read(bundled_path(), nmap_format=False)
    if choice == "nmap" or (choice is None and NMAP_SERVICES.is_file()):
        try:
            return _read(NMAP_SERVICES, nmap_format=True)
        except OSError:
            if choice == "nmap":
                raise
    if choice not in (None, "nmap"):
        path = Path(choice)
        return _read(path, nmap_format=path.name == "nmap-services")
    return _read(bundled_path(), nmap_format=False)


def service_name(port: int, proto: str, *, keep_unknown: bool = False) -> str | None:
    """The registered name of a port, e.g. (953, "tcp") → "rndc"; None when unknown."""
    try:
        return load_port_table().name(port, proto, keep_unknown=keep_unknown)
    except OSError:
        return None
