"""Our bundled database against `nmap -sV` on every real daemon the suite starts (issue 13).

Starts the whole set (tests/bundled_daemon_set.py: tests/daemons.py, tests/daemons_post.py
and the Makefile-installed daemons of tests/daemons_capture.py) on 127.0.0.1 (root and
`make apt` needed), scans every endpoint once with `servprobe --db bundled --version-scripts
none` and once with `nmap -sV` (nmap's own database), and prints per endpoint both answers,
whether the service equals nmap's and whether the product equals nmap's, then the two
percentages (goal: ≥ 95% / ≥ 85%) and both wall times.

    python bench/bench_bundled.py [--tcp-only]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import bundled_daemon_set as bset  # tests/bundled_daemon_set.py: the set and the comparison
import daemons


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tcp-only", action="store_true", help="leave the UDP endpoints out")
    args = ap.parse_args()
    t0 = time.monotonic()
    with bset.whole_set() as running:
        pairs = [
            (d, e) for d, e in daemons.endpoints(running) if not args.tcp_only or e.proto == "tcp"
        ]
        print(
            f"{len(running)} daemons, {len(pairs)} endpoints up in {time.monotonic() - t0:.1f} s",
            flush=True,
        )
        t1 = time.monotonic()
        ours = bset.scan_bundled(pairs)
        t_ours = time.monotonic() - t1
        t1 = time.monotonic()
        theirs = bset.scan_nmap(pairs)
        t_nmap = time.monotonic() - t1
        kept = {d.name: d for d, _ in pairs}
        rows = [
            r for r in bset.compare(kept, theirs, ours) if not args.tcp_only or r.proto == "tcp"
        ]
    print(bset.table(rows))
    print(
        f"wall time: servprobe --db bundled {t_ours:.1f} s, nmap -sV {t_nmap:.1f} s "
        f"(ratio {t_ours / t_nmap:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
