"""Service-scan engine at scale: 10,000 loopback listeners, one full version scan.

    .venv/bin/python bench/bench_engine_scale.py [--services 10000] [--sequential] [--db PATH]

Listeners are spread over 127.{1..}.x.y addresses (25 ports each by default) and served by a few helper
processes (asyncio, uvloop when installed), in a mix of:
  banner   40%  an SSH banner at once (banner-first)
  http     40%  answers requests only: GET -> 200 nginx, anything else -> 400 (request-first)
  silent   20%  accepts and never says anything
The scan runs `run_service_scan` with default options (intensity 7, nmap's database when
installed) and prints services/s, wall time, peak RSS of the scanning process and how many
services got the expected answer. Goals: <= 60 s and <= 1 GB for 10,000 services.
Traffic goes to 127.0.0.0/8 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter

SSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
HTTP_OK = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
)
HTTP_BAD = (
    b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)
KINDS = ("banner", "http", "silent")
MIX = (0.4, 0.4, 0.2)


def kind_of(i: int) -> str:
    r = (i * 7919) % 100 / 100
    if r < MIX[0]:
        return "banner"
    if r < MIX[0] + MIX[1]:
        return "http"
    return "silent"


def plan(n: int, workers: int, per_host: int) -> list[list[tuple[str, int, str]]]:
    """(address, port, kind) per worker: `per_host` ports per address, addresses 127.w.x.y."""
    out: list[list[tuple[str, int, str]]] = [[] for _ in range(workers)]
    for i in range(n):
        w = i % workers
        j = i // workers
        h = j // per_host
        addr = f"127.{w + 1}.{h // 250}.{h % 250 + 1}"
        port = 20000 + j % per_host
        out[w].append((addr, port, kind_of(i)))
    return out


# ----------------------------------------------------------------------- listener process ---


class _Banner(asyncio.Protocol):
    def connection_made(self, transport):  # type: ignore[override]
        transport.write(SSH)


class _Http(asyncio.Protocol):
    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(HTTP_OK if data.startswith(b"GET") else HTTP_BAD)
        self.transport.close()


class _Silent(asyncio.Protocol):
    pass


async def _serve(specs: list[tuple[str, int, str]]) -> None:
    # bare protocols, no streams or tasks: the listeners must not be the bottleneck
    loop = asyncio.get_running_loop()
    factories = {"banner": _Banner, "http": _Http, "silent": _Silent}
    servers = []
    for addr, port, kind in specs:
        servers.append(
            await loop.create_server(factories[kind], addr, port, backlog=1024, reuse_address=True)
        )
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)


def serve_main(payload: str) -> None:
    from servprobe.net.driver import new_event_loop, raise_nofile_limit

    raise_nofile_limit()
    n, workers, per_host, index = json.loads(payload)
    specs = plan(n, workers, per_host)[index]
    loop = new_event_loop()
    loop.run_until_complete(_serve(specs))  # type: ignore[arg-type]


# ----------------------------------------------------------------------- scanner ------------


def expected(kind: str, r) -> bool:
    if kind == "banner":
        return r.service == "ssh" and r.product == "OpenSSH"
    if kind == "http":
        return r.service == "http" and r.product == "nginx"
    return r.method == "table"


def compare_nmap(db, specs: list[tuple[str, int, str]], args) -> tuple[int, float, float] | None:
    """Time nmap -sV and servprobe on the first `args.nmap` addresses of one listener process."""
    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.net.driver import scan_services

    if not shutil.which("nmap"):
        print("nmap is not installed: no comparison")
        return None
    addrs: list[str] = []
    for a, _, _ in specs:
        if a not in addrs:
            addrs.append(a)
    addrs = addrs[: args.nmap]
    sample = [(a, p) for a, p, _ in specs if a in addrs]
    ports = sorted({p for _, p in sample})
    t0 = time.monotonic()
    subprocess.run(
        ["nmap", "-sV", "-Pn", "-n", f"-T{args.timing}", "-p", ",".join(map(str, ports)), *addrs],
        check=True, capture_output=True, timeout=3600,
    )
    nmap_s = time.monotonic() - t0
    t0 = time.monotonic()
    scan_services(db, [ServiceTarget(a, p, "tcp") for a, p in sample], EngineOptions(rpc_grind=False, timing=args.timing))
    ours_s = time.monotonic() - t0
    return len(sample), ours_s, nmap_s


def stop_listeners(procs: list[subprocess.Popen]) -> None:
    """End the listener processes this benchmark started (by their own handles, never by name)."""
    for p in procs:
        try:
            if p.stdin:
                p.stdin.close()
            p.terminate()
            p.wait(timeout=10)
        except Exception:
            p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=4, help="listener processes")
    ap.add_argument("--ports-per-host", type=int, default=25, help="listeners per 127.x address")
    ap.add_argument("--sequential", action="store_true", help="nmap's one-probe-at-a-time order")
    ap.add_argument("--db", default=None, help="probe file (default: nmap's, else bundled)")
    ap.add_argument("--timing", type=int, default=3)
    ap.add_argument(
        "--nmap", type=int, default=0, metavar="HOSTS",
        help="also time nmap -sV (and us) on the listeners of the first HOSTS addresses "
        "(25 services each; nmap needs ~2.5 min per silent port batch)",
    )
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args.serve)
        return

    import servprobe
    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.net.driver import new_event_loop, raise_nofile_limit, run_service_scan

    raise_nofile_limit()
    layout = plan(args.services, args.workers, args.ports_per_host)
    procs = []
    try:
        for index in range(len(layout)):
            payload = json.dumps([args.services, args.workers, args.ports_per_host, index])
            p = subprocess.Popen(
                [sys.executable, __file__, "--serve", payload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            procs.append(p)
        for p in procs:
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                raise SystemExit(f"listener process failed to start: {line!r}")

        t_load = time.monotonic()
        db = servprobe.load_db(args.db)
        # warm the patterns this mix needs so the scan measures the engine, not lazy compiles
        db.match("NULL", SSH)
        db.match("GetRequest", HTTP_OK)
        db.match("GenericLines", HTTP_BAD)
        load_s = time.monotonic() - t_load

        kinds = {(a, p): k for specs in layout for a, p, k in specs}
        # index order: consecutive targets go to different addresses and listener processes
        order = [layout[i % args.workers][i // args.workers] for i in range(args.services)]
        targets = [ServiceTarget(a, p, "tcp") for a, p, _ in order]
        opts = EngineOptions(sequential=args.sequential, rpc_grind=False, timing=args.timing)
        results = []
        done_at: list[float] = []

        def on_result(r) -> None:
            results.append(r)
            done_at.append(time.monotonic() - t0)

        t0 = time.monotonic()
        loop = new_event_loop()
        try:
            loop.run_until_complete(run_service_scan(db, targets, opts, on_result))
        finally:
            loop.close()
        wall = time.monotonic() - t0
        nmap_cmp = compare_nmap(db, layout[0], args) if args.nmap else None
    finally:
        stop_listeners(procs)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = Counter()
    total = Counter()
    for r in results:
        k = kinds[(r.address, r.port)]
        total[k] += 1
        ok[k] += expected(k, r)
    print(f"database: {db.path} (load + warm-up {load_s:.1f} s)")
    print(f"mode: {'sequential (nmap order, one probe at a time)' if args.sequential else 'speculative (default)'}")
    print(f"services: {len(results)} of {len(targets)} in {wall:.1f} s = {len(results) / wall:.0f} services/s")
    print(f"peak RSS (scanner process): {rss_mb:.0f} MB")
    for k in KINDS:
        print(f"  {k:7s} {ok[k]}/{total[k]} identified as expected")
    for frac in (0.25, 0.5, 0.75, 0.9, 1.0):
        i = max(0, int(len(done_at) * frac) - 1)
        print(f"  {int(frac * 100):3d}% of services done after {sorted(done_at)[i]:.1f} s")
    if nmap_cmp is not None:
        n, ours_s, nmap_s = nmap_cmp
        print(f"nmap comparison on {n} services: servprobe {ours_s:.1f} s, nmap -sV {nmap_s:.1f} s, ratio {nmap_s / ours_s:.1f}x")
    elif shutil.which("nmap"):
        print("(nmap comparison: --nmap 2 times nmap -sV and us on 50 of these services)")
    goal = wall <= 60 and rss_mb <= 1024 and len(results) == len(targets)
    print(f"goal (<= 60 s, <= 1 GB, every service reported): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
