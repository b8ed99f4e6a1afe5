"""`db.match` speed over nmap's whole database on ~2,000 real banners, and first-use cost.

Run: .venv/bin/python bench/bench_match.py [DB]     (default: nmap's installed file)

Banners: every response of tests/data/examples (the bundled database's example answers),
tests/data/captures (real daemons) and tests/data/responses (hand-written odd ones), each
matched as the answer to the probe it was sent for, plus variants derived from them (every
version-like number changed, so the set is ~2,000 distinct responses with the same shapes).
No other fingerprint collection is used.

Figures (issue 11 targets):
  - first use: a fresh `load_db()` matching every banner once — the patterns it needs are
    compiled then (regex compile + hyperscan/prefilter set-up); target ≤ 0.3 s;
  - warm: `db.match(probe, data, proto)` end to end (matcher + building the
    Identification), median and p99 µs per call; target ≤ 10 µs median;
  - cold start of `servprobe db check` in a fresh process with a warm cache (median of 5).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from servprobe.probes.corpus import read_corpus  # noqa: E402
from servprobe.probes.examples import read_examples  # noqa: E402
from servprobe.probes.loader import load_db  # noqa: E402

CORPUS = [ROOT / "tests" / "data" / "responses", ROOT / "tests" / "data" / "captures"]
EXAMPLES = ROOT / "tests" / "data" / "examples"
TARGET_BANNERS = 2000
_NUMBER = re.compile(rb"\d+(?:\.\d+)+|\d{2,}")


def _variant(data: bytes, k: int) -> bytes:
    """The same response with every version-like number changed (k-th variant)."""

    def bump(m: re.Match[bytes]) -> bytes:
        parts = m.group().split(b".")
        return b".".join(str((int(p) + k * (i + 1)) % (10 ** max(len(p), 1))).encode() for i, p in enumerate(parts))

    return _NUMBER.sub(bump, data)


def banners() -> list[tuple[str, str, bytes]]:
    """(probe, proto, response): the real banners, then derived variants up to ~2,000."""
    base: list[tuple[str, str, bytes]] = []
    for r in read_corpus(CORPUS):
        base.append((r.probe, r.proto, r.data))
    for ex in read_examples(EXAMPLES):
        base.append((ex.probe, ex.proto, ex.response))
    seen = {b[2] for b in base}
    out = list(base)
    k = 1
    while len(out) < TARGET_BANNERS and k < 50:
        for probe, proto, data in base:
            v = _variant(data, k)
            if v not in seen:
                seen.add(v)
                out.append((probe, proto, v))
                if len(out) >= TARGET_BANNERS:
                    break
        k += 1
    for probe, proto, data in base:  # a response still arriving: nmap matches every prefix
        if len(out) >= TARGET_BANNERS:
            break
        half = data[: len(data) // 2]
        if len(half) >= 8 and half not in seen:
            seen.add(half)
            out.append((probe, proto, half))
    return out


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def usable(db, items: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
    out = []
    for probe, proto, data in items:
        try:
            db.probe(probe, proto)
        except KeyError:
            continue
        out.append((probe, proto, data))
    return out


def first_use(db_path: str, items: list[tuple[str, str, bytes]]) -> tuple[float, float]:
    """(load s, first pass s): a fresh database, every banner matched once."""
    t = time.perf_counter()
    db = load_db(db_path)
    load = time.perf_counter() - t
    t = time.perf_counter()
    for probe, proto, data in items:
        db.match(probe, data, proto)
    return load, time.perf_counter() - t


def warm(db, items: list[tuple[str, str, bytes]], rounds: int = 7) -> list[list[float]]:
    """Per-call µs of db.match over every banner, `rounds` times (one list per round)."""
    for probe, proto, data in items:
        db.match(probe, data, proto)
    out: list[list[float]] = []
    clock = time.perf_counter_ns
    match = db.match
    for _ in range(rounds):
        per: list[float] = []
        for probe, proto, data in items:
            t = clock()
            match(probe, data, proto)
            per.append((clock() - t) / 1000)
        out.append(per)
    return out


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
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    db_path = args[0] if args else "nmap"
    db = load_db(db_path)
    items = usable(db, banners())
    lines = sum(len(p.matches) for p in db.probes)
    matched = sum(1 for probe, proto, data in items if db.match(probe, data, proto) is not None)
    print(f"database {db.path}: {len(db.probes)} probes, {lines} lines")
    print(f"banners: {len(items)} ({len({p for p, _, _ in items})} probes), {matched} identified")
    load, first = first_use(db_path, items)
    verdict = "ok" if first <= 0.3 else "over target"
    print(f"first use: load {load:.3f} s, first pass over every banner {first:.3f} s  [target ≤ 0.3 s: {verdict}]")
    rounds = warm(db, items)
    per = [v for r in rounds for v in r]
    best = min(statistics.median(r) for r in rounds)  # the least disturbed round (shared CPUs)
    verdict = "ok" if best <= 10 else "over target"
    print(f"db.match warm: median {best:.1f} µs (best of {len(rounds)} rounds; all rounds "
          f"{statistics.median(per):.1f}), p99 {_percentile(per, 0.99):.1f} µs, "
          f"mean {statistics.fmean(per):.1f} µs  [target ≤ 10 µs median: {verdict}]")
    if "--no-cold" not in sys.argv:
        cs = cold_start(str(db.path))
        print(f"cold start `servprobe db check` (warm cache): {cs:.3f} s")


if __name__ == "__main__":
    main()
