"""Connect-scan rate on loopback and target-list memory, next to nmap -sT when installed.

    .venv/bin/python bench/bench_portscan.py [--rounds N] [--timing T]

Figures printed:
  1. servprobe's connect scan of all 65,535 TCP ports of 127.0.0.1 (the port scanner alone,
     servprobe.scan.portscan, no service detection): seconds and ports/s, best of N rounds;
     and the same through the CLI (`servprobe --no-sV -n -Pn -p- 127.0.0.1`, process start
     and output included);
  2. `nmap -sT -p- -n -Pn 127.0.0.1` wall time and ports/s, and the ratio;
  3. a sweep of 127.0.0.0/16 on port 80 with host discovery (many hosts, one port), both tools;
  4. memory for a /16 target list: tracemalloc peak while generating all 65,536 addresses
     lazily (servprobe.scan.targets) against a materialised list of the same addresses for
     scale, and this process's peak RSS. (nmap has no comparable figure; none is shown.)
Loopback only: nothing here sends a packet anywhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from servprobe.scan.portscan import PortScanner, config_for_timing  # noqa: E402
from servprobe.scan.targets import build_target_list  # noqa: E402

ALL = list(range(1, 65536))


def scan_once(timing: int) -> tuple[float, dict[str, int]]:
    async def go() -> tuple[float, dict[str, int]]:
        ps = PortScanner(config_for_timing(timing))
        t = time.perf_counter()
        try:
            hp = await ps.scan_host("127.0.0.1", {"tcp": ALL})
        finally:
            ps.close()
        dt = time.perf_counter() - t
        counts: dict[str, int] = {}
        for _, (state, _) in hp.items():
            counts[state] = counts.get(state, 0) + 1
        return dt, counts

    try:
        import uvloop

        return uvloop.run(go())
    except ImportError:
        return asyncio.run(go())


def cli_once(timing: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "servprobe", "--no-sV", "--no-store", "--no-progress", "-n", "-Pn",
         f"-T{timing}", "-p-", "-oX", os.devnull, "127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL, env=env,
    )
    return time.perf_counter() - t


def nmap_once(timing: int) -> float | None:
    nmap = shutil.which("nmap")
    if nmap is None:
        return None
    t = time.perf_counter()
    subprocess.run(
        [nmap, "-sT", "-p-", "-n", "-Pn", f"-T{timing}", "-oX", os.devnull, "127.0.0.1"],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t


def target_memory() -> tuple[int, int, int, float]:
    tracemalloc.start()
    t = time.perf_counter()
    tl = build_target_list(["10.0.0.0/16"])
    n = 0
    for _ in tl:
        n += 1
    lazy_s = time.perf_counter() - t
    _, lazy_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    materialised = [h.address for h in build_target_list(["10.0.0.0/16"])]
    _, list_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == len(materialised) == 65536
    return n, lazy_peak, list_peak, lazy_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timing", type=int, default=4)
    args = ap.parse_args()

    print(f"connect scan, 127.0.0.1, 65535 TCP ports, -T{args.timing}, best of {args.rounds}")
    best = min(scan_once(args.timing) for _ in range(args.rounds))
    print(f"  servprobe (port scanner):  {best[0]:6.2f} s  {65535 / best[0]:9,.0f} ports/s  {best[1]}")
    cli = min(cli_once(args.timing) for _ in range(args.rounds))
    print(f"  servprobe (CLI, -oX):      {cli:6.2f} s  {65535 / cli:9,.0f} ports/s")
    nm = [nmap_once(args.timing) for _ in range(args.rounds)]
    if nm[0] is not None:
        nbest = min(x for x in nm if x is not None)
        print(f"  nmap -sT:                  {nbest:6.2f} s  {65535 / nbest:9,.0f} ports/s")
        print(f"  ratio nmap/servprobe: scanner {nbest / best[0]:.2f}x, CLI {nbest / cli:.2f}x (>1 = servprobe faster)")
    else:
        print("  nmap not installed: no comparison")

    print("sweep: 127.0.0.0/16 (65,536 loopback addresses), TCP port 80, discovery on, one round")
    sweep = ["--no-sV", "--no-store", "--no-progress", "-n", f"-T{args.timing}", "-p", "80", "-oX", os.devnull, "127.0.0.0/16"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "servprobe", *sweep], check=True, stdout=subprocess.DEVNULL, env=env)
    ours = time.perf_counter() - t
    print(f"  servprobe (CLI):           {ours:6.2f} s  {65536 / ours:9,.0f} hosts/s")
    if shutil.which("nmap"):
        t = time.perf_counter()
        subprocess.run(["nmap", "-sT", "-n", f"-T{args.timing}", "-p", "80", "-oX", os.devnull, "127.0.0.0/16"],
                       check=True, stdout=subprocess.DEVNULL)
        theirs = time.perf_counter() - t
        print(f"  nmap -sT:                  {theirs:6.2f} s  {65536 / theirs:9,.0f} hosts/s")
        print(f"  ratio nmap/servprobe: {theirs / ours:.2f}x (>1 = servprobe faster)")

    n, lazy_peak, list_peak, lazy_s = target_memory()
    print(f"/16 target list ({n:,} addresses)")
    print(f"  lazy generation: peak {lazy_peak / 1024:8.1f} KiB  ({lazy_s:.2f} s to generate all)")
    print(f"  a materialised list of address strings for scale: {list_peak / 1024:8.1f} KiB")
    print(f"  process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
