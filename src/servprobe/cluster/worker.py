"""What a Dask worker runs for one shard: the normal port scan + service scan on its hosts.

`run_shard(shard, job, db_bytes)` runs servprobe.scan.runner's ScanRunner on the shard's
hosts and ports only (a worker sends traffic to nothing else) and returns, per host, the raw
findings instead of a finished report: the port states (closed/filtered ones as 2-byte port
arrays, as HostPorts keeps them), the identified services and the host's status. The client
merges the shards of one host and reports it once, with the runner's own collapsing rules.

The probe database travels as the client's file bytes with their sha256 (Dask moves them to
each worker once); it is parsed once per worker process and cached by that hash, so every
worker matches with exactly the client's database whatever is installed on its machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import threading
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from servprobe.cluster.shards import Shard
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.report.base import Outputs
from servprobe.result import ScanRun, ServiceResult
from servprobe.scan.ports import PortSelection
from servprobe.scan.runner import RunConfig, ScanRunner, _Host
from servprobe.scan.targets import HostTarget


class ShardError(RuntimeError):
    """A shard that cannot run on this worker (e.g. the database bytes do not match)."""


@dataclass
class Job:
    """What every shard of one scan shares (sent with each task; small)."""

    config: RunConfig  # ports are replaced by each shard's slice
    options: EngineOptions | None  # None: no service scan (--no-sV, -sn, -sL)
    db_name: str = ""  # the client's path of the database, as results name it (FILE:LINE)
    db_sha256: str = ""


@dataclass
class RawHost:
    """One host's findings from one shard, before merging and collapsing."""

    address: str
    hostname: str | None
    family: int
    status: str
    reason: str
    latency: float | None
    hostnames: list[str]
    hostname_types: list[str]
    starttime: float | None
    timedout: bool
    partial: bool
    notable: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    bulk: dict[tuple[str, str, str], array[int]] = field(default_factory=dict)
    services: list[ServiceResult] = field(default_factory=list)
    ports_seen: int = 0


@dataclass
class ShardResult:
    shard_id: int
    hosts: list[RawHost]
    worker_pid: int
    seconds: float
    peak_rss_kib: int


_DBS: dict[str, Any] = {}
_DB_LOCK = threading.Lock()


def worker_db(name: str, sha256: str, data: bytes) -> Any:
    """The database with this hash, parsed once per worker process."""
    with _DB_LOCK:
        db = _DBS.get(sha256)
        if db is None:
            if hashlib.sha256(data).hexdigest() != sha256:
                raise ShardError("probe database bytes do not match their sha256")
            from servprobe.probes.loader import make_prefilter, parse_checked
            from servprobe.probes.matcher import Matcher

            # as servprobe.load_db, from the client's bytes; named by the client's path so
            # results say the same FILE:LINE as a local scan
            db, errors, _ = parse_checked(data, name, use_cache=True, full=False)
            db.errors = errors
            db.matcher = Matcher(db, prefilter=make_prefilter(db, None))
            _DBS[sha256] = db
        return db


class _ShardHosts:
    """The shard's hosts, shaped like the TargetList ScanRunner iterates."""

    def __init__(self, hosts: tuple[HostTarget, ...]) -> None:
        self.hosts = hosts

    def count(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[HostTarget]:
        return iter(self.hosts)


class _ShardRunner(ScanRunner):
    """A ScanRunner that hands each finished host back raw instead of reporting it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw: list[RawHost] = []

    def _finish_host(self, host: _Host) -> None:
        if not host.reported:
            r = host.result
            self.raw.append(RawHost(
                address=host.target.address, hostname=host.target.hostname,
                family=host.target.family, status=r.status, reason=r.reason,
                latency=r.latency, hostnames=list(r.hostnames),
                hostname_types=list(r.hostname_types), starttime=r.starttime,
                timedout=r.timedout, partial=r.partial,
                notable=dict(host.ports.notable), bulk=dict(host.ports.bulk),
                services=list(host.services.values()), ports_seen=len(host.ports),
            ))
        # the runner's own bookkeeping; its report goes to this shard's empty Outputs
        super()._finish_host(host)


def _engine(db: Any, options: EngineOptions) -> Callable[
    [AsyncIterator[ServiceTarget], Callable[[ServiceResult], None]], Any
]:
    from servprobe.net.driver import run_service_scan

    async def scan(targets: AsyncIterator[ServiceTarget], on_result: Callable[[ServiceResult], None]) -> None:
        await run_service_scan(db, targets, options, on_result)

    return scan


_LOOP: Any = None
_LOOP_LOCK = threading.Lock()


def worker_loop() -> asyncio.AbstractEventLoop:
    """This worker process's one event loop, in its own thread, shared by every shard.

    Dask runs several tasks at once per worker (its threads); giving each its own event loop
    would make them fight over the GIL, while one loop lets a shard's quiet tail (silent
    ports waiting out their probes) overlap the next shard's work at no cost.
    """
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed():
            from servprobe.net.driver import raise_nofile_limit
            from servprobe.net.loop import new_event_loop

            raise_nofile_limit()
            loop = new_event_loop()
            threading.Thread(target=loop.run_forever, name="servprobe-shards", daemon=True).start()
            _LOOP = loop
        return _LOOP  # type: ignore[no-any-return]


def run_shard(shard: Shard, job: Job, db_bytes: bytes | None) -> ShardResult:
    """The Dask task: scan one shard on this worker process's event loop."""
    t0 = time.monotonic()
    engine = None
    if job.options is not None:
        if db_bytes is None:
            raise ShardError("service scan asked without a probe database")
        engine = _engine(worker_db(job.db_name, job.db_sha256, db_bytes), job.options)
    config = replace(job.config, ports=PortSelection({k: list(v) for k, v in shard.ports.items()}))

    async def scan() -> list[RawHost]:
        runner = _ShardRunner(_ShardHosts(shard.hosts), config, Outputs(),
                              ScanRun(args=[], start=time.time()), engine)  # type: ignore[arg-type]
        await runner.execute()
        return runner.raw

    raw = asyncio.run_coroutine_threadsafe(scan(), worker_loop()).result()
    return ShardResult(
        shard.id, raw, os.getpid(), time.monotonic() - t0,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
