"""Store write throughput: one committed transaction per result (WAL, synchronous=NORMAL).

Run: .venv/bin/python bench/bench_store.py [N]
Prints results/s for per-result commits (what a scan does) and for one batch, to show the
price of crash safety is negligible next to network time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from servprobe.result import ServiceResult
from servprobe.store import Store


def _results(n: int) -> list[ServiceResult]:
    return [
        ServiceResult(f"10.0.{i // 65536 % 256}.{i // 256 % 256}", i % 65535 + 1, "tcp",
                      service="http", product="nginx", version="1.22.1",
                      cpes=["cpe:/a:igor_sysoev:nginx:1.22.1"], method="probed", conf=10)
        for i in range(n)
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rs = _results(n)
    with tempfile.TemporaryDirectory() as tmp:
        with Store.open(Path(tmp) / "a.sqlite") as store:
            sid = store.begin_scan(["bench"], {})
            t = time.perf_counter()
            for r in rs:
                store.record(sid, r)
            per = time.perf_counter() - t
        with Store.open(Path(tmp) / "b.sqlite") as store:
            sid = store.begin_scan(["bench"], {})
            t = time.perf_counter()
            store.record_many(sid, rs)
            batch = time.perf_counter() - t
    print(f"per-result commit: {n / per:,.0f} results/s ({per / n * 1e6:.1f} us each)")
    print(f"single batch:      {n / batch:,.0f} results/s")


if __name__ == "__main__":
    main()
