"""`python -m servprobe.rpc [--no-portmapper] ADDRESS PORT/PROTO...`: grind ports by hand.

A debugging aid for the RPC grinder alone (the scanner's -sR does the same inside a scan).
Prints one nmap-style line per port plus how it was identified.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..engine.options import EngineOptions, ServiceTarget
from .grinder import rpc_scan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m servprobe.rpc",
        description="Identify SunRPC programs on ports (portmapper DUMP, then grinding).",
        epilog="example: python -m servprobe.rpc 127.0.0.1 111/tcp 2049/udp",
    )
    ap.add_argument("address")
    ap.add_argument("ports", nargs="+", metavar="PORT/PROTO")
    ap.add_argument("--no-portmapper", action="store_true", help="grind without asking 111")
    args = ap.parse_args(argv)
    targets = []
    for spec in args.ports:
        port_text, _, proto = spec.partition("/")
        proto = proto or "tcp"
        if not port_text.isdigit() or not 0 < int(port_text) < 65536 or proto not in ("tcp", "udp"):
            ap.error(f"bad port {spec!r}: expected PORT/tcp or PORT/udp")
        targets.append(ServiceTarget(args.address, int(port_text), proto))  # type: ignore[arg-type]
    options = EngineOptions(rpc_portmapper=not args.no_portmapper)
    try:
        results = asyncio.run(rpc_scan(targets, options))
    except KeyboardInterrupt:
        return 130
    for r in results:
        how = f"via {r.rpc.via}" if r.rpc else "not identified"
        name = f"{r.port}/{r.proto}"
        print(f"{name:<10} {r.service or 'unknown':<14} {r.display_version():<28} {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
