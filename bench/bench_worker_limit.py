"""A worker-limited server through a slow, jittery path: how often speculation keeps its answer.

dnsmasq serves 20 TCP clients at a time (MAX_PROCS) and leaves further connections in its
listen backlog unread. Through 150 ± 100 ms no answer is back when the silent-port window
opens, so its TCP side gets ~30 parallel connections, and the one carrying
DNSVersionBindReqTCP may wait behind 20 silent ones for longer than its own 5 s wait (the
known limit in src/servprobe/engine/speculate.py, "Launching: the window"). This prints, for
--runs proxy seeds, the time and whether the answer equals `--sequential`'s on loopback (the
reference, nmap's order and waits), and the count of runs that lost it.

    python bench/bench_worker_limit.py [--runs N] [--first-seed N] [--base S] [--jitter S]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(
    0, os.environ.get("SERVPROBE_SRC") or str(Path(__file__).resolve().parent.parent / "src")
)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import daemons  # tests/daemons.py: dnsmasq
import servprobe
from delayproxy import DelayProxies
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner

NMAP_DB = "/usr/share/nmap/nmap-service-probes"


def key(r) -> tuple:
    return (r.display_service(), r.display_version(), r.tunnel, r.method, r.conf, r.state)


def front_port(px: DelayProxies, planner: Planner, port: int) -> int:
    """A proxy port whose probe order is the daemon port's own (as tests/test_engine_delay.py)."""
    want = planner.order("tcp", port, False, 7)
    for _ in range(20):
        front = px.add(port, "tcp")
        if planner.order("tcp", front, False, 7) == want:
            return front
    return front


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--base", type=float, default=0.15, help="one-way delay, seconds")
    ap.add_argument("--jitter", type=float, default=0.10, help="± seconds per direction")
    a = ap.parse_args()
    db = servprobe.load_db(NMAP_DB)
    planner = Planner(db)
    opts = EngineOptions(rpc_grind=False, version_scripts="none")
    with daemons.all_daemons(["dnsmasq"]) as running:
        d = running["dnsmasq"]
        port = next(e.port for e in d.endpoints if e.proto == "tcp")
        ref = daemons.servprobe_scan(
            db, [ServiceTarget(d.host, port, "tcp")], dataclasses.replace(opts, sequential=True)
        )[0]
        print(f"dnsmasq {d.version} TCP, --sequential on loopback: {key(ref)}")
        lost = 0
        for seed in range(a.runs):
            with DelayProxies(base=a.base, jitter=a.jitter, seed=a.first_seed + seed) as px:
                target = ServiceTarget(d.host, front_port(px, planner, port), "tcp")
                t0 = time.monotonic()
                got = daemons.servprobe_scan(db, [target], opts)[0]
                same = key(got) == key(ref)
                lost += not same
                print(
                    f"  seed {a.first_seed + seed}: {time.monotonic() - t0:5.1f} s  "
                    f"{got.display_service()} {got.display_version()}  {'same' if same else 'LOST'}",
                    flush=True,
                )
        print(f"{a.base * 1000:.0f} ± {a.jitter * 1000:.0f} ms: answer lost in {lost} of {a.runs} runs")


if __name__ == "__main__":
    main()
