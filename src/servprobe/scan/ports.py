"""Which ports a scan covers: -p (with service names and T:/U:), -F, --top-ports, defaults.

Rules as in nmap: without -p the top 1000 ports of each scanned protocol (-F: top 100;
--top-ports N); -p items without a T:/U: prefix go to every scanned protocol; -p with
--top-ports picks the top N among the -p ports. The port table is servprobe.scan.services.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from servprobe.portspec import PortSpec, PortSpecError, parse_portspec
from servprobe.scan.services import PortTable, load_port_table

DEFAULT_TOP = 1000
FAST_TOP = 100


@dataclass
class PortSelection:
    """Sorted ports per scanned protocol."""

    ports: dict[str, list[int]] = field(default_factory=dict)

    def get(self, proto: str) -> list[int]:
        return self.ports.get(proto, [])

    def total(self) -> int:
        return sum(len(v) for v in self.ports.values())

    def spec_strings(self) -> dict[str, str]:
        """nmap's compact form per protocol, for <scaninfo services=...>."""
        return {proto: compress(ports) for proto, ports in self.ports.items()}


def compress(ports: Iterable[int]) -> str:
    """[1, 2, 3, 5] → "1-3,5"."""
    out: list[str] = []
    run: list[int] = []
    for p in sorted(set(ports)):
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [p]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def select_ports(
    protos: Iterable[str],
    *,
    spec: str | None = None,
    fast: bool = False,
    top: int | None = None,
    exclude: str | None = None,
    table: PortTable | None = None,
) -> PortSelection:
    """Resolve the port flags; raises PortSpecError naming the offending text."""
    protos = list(dict.fromkeys(protos))
    table = table or load_port_table()
    if top is not None and top < 1:
        raise PortSpecError("--top-ports needs a positive number", str(top))
    sel = PortSelection()
    parsed: PortSpec | None = None
    if spec is not None:
        parsed = parse_portspec(spec, default_protos=protos, name_lookup=table.lookup)
    excluded = (
        parse_portspec(exclude, default_protos=protos, name_lookup=table.lookup)
        if exclude
        else PortSpec()
    )
    for proto in protos:
        if parsed is not None:
            ports = set(parsed.get(proto))
            if top is not None or fast:
                n = top if top is not None else FAST_TOP
                ranked = _by_rank(table, proto, sorted(ports))
                rank = {p: i for i, p in enumerate(ranked)}
                ports = set(sorted(ports, key=lambda p: rank.get(p, 1 << 20))[:n])
        else:
            n = top if top is not None else (FAST_TOP if fast else DEFAULT_TOP)
            ports = set(table.top_ports(n, proto))
        ports -= excluded.get(proto)
        sel.ports[proto] = sorted(ports)
    if parsed is not None:
        # a T:/U: part for a protocol that is not being scanned is nmap's error too
        for proto in ("tcp", "udp"):
            if parsed.get(proto) and proto not in protos:
                flag = "-sU" if proto == "udp" else "-sT"
                raise PortSpecError(f"{proto.upper()} ports given but no {flag} scan", spec or "")
        if not sel.total():
            raise PortSpecError("no ports left to scan", spec or "")
    return sel


def _by_rank(table: PortTable, proto: str, ports: list[int]) -> list[int]:
    return sorted(ports, key=lambda p: (table.order.get((proto, p), float("inf")), p))
