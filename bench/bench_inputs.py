"""-iL inputs of other tools (servprobe.scan.inputs): parse rate and memory on big files.

    .venv/bin/python bench/bench_inputs.py [--lines N]

Figures printed, for a masscan -oL file of N lines (default 1,000,000: N/10 hosts, 10 open
ports each, in random order as masscan writes them) and a naabu JSON Lines file of the same:
  1. seconds and lines/s for detection, parsing and per-host merging to the end of the file;
  2. the tracemalloc peak while doing so, next to the file's size: it follows the number of
     distinct hosts (the per-host merge), not the number of lines;
  3. a 50,000-line masscan -oX file (one <host> per port), read the same way.
No packets are sent; nmap has no comparable figure (it cannot read per-host port lists).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from servprobe.scan.inputs import PortInput, merge_hosts, open_input  # noqa: E402


def _entries(n: int) -> list[tuple[str, int]]:
    rng = random.Random(15)
    hosts = max(1, n // 10)
    items = [(f"10.{(h >> 16) & 255}.{(h >> 8) & 255}.{h & 255}", 1 + (h * 7 + k * 131) % 65535)
             for h in range(hosts) for k in range(10)][:n]
    rng.shuffle(items)
    return items


def _write(path: Path, kind: str, items: list[tuple[str, int]]) -> None:
    with path.open("w") as fh:
        if kind == "masscan-oL":
            fh.write("#masscan\n")
            for i, (ip, port) in enumerate(items):
                fh.write(f"open tcp {port} {ip} {1700000000 + i}\n")
            fh.write("# end\n")
        elif kind == "naabu":
            for ip, port in items:
                fh.write(json.dumps({"ip": ip, "timestamp": "2023-11-14T22:13:20Z", "port": port,
                                     "protocol": "tcp", "tls": False}, separators=(",", ":")) + "\n")
        else:  # masscan-oX
            fh.write('<?xml version="1.0"?>\r\n<nmaprun scanner="masscan" start="1700000000" version="1.0-BETA"  xmloutputversion="1.03">\r\n')
            for ip, port in items:
                fh.write(f'<host endtime="1700000000"><address addr="{ip}" addrtype="ipv4"/><ports>'
                         f'<port protocol="tcp" portid="{port}"><state state="open" reason="syn-ack" reason_ttl="64"/>'
                         "</port></ports></host>\r\n")
            fh.write("</nmaprun>\r\n")


def measure(path: Path, trace: bool) -> tuple[str, float, int, int, int]:
    """(format, seconds, hosts, ports, tracemalloc peak or 0): a timed run without
    tracemalloc (it slows allocation several times), a second one for the memory peak."""
    if trace:
        tracemalloc.start()
    t = time.perf_counter()
    fmt, lines = open_input(str(path))
    hosts = ports = 0
    for _, _, pm in merge_hosts(PortInput(str(path), fmt, lines)):
        hosts += 1
        ports += sum(len(p) for _, p in pm)
    took = time.perf_counter() - t
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return fmt, took, hosts, ports, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for kind, n in (("masscan-oL", opts.lines), ("naabu", opts.lines), ("masscan-oX", 50_000)):
            path = Path(d) / kind
            _write(path, kind, _entries(n))
            fmt, took, hosts, ports, _ = measure(path, trace=False)
            peak = measure(path, trace=True)[4]
            size = path.stat().st_size
            print(f"{kind:11} {n:>9,} lines ({size / 1e6:7.1f} MB) detected as {fmt}: "
                  f"{took:6.2f} s, {n / took:>9,.0f} lines/s; {hosts:,} host groups, {ports:,} ports; "
                  f"peak memory {peak / 1e6:.1f} MB")
            path.unlink()


if __name__ == "__main__":
    main()
