"""Matching speed over nmap's full database, and cold start of `servprobe db check`.

Run: .venv/bin/python bench/bench_match.py [DB]     (default: nmap's installed file)

Inputs: every response of tests/data/responses and tests/data/captures, matched as an answer
to NULL and to GetRequest (so the whole chain: GetRequest's lines, then NULL's), warm (every
pattern the inputs touch compiled first). Prints median and p99 µs per response with and
without the hyperscan prefilter; then the wall time of `servprobe db check` in a fresh
process with a warm cache (median of 5). Targets: ≤ 10 µs median with the prefilter; cold
start ≤ 0.5 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from servprobe.probes.corpus import read_corpus  # noqa: E402
from servprobe.probes.loader import load_db  # noqa: E402
from servprobe.probes.matcher import Matcher  # noqa: E402

CORPUS = [ROOT / "tests" / "data" / "responses", ROOT / "tests" / "data" / "captures"]


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def time_matches(matcher: Matcher, probe, inputs: list[bytes], rounds: int) -> list[float]:
    for data in inputs:  # warm: compile what these inputs touch, load prefilter dbs
        matcher.find(probe, data)
    per: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for data in inputs:
            t = clock()
            matcher.find(probe, data)
            per.append((clock() - t) / 1000)
    return per


def cold_start(db_path: str) -> float:
    cmd = [sys.executable, "-m", "servprobe", "db", "check", db_path]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    subprocess.run(cmd, capture_output=True, env=env, check=False)  # warm the cache
    times = []
    for _ in range(5):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - t)
        if proc.returncode not in (0, 1):
            raise RuntimeError(proc.stderr.decode(errors="replace"))
    return statistics.median(times)


def main() -> None:
    db_path = sys.argv[1] if len(sys.argv) > 1 else "nmap"
    inputs = [r.data for r in read_corpus(CORPUS)]
    if not inputs:
        print("no corpus found under tests/data/")
        return
    db = load_db(db_path, prefilter=None)
    lines = sum(len(p.matches) for p in db.probes)
    print(f"database {db.path}: {len(db.probes)} probes, {lines} lines; {len(inputs)} responses")
    variants = [("regex only", Matcher(db))]
    if db.matcher.prefilter is not None:
        db.matcher.prefilter.build_all()  # from the cache, or compiled now (~25 s once)
        variants.append(("hyperscan prefilter", db.matcher))
    else:
        print("(hyperscan not available: prefilter figures skipped)")
    print(f"{'probe':<12} {'matcher':<20} {'median µs':>10} {'p99 µs':>10} {'mean µs':>10}")
    for name in ("NULL", "GetRequest"):
        probe = db.probe(name, "tcp")
        for label, matcher in variants:
            rounds = 3 if matcher.prefilter is None else 20
            per = time_matches(matcher, probe, inputs, rounds)
            print(
                f"{name:<12} {label:<20} {statistics.median(per):>10.1f} "
                f"{_percentile(per, 0.99):>10.1f} {statistics.fmean(per):>10.1f}"
            )
    cs = cold_start(str(db.path))
    verdict = "ok" if cs <= 0.5 else "over target"
    print(f"cold start `servprobe db check` (warm cache): {cs:.3f} s  [target ≤ 0.5 s: {verdict}]")


if __name__ == "__main__":
    main()
