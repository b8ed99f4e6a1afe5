"""--cluster at scale: 10,000 loopback services over 127.0.0.0/8, locally and on Dask.

    .venv/bin/python bench/bench_cluster.py [--services 10000] [--clusters local:1,local:2]

The listeners are bench_engine_scale's (banner / http / silent mix, 25 ports per 127.w.x.y
address, served by helper processes). The same CLI scan (`-sV -Pn -n -p 20000-20024
127.1-4.0.1-100 --no-store`) runs locally, then with each --cluster; printed per run:
services/s, wall time, peak RSS of the client process and of each worker process, the
scaling efficiency against local:1 (rate(N) / (N x rate(1))), and the fixed cost of the
cluster path on a small scan (3 ports of one address). Traffic goes to 127.0.0.0/8 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import bench_engine_scale as scale  # noqa: E402  (the listener processes)


def run_cli(argv: list[str]) -> tuple[int, float, int, str, str]:
    """(status, seconds, peak RSS KiB of the client process, stdout, stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "servprobe", *argv], stdout=out, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        secs = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, secs, ru.ru_maxrss, out.read().decode(errors="replace"),
                err.read().decode(errors="replace"))


def count_services(jsonl: Path) -> int:
    n = 0
    for line in jsonl.read_text().splitlines():
        rec = json.loads(line)
        if "port" in rec and rec.get("state") == "open":
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=4, help="listener processes")
    ap.add_argument("--clusters", default="local:1,local:2", help="comma-separated --cluster values")
    ap.add_argument("--db", default=None)
    ap.add_argument("--shard-size", default=None, help="passed to --cluster runs")
    ap.add_argument("--no-local", action="store_true", help="skip the local scan")
    args = ap.parse_args()

    per_host = 25
    layout = scale.plan(args.services, args.workers, per_host)
    hosts_per_worker = -(-len(layout[0]) // per_host)
    targets = f"127.1-{args.workers}.{0}-{(hosts_per_worker - 1) // 250}.1-{min(250, hosts_per_worker)}"
    ports = f"{20000}-{20000 + per_host - 1}"
    procs = []
    results: list[tuple[str, float, int, int, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for index in range(len(layout)):
                payload = json.dumps([args.services, args.workers, per_host, index])
                p = subprocess.Popen(
                    [sys.executable, str(HERE / "bench_engine_scale.py"), "--serve", payload],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                procs.append(p)
            for p in procs:
                line = p.stdout.readline() if p.stdout else ""
                if line.strip() != "ready":
                    raise SystemExit(f"listener process failed to start: {line!r}")
            base = ["-sV", "-Pn", "-n", "-p", ports, targets, "--no-store", "--no-progress", "-v"]
            if args.db:
                base += ["--db", args.db]
            modes = [] if args.no_local else ["local"]
            for mode in [*modes, *[c for c in args.clusters.split(",") if c]]:
                out = Path(tmp) / f"{mode.replace(':', '-')}.jsonl"
                argv = [*base, "-oJ", str(out), "-oN", os.devnull]
                if mode != "local":
                    argv += ["--cluster", mode]
                    if args.shard_size:
                        argv += ["--shard-size", args.shard_size]
                code, secs, rss, _, err = run_cli(argv)
                if code != 0:
                    raise SystemExit(f"{mode}: exit {code}\n{err[-2000:]}")
                m = re.search(r"peak RSS MB: client (\d+), workers ([0-9, -]+)", err)
                workers = m.group(2).strip() if m else "-"
                if m:  # wait4's figure covers the client's children (a local cluster) too
                    rss = int(m.group(1)) * 1024
                found = count_services(out)
                results.append((mode, secs, rss, found, workers))
                print(f"{mode:9s} {found} services in {secs:6.1f} s = {found / secs:6.0f} services/s; "
                      f"peak RSS client {rss / 1024:.0f} MB, workers {workers} MB", flush=True)
            # the fixed cost of the cluster path: a tiny scan
            small = ["-sV", "-Pn", "-n", "-p", "20000-20002", "127.1.0.1", "--no-store",
                     "--no-progress", "-oN", os.devnull]
            code, local_s, _, _, _ = run_cli(small)
            code2, cl_s, _, _, err = run_cli([*small, "--cluster", "local:1"])
            if code or code2:
                raise SystemExit(f"small scan failed\n{err[-2000:]}")
            print(f"small scan (3 services): local {local_s:.2f} s, --cluster local:1 {cl_s:.2f} s "
                  f"(overhead {cl_s - local_s:.2f} s: starting the local cluster, shipping the db)")
        finally:
            scale.stop_listeners(procs)
    rate = {mode: found / secs for mode, secs, _, found, _ in results}
    one = rate.get("local:1")
    for mode in rate:
        m = re.fullmatch(r"local:(\d+)", mode)
        if m and one:
            n = int(m.group(1))
            print(f"scaling efficiency {mode}: {rate[mode] / (n * one):.2f} "
                  f"({rate[mode] / rate['local']:.2f}x the local scan)")
    print(f"machine: {os.cpu_count()} cores (shared: figures are noisy under other load)")


if __name__ == "__main__":
    main()
