"""The matcher may be called from a pool of threads (issue 11, bug 10: matching off the loop).

Two properties a driver's match pool relies on:
* one Matcher shared by several threads at once gives PCRE2's first match for every
  response (its lazy caches — compiled patterns, literal prefixes, first-byte buckets,
  fallback chains — are filled by whichever thread gets there first, with the same value);
* a slow search on one thread does not hold the others: `regex` releases the GIL while it
  searches an immutable bytes object, so the other threads keep matching meanwhile.
"""

from __future__ import annotations

import random
import threading
import time

import pcre2
import pytest

from servprobe.probes.loader import load_db
from servprobe.probes.matcher import Matcher
from servprobe.probes.parser import parse_bytes
from test_probes_matcher import NMAP_DB, _key, corpus, generated, pcre_find

THREADS = 4


@pytest.fixture(scope="module")
def db():
    return load_db(NMAP_DB, prefilter=False)


@pytest.fixture(scope="module")
def pcre(db):
    """Every line of the database compiled by PCRE2 itself, from the raw pattern."""
    out = {}
    for p in db.probes:
        for ln in p.matches:
            flags = (pcre2.I if "i" in ln.flags else 0) | (pcre2.S if "s" in ln.flags else 0)
            out[id(ln)] = pcre2.compile(ln.pattern, flags=flags, jit=False)
    return out


def test_shared_matcher_from_threads_equals_pcre2(db, pcre) -> None:
    """A fresh Matcher (empty caches) hammered by 4 threads, each over the whole corpus in its
    own order: every answer is PCRE2's first match in nmap's probe order."""
    base = corpus(db)
    items = base + generated(db, base)
    reference = Matcher(db)  # only used to walk the database for pcre_find
    expected = {
        i: pcre_find(reference, pcre, probe, data) for i, (probe, data, _n) in enumerate(items)
    }
    expected = {i: (_key(*found) if found else None) for i, found in expected.items()}
    # fresh compiled-pattern state: MatchLine.compiled is kept on the lines themselves
    for p in db.probes:
        for ln in p.matches:
            ln.compiled = None
    shared = Matcher(db)
    barrier = threading.Barrier(THREADS)
    diffs: list[tuple[str, object, object]] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        order = list(range(len(items)))
        random.Random(seed).shuffle(order)
        try:
            barrier.wait()
            for i in order:
                probe, data, name = items[i]
                found = shared.find(probe, data)
                got = _key(*found) if found else None
                if got != expected[i]:
                    diffs.append((name, got, expected[i]))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "matcher threads hung"
    assert errors == []
    assert len(items) >= 250
    assert diffs == []


def test_slow_search_does_not_hold_other_threads(db) -> None:
    """While one thread runs a catastrophic-backtracking search (bounded by its 3 s timeout),
    another thread keeps matching real banners.

    Fails (checked) when Matcher.search passes concurrent=False to `regex` (the GIL is then
    held for the whole search: the other thread completes no match until it ends)."""
    slow_db, errors = parse_bytes(b"Probe TCP NULL q||\nmatch slow m/^(a|aa)+$/\n", "slow")
    assert errors == []
    slow = Matcher(slow_db, timeout=3.0)
    slow_probe = slow_db.probe("NULL")
    hostile = b"a" * 40 + b"b"  # about 2^28 backtracking steps: far beyond 3 s

    fast = Matcher(db)
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    null = db.probe("NULL")
    assert fast.find(null, banner) is not None  # warm: compiled before the race

    started = threading.Event()
    span: list[float] = []

    def run_slow() -> None:
        started.set()
        t0 = time.monotonic()
        assert slow.find(slow_probe, hostile) is None  # a timeout counts as no match
        span.append(time.monotonic() - t0)

    thread = threading.Thread(target=run_slow)
    thread.start()
    started.wait(10)
    time.sleep(0.2)  # let the slow search get going
    done_meanwhile = 0
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        assert fast.find(null, banner) is not None
        done_meanwhile += 1
    thread.join(30)
    assert not thread.is_alive()
    assert span and span[0] >= 1.0  # it really was slow (and stopped by its timeout)
    assert slow.timeouts == 1
    assert done_meanwhile >= 100, f"only {done_meanwhile} matches while the slow search ran"
