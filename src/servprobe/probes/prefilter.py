"""Optional hyperscan prefilter: which of a probe's lines could match a response.

One block-mode hyperscan database per probe, every line compiled with HS_FLAG_PREFILTER
(hyperscan may widen a pattern, never narrow it: lookarounds and back-references are
approximated), SINGLEMATCH and ALLOWEMPTY, plus CASELESS/DOTALL from the line's options. A
scan returns candidate line indexes; the matcher confirms them with `regex` in file order, so
results are identical with and without the prefilter. Lines hyperscan rejects even in
prefilter mode (and lines with a raw NUL byte, which its C API cannot take) are always
candidates.

Compiling takes seconds per large probe (NULL ≈ 7 s), so each probe's database is built on
first use and serialized to the user cache dir, keyed by the file's sha256, hyperscan's
version and our format version; `build_all()` warms the whole cache (`servprobe db check`).
With `background=True` (what `load_db()` uses by default) an uncached probe is compiled by a
worker thread while the matcher goes on without the prefilter for that probe.
Scanning is not thread-safe in hyperscan (one scratch); a lock serializes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servprobe.probes.cache import cache_dir

if TYPE_CHECKING:
    from servprobe.probes.model import MatchLine, Probe, ProbeDB

FORMAT_VERSION = 1

try:
    import hyperscan as _hs
except Exception:  # not installed, or no CPU support (non-x86)
    _hs = None


def available() -> bool:
    return _hs is not None


def hs_version() -> str:
    if _hs is None:
        return "none"
    return f"{getattr(_hs, '__version__', '?')}"


def _flags(line: MatchLine) -> int:
    assert _hs is not None
    f = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
    if "i" in line.flags:
        f |= _hs.HS_FLAG_CASELESS
    if "s" in line.flags:
        f |= _hs.HS_FLAG_DOTALL
    return f


def _compile(exprs: list[bytes], ids: list[int], flags: list[int]) -> tuple[Any, list[int]]:
    """Compile; returns (database or None, ids hyperscan rejected). Bisects on errors."""
    assert _hs is not None
    if not ids:
        return None, []
    try:
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        db.compile(expressions=exprs, ids=ids, elements=len(ids), flags=flags)
        return db, []
    except _hs.error:
        if len(ids) == 1:
            return None, list(ids)
    half = len(ids) // 2
    _, bad1 = _compile(exprs[:half], ids[:half], flags[:half])
    _, bad2 = _compile(exprs[half:], ids[half:], flags[half:])
    rejected = set(bad1 + bad2)
    keep = [k for k, i in enumerate(ids) if i not in rejected]
    db, more = _compile([exprs[k] for k in keep], [ids[k] for k in keep], [flags[k] for k in keep])
    return db, sorted(rejected | set(more))


class _ProbeFilter:
    __slots__ = ("always", "db", "scratch")

    def __init__(self, db: Any, always: list[int]) -> None:
        assert _hs is not None
        self.db = db
        self.always = always
        self.scratch = _hs.Scratch(db) if db is not None else None
        if db is not None:
            db.scratch = self.scratch


class HyperscanPrefilter:
    """Candidate lines per probe; `candidates(probe, data)` → sorted line indexes."""

    def __init__(
        self, db: ProbeDB, cache: Path | bool | None = True, *, background: bool = False
    ) -> None:
        if _hs is None:
            raise RuntimeError("hyperscan is not available")
        self.db = db
        if cache is True:
            self.cache = cache_dir()
        else:
            self.cache = cache or None
        self._filters: dict[Probe, _ProbeFilter] = {}
        self._lock = threading.Lock()  # one hyperscan scratch: one scan at a time
        self._build_lock = threading.Lock()
        self.compile_seconds = 0.0
        # background: a probe whose database is not cached is compiled by a worker thread
        # (hyperscan releases the GIL while compiling) and, meanwhile, candidates() returns
        # None so the matcher uses its own index: same results, no multi-second stall
        self.background = background
        self._queue: queue.Queue[Probe] = queue.Queue()
        self._scheduled: set[Probe] = set()
        self._worker: threading.Thread | None = None

    # --- building ------------------------------------------------------------------------
    def _cache_file(self, probe: Probe) -> Path | None:
        if self.cache is None:
            return None
        key = hashlib.sha256(f"{probe.proto}/{probe.name}".encode()).hexdigest()[:16]
        return self.cache / f"hs-{self.db.sha256[:32]}-{hs_version()}-f{FORMAT_VERSION}-{key}.db"

    def _load(self, probe: Probe) -> _ProbeFilter | None:
        assert _hs is not None
        path = self._cache_file(probe)
        if path is None:
            return None
        try:
            blob = path.read_bytes()
            head, _, body = blob.partition(b"\n")
            meta = json.loads(head)
            if meta.get("lines") != len(probe.matches):
                return None
            db = _hs.loadb(body, _hs.HS_MODE_BLOCK) if body else None
            return _ProbeFilter(db, [int(i) for i in meta["always"]])
        except Exception:  # missing, truncated or from another build: rebuild
            return None

    def _store(self, probe: Probe, db: Any, always: list[int]) -> None:
        assert _hs is not None
        path = self._cache_file(probe)
        if path is None:
            return
        head = json.dumps({"lines": len(probe.matches), "always": always}).encode()
        body = _hs.dumpb(db) if db is not None else b""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(OSError):
            tmp.write_bytes(head + b"\n" + body)
            os.replace(tmp, path)

    def _build(self, probe: Probe) -> _ProbeFilter:
        import time

        t0 = time.perf_counter()
        exprs, ids, flags, always = [], [], [], []
        for i, line in enumerate(probe.matches):
            if b"\x00" in line.pattern:
                always.append(i)
                continue
            exprs.append(line.pattern)
            ids.append(i)
            flags.append(_flags(line))
        db, rejected = _compile(exprs, ids, flags)
        always = sorted(always + rejected)
        self._store(probe, db, always)
        self.compile_seconds += time.perf_counter() - t0
        return _ProbeFilter(db, always)

    def filter_for(self, probe: Probe, *, wait: bool | None = None) -> _ProbeFilter | None:
        """The probe's filter; None while a background build is under way (wait=False)."""
        key = probe  # Probe hashes by identity (eq=False): cheaper than a tuple
        f = self._filters.get(key)
        if f is not None:
            return f
        wait = not self.background if wait is None else wait
        with self._build_lock:
            f = self._filters.get(key)
            if f is None:
                f = self._load(probe)
                if f is None and not wait:
                    self._schedule(key, probe)
                    return None
                if f is None:
                    f = self._build(probe)
                self._filters[key] = f
        return f

    def _schedule(self, key: Probe, probe: Probe) -> None:
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        self._queue.put(probe)
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name="servprobe-hyperscan-build", daemon=True
            )
            self._worker.start()

    def _work(self) -> None:
        while True:
            probe = self._queue.get()
            key = probe  # Probe hashes by identity (eq=False): cheaper than a tuple
            if key not in self._filters:
                try:
                    f = self._build(probe)
                except Exception:  # leave this probe to the matcher's own index
                    continue
                self._filters[key] = f

    def build_all(self, progress: Callable[[Probe], None] | None = None) -> None:
        """Load or build every probe's filter now (fills the cache)."""
        for probe in self.db.probes:
            if progress:
                progress(probe)
            self.filter_for(probe, wait=True)

    def cached(self, probe: Probe) -> bool:
        path = self._cache_file(probe)
        return path is not None and path.exists()

    # --- scanning ------------------------------------------------------------------------
    def candidates(self, probe: Probe, data: bytes) -> list[int] | None:
        """Sorted indexes of the lines that may match; None: no filter yet (try them all)."""
        f = self._filters.get(probe) or self.filter_for(probe)
        if f is None:
            return None
        hits: list[int] = []
        if f.db is not None:
            with self._lock:
                # positional (match_event_handler, flags, context): keywords cost ~2 µs here
                f.db.scan(data, _collect, 0, hits)
        if f.always:
            return sorted(set(hits).union(f.always))
        hits.sort()
        return hits


def _collect(ident: int, start: int, end: int, flags: int, ctx: list[int]) -> None:
    ctx.append(ident)
