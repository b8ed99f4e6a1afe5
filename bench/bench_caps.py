"""Speculation against per-client connection caps (issue 17): time and refused attempts.

Three figures, each the best of --runs servprobe scans (library API, nmap's database, default
engine options except post-processors and RPC grinding off):

  1. the trio of tests/daemons_caps.py (ngircd, sshd, vsftpd) uncapped, then with their caps
     of two connections per client, directly and through the delay proxy at 150 ± 100 ms, and
     `--sequential` with caps for comparison; with caps, how many attempts the daemons
     refused (their logs: ngircd and sshd log each refusal; vsftpd does not) and how many
     outcomes the engine discarded as possible refusals / confirmed as refusals (its
     --version-trace notes, counted on one extra traced run);
  2. the uncapped daemon set of tests/daemons.py (what bench_daemons.py --no-chatty scans),
     against the time measured before the refusal rule (--baseline, default 1.48 s: the best
     of three `python bench/bench_daemons.py --no-version-all --no-chatty --runs 3` at commit
     f6a3282 on this 2-core box); the issue bounds it at +10 %.

    python bench/bench_caps.py [--runs N] [--baseline SECONDS] [--no-set] [--no-trio] [--no-delay]

SERVPROBE_SRC=DIR runs another tree's code, e.g. the baseline itself:
    git archive f6a3282 src | tar -x -C /tmp/base
    SERVPROBE_SRC=/tmp/base/src python bench/bench_caps.py --no-trio
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(
    0, os.environ.get("SERVPROBE_SRC") or str(Path(__file__).resolve().parent.parent / "src")
)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import daemons  # tests/daemons.py: the daemon set
import daemons_caps  # tests/daemons_caps.py: the capped trio
import servprobe
from delayproxy import DelayProxies
from servprobe.engine.options import EngineOptions, ServiceTarget

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
BASELINE = 1.48  # seconds, see the module docstring


def opts(**kw) -> EngineOptions:
    return EngineOptions(rpc_grind=False, version_scripts="none", **kw)


def idle(running: dict) -> None:
    for d in running.values():
        daemons_caps.wait_idle(d.port)


def best(
    db, running: dict, targets: list[ServiceTarget], options: EngineOptions, runs: int
) -> tuple[float, list]:
    walls, results = [], []
    for _ in range(runs):
        idle(running)
        t0 = time.monotonic()
        results = daemons.servprobe_scan(db, targets, options, 900.0)
        walls.append(time.monotonic() - t0)
    return min(walls), results


def traced_counts(db, running: dict, targets: list[ServiceTarget]) -> tuple[int, int]:
    """(outcomes discarded as possible refusals, refusals confirmed) in one traced run."""
    lines: list[str] = []
    from servprobe.net.driver import new_event_loop, run_service_scan

    idle(running)
    loop = new_event_loop()
    try:
        loop.run_until_complete(
            run_service_scan(
                db, targets, opts(version_trace=True), lambda r: None, trace=lines.append
            )
        )
    finally:
        loop.close()
    return (sum("outcome discarded" in x for x in lines), sum("was a refusal" in x for x in lines))


def show(results: list) -> str:
    return "; ".join(f"{r.display_service()} {r.display_version()}".strip() for r in results)


def trio(db, runs: int, delay: bool) -> None:
    print("## the capped trio (ngircd, sshd, vsftpd; cap 2 per client)")
    with daemons_caps.capped_daemons(None) as free:
        targets = [ServiceTarget("127.0.0.1", d.port, "tcp") for d in free.values()]
        wall, res = best(db, free, targets, opts(), runs)
        print(f"uncapped, loopback:            {wall:7.2f} s   {show(res)}")
    with daemons_caps.capped_daemons() as capped:
        targets = [ServiceTarget("127.0.0.1", d.port, "tcp") for d in capped.values()]
        before = {n: daemons_caps.refusals(d) or 0 for n, d in capped.items()}
        wall, res = best(db, capped, targets, opts(), runs)
        logged = {n: (daemons_caps.refusals(d) or 0) - before[n] for n, d in capped.items()}
        print(f"capped, loopback:              {wall:7.2f} s   {show(res)}")
        print(
            f"  refused by the daemons in {runs} runs (their logs): ngircd {logged['ngircd']}, "
            f"sshd {logged['sshd']}, vsftpd (not logged)"
        )
        discarded, confirmed = traced_counts(db, capped, targets)
        print(
            f"  one traced run: {discarded} outcomes discarded as possible refusals, "
            f"{confirmed} confirmed refusals"
        )
        if delay:
            with DelayProxies(base=0.15, jitter=0.1, seed=5) as px:
                front = [ServiceTarget("127.0.0.1", px.add(t.port), "tcp") for t in targets]
                before = {n: daemons_caps.refusals(d) or 0 for n, d in capped.items()}
                wall, res = best(db, capped, front, opts(), runs)
                logged = {n: (daemons_caps.refusals(d) or 0) - before[n] for n, d in capped.items()}
                print(f"capped, 150 +- 100 ms:         {wall:7.2f} s   {show(res)}")
                print(
                    f"  refused by the daemons in {runs} runs: ngircd {logged['ngircd']}, "
                    f"sshd {logged['sshd']}"
                )
        wall, res = best(db, capped, targets, opts(sequential=True), 1)
        print(f"capped, --sequential loopback: {wall:7.2f} s   {show(res)}")


def daemon_set(db, runs: int, baseline: float) -> None:
    print("\n## the uncapped daemon set (tests/daemons.py, TCP)")
    with daemons.all_daemons() as running:
        targets = [
            ServiceTarget(d.host, e.port, e.proto)
            for d, e in daemons.endpoints(running)
            if e.proto == "tcp"
        ]
        walls = []
        for _ in range(runs):
            t0 = time.monotonic()
            daemons.servprobe_scan(db, targets, EngineOptions(), 900.0)
            walls.append(time.monotonic() - t0)
        wall = min(walls)
        print(f"servprobe: {wall:6.2f} s  (runs: {', '.join(f'{w:.2f}' for w in walls)})")
        print(
            f"before the refusal rule: {baseline:.2f} s; ratio {wall / baseline:.3f} "
            f"(issue bound: <= 1.10)"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=float, default=BASELINE)
    ap.add_argument("--no-set", action="store_true", help="skip the uncapped daemon set")
    ap.add_argument("--no-trio", action="store_true", help="skip the capped trio")
    ap.add_argument("--no-delay", action="store_true", help="skip the 150 +- 100 ms path")
    args = ap.parse_args()
    db = servprobe.load_db(str(NMAP_DB) if NMAP_DB.exists() else None)
    print(f"servprobe from {servprobe.__file__}")
    if not args.no_trio:
        trio(db, max(1, args.runs), not args.no_delay)
    if not args.no_set:
        daemon_set(db, max(1, args.runs), args.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
