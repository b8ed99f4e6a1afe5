"""Time the post-processors (servprobe.post) add to a scan of the real daemon set.

Starts tests/daemons.py's set plus every daemon of tests/daemons_post.py (rabbitmq-server,
mosquitto, snmpd, slapd, git daemon, smbd, prosody, krb5kdc, varnish, haproxy, xinetd's time,
coturn) on 127.0.0.1 (root and `make apt` needed), then scans every port with servprobe's library
API, nmap's database, alternately with `--version-scripts none` and `all`, and prints the
median wall time of each, the difference (target: ≤ 1 s), and which post-processors ran.
nmap cannot run -sV without its version scripts, so there is no nmap ratio for this figure.

    python bench/bench_post.py [--udp] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import daemons  # tests/daemons.py: the daemon set
import daemons_post  # tests/daemons_post.py: the post-processors' daemons
import servprobe
from servprobe.engine.options import EngineOptions, ServiceTarget


def scan(db: object, targets: list[ServiceTarget], scripts: str) -> tuple[float, list[object]]:
    t0 = time.monotonic()
    results = daemons.servprobe_scan(db, targets, EngineOptions(version_scripts=scripts), 600.0)
    return time.monotonic() - t0, results


def post_only(results: list[object]) -> tuple[float, float]:
    """Post-processors alone on a finished scan's results: (wall time of all in parallel, as
    the driver runs them, and the slowest service's own post-processing time)."""
    import asyncio
    import copy

    from servprobe import post
    from servprobe.net.driver import new_event_loop

    opts = EngineOptions()
    slowest = 0.0

    async def one(r: object) -> None:
        nonlocal slowest
        t0 = time.monotonic()
        await post.refine(copy.deepcopy(r), opts)  # type: ignore[arg-type]
        slowest = max(slowest, time.monotonic() - t0)

    async def every() -> None:
        await asyncio.gather(*(one(r) for r in results))

    loop = new_event_loop()
    try:
        t0 = time.monotonic()
        loop.run_until_complete(every())
        return time.monotonic() - t0, slowest
    finally:
        loop.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--udp", action="store_true", help="also the UDP ports (snmpd, memcached)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    db = servprobe.load_db()
    with contextlib.ExitStack() as stack:
        running = dict(stack.enter_context(daemons.all_daemons()))
        for name in ("rabbitmq", "mosquitto", "snmpd", "slapd", "git_daemon", "smbd", "prosody",
                     "krb5kdc", "varnish", "haproxy", "xinetd_time", "coturn"):
            running[name] = stack.enter_context(getattr(daemons_post, name)())
        targets = [ServiceTarget(d.host, e.port, e.proto) for d, e in daemons.endpoints(running)
                   if args.udp or e.proto == "tcp"]
        print(f"{len(targets)} ports ({sum(t.proto == 'udp' for t in targets)} UDP), "
              f"{args.runs} runs each, database {db.path}")
        times: dict[str, list[float]] = {"none": [], "all": []}
        ran: dict[str, int] = {}
        alone: list[tuple[float, float]] = []
        for _ in range(args.runs):
            for mode in ("none", "all"):
                wall, results = scan(db, targets, mode)
                times[mode].append(wall)
                if mode == "none":
                    alone.append(post_only(results))
                if mode == "all":
                    ran = {}
                    for r in results:
                        for sc in r.scripts:  # type: ignore[attr-defined]
                            ran[sc.id] = ran.get(sc.id, 0) + 1
    none, full = statistics.median(times["none"]), statistics.median(times["all"])
    print(f"--version-scripts none: {none:.2f} s (median; runs {', '.join(f'{t:.2f}' for t in times['none'])})")
    print(f"--version-scripts all:  {full:.2f} s (median; runs {', '.join(f'{t:.2f}' for t in times['all'])})")
    print(f"added by post-processors: {full - none:+.2f} s (target <= 1 s)")
    walls = sorted(a[0] for a in alone)
    print(f"post-processors alone on the finished results: {statistics.median(walls) * 1000:.0f} ms wall "
          f"(all services in parallel), slowest service {max(a[1] for a in alone) * 1000:.0f} ms")
    print("script results: " + ", ".join(f"{k} x{v}" for k, v in sorted(ran.items())))


if __name__ == "__main__":
    main()
