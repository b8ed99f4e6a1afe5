"""The client side of `--cluster`: hand shards to Dask, stream their results back.

ClusterRunner is a ScanRunner whose pipeline (`_scan_all`) is replaced: instead of scanning,
it cuts the target × port space into shards (servprobe.cluster.shards), submits them with a
bounded number in flight (the client's memory stays flat however big the scan: the next
window of targets is read only when shards free up), and merges each finished shard into the
hosts it covers. Every service result goes to the reporters (and the store) as its shard
returns; a host is reported once, when the last shard naming it is back, by the runner's own
`_finish_host` (nmap's collapsing rules, one <host> per host in XML). Everything else —
start/finish of every output, Ctrl-C, hosts cut short reported as partial — is ScanRunner's.

Faults:
  - a worker dies mid-shard: Dask reruns the shard elsewhere (a dead worker's tasks are
    rescheduled; `retries` covers exceptions); the client sees one result per shard, and a
    host keeps the first result per (proto, port), so nothing is reported twice;
  - a shard failing on every retry: its targets and the error are printed, the scan goes on,
    its hosts stay unfinished (not stored as complete: `--resume` scans them again) and the
    run ends as interrupted with exit status 1;
  - the scheduler gone: a clear message, every result so far kept in the outputs and the
    store, exit status 1; `servprobe --resume STORE` (optionally `--cluster URL|local:N|none`)
    goes on from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import sys
import uuid
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from servprobe.cluster import ClusterError, ClusterSpec
from servprobe.cluster.shards import DEFAULT_WORK, MIN_WORK, Plan, Shard
from servprobe.cluster.worker import Job, RawHost, ShardResult, run_shard
from servprobe.escape import terminal_safe
from servprobe.scan.runner import ScanRunner, _Host
from servprobe.scan.targets import HostTarget

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler
WORKER_WAIT = 60.0  # seconds to wait for a first worker
# shards at once per local worker process. One: measured (bench_cluster.py, 10,000 services)
# one engine per process with all its services beat several engines splitting them (one
# 10,000-service shard 62 s; two of 5,000 at once 164 s; eight at once 183 s).
LOCAL_THREADS = 1
RETRIES = 2  # reruns of a shard that raised (a dead worker's shards are rerun by Dask anyway)


def _say(message: str) -> None:
    print(f"servprobe: {terminal_safe(message)}", file=sys.stderr, flush=True)


def _require_tls_config() -> None:
    """tls:// takes the user's certificates from Dask's security config
    (distributed.comm.tls.* in ~/.config/dask/*.yaml, or DASK_DISTRIBUTED__COMM__TLS__… )."""
    import dask.config

    missing = [key for key in ("ca-file", "client.cert")
               if not dask.config.get(f"distributed.comm.tls.{key}", None)]
    if missing:
        raise ClusterError(
            "tls:// needs your certificates in Dask's security config: set "
            "distributed.comm.tls.ca-file, .client.cert and .client.key (e.g. the variables "
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT, "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY)")


def _identity(data: bytes) -> bytes:
    return data


class ClusterRunner(ScanRunner):
    """A scan run on a Dask cluster; `failure` holds the message when it could not finish."""

    def __init__(
        self,
        *args: Any,
        cluster: ClusterSpec,
        job: Job,
        db_bytes: bytes | None = None,
        shard_work: int | None = None,
        retries: int = RETRIES,
        seed: int | None = None,
        debug: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster
        self.job = job
        self.db_bytes = db_bytes
        self.shard_work = shard_work
        self.retries = retries
        self.seed = seed
        self.debug = debug
        self.failure: str | None = None
        self.failed_shards = 0
        self.shards_done = 0
        self.workers_seen: set[int] = set()  # worker PIDs that returned a shard
        self.peak_rss_kib: dict[int, int] = {}  # by worker PID
        self._remaining: dict[str, int] = {}  # shards still due, by host address
        self._broken: set[str] = set()  # hosts with a shard that failed every retry

    # -- connecting ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        try:
            import distributed
        except ImportError:
            raise ClusterError(
                "--cluster needs Dask distributed: pip install 'servprobe[dask]'") from None
        if not self.debug:
            # Dask logs every lost connection with a traceback: the user gets our messages
            # (handlers too: a child logger's records reach them whatever the parent's level)
            names = [n for n in logging.root.manager.loggerDict
                     if n.split(".")[0] in ("distributed", "tornado")]
            for name in {"distributed", "tornado", *names}:
                logger = logging.getLogger(name)
                logger.setLevel(logging.CRITICAL)
                for handler in logger.handlers:
                    handler.setLevel(logging.CRITICAL)
        cluster = None
        try:
            if self.cluster.local:
                cluster = await distributed.LocalCluster(
                    n_workers=self.cluster.local, threads_per_worker=LOCAL_THREADS, processes=True,
                    asynchronous=True, dashboard_address=None, host="127.0.0.1",
                    silence_logs=logging.DEBUG if self.debug > 1 else logging.CRITICAL,
                )
                client = await distributed.Client(cluster, asynchronous=True)
            else:
                if self.cluster.address and self.cluster.address.startswith("tls://"):
                    _require_tls_config()
                try:
                    client = await distributed.Client(
                        self.cluster.address, asynchronous=True, timeout=CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    raise ClusterError(
                        f"cannot reach the Dask scheduler at {self.cluster.address}: {exc}") from None
        except ClusterError:
            raise
        except Exception as exc:
            if cluster is not None:
                await cluster.close()
            raise ClusterError(f"cannot start the cluster {self.cluster}: {exc}") from None
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cluster.close(), 15)

    def _split_limits(self, threads: int) -> Job:
        """A global --max-parallelism shared out among the worker threads."""
        job = self.job
        opts = job.options
        if opts is not None and opts.max_parallelism:
            per = max(1, opts.max_parallelism // threads)
            portscan = replace(job.config.portscan,
                               concurrency=max(1, min(job.config.portscan.concurrency, per)))
            job = replace(job, options=replace(opts, max_parallelism=per),
                          config=replace(job.config, portscan=portscan))
        return job

    def _work(self, threads: int) -> int:
        if self.shard_work:
            return self.shard_work
        # a small scan: one shard per worker thread, all running at once (shards of equal size
        # end together, so more, smaller shards would only add rounds of their quiet tails)
        total = self.stats.hosts_total * max(1, self.config.ports.total())
        return max(MIN_WORK, min(DEFAULT_WORK, -(-total // max(1, threads))))

    # -- the pipeline -------------------------------------------------------------------------

    async def _scan_all(self) -> None:
        async with self._client() as client:
            try:
                await client.wait_for_workers(1, timeout=WORKER_WAIT)
            except (TimeoutError, OSError) as exc:
                raise ClusterError(
                    f"no Dask worker joined {self.cluster} within {WORKER_WAIT:.0f} s ({exc})") from None
            threads = max(1, sum((await client.nthreads()).values()))
            try:
                await self._drive(client, threads)
            finally:
                if self.run.verbose or self.debug:
                    _say(self.summary(threads))

    def summary(self, threads: int) -> str:
        """One line for -v: shards, workers and each worker process's peak RSS."""
        import resource

        rss = ", ".join(f"{kib / 1024:.0f}" for _, kib in sorted(self.peak_rss_kib.items()))
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return (f"cluster {self.cluster}: {self.shards_done} shards done"
                f"{f', {self.failed_shards} failed' if self.failed_shards else ''} by "
                f"{len(self.workers_seen)} worker processes ({threads} threads); peak RSS MB: "
                f"client {own:.0f}, workers {rss or '-'}")

    async def _drive(self, client: Any, threads: int) -> None:
        from distributed import as_completed

        job = self._split_limits(threads)
        plan = Plan.make(self.config.ports, self._work(threads), self.seed)
        token = uuid.uuid4().hex[:12]
        db_arg = None
        if job.options is not None and self.db_bytes is not None:
            job = replace(job, db_sha256=hashlib.sha256(self.db_bytes).hexdigest())
            # a task, not scattered data: if every worker holding it dies, Dask recomputes it
            db_arg = client.submit(_identity, self.db_bytes, key=f"servprobe-db-{token}",
                                   pure=False, retries=self.retries)
        limit = 2 * threads + 2
        shards = plan.shards(self.targets)
        loop = asyncio.get_running_loop()
        inflight: dict[str, tuple[Any, Shard]] = {}
        pending: list[Shard] = []
        exhausted = False
        ac = as_completed()

        async def top_up() -> None:
            nonlocal exhausted
            while len(inflight) < limit and not exhausted:
                if not pending:
                    # reading targets may resolve names: off the event loop
                    pending.extend(reversed(await loop.run_in_executor(
                        None, lambda: list(itertools.islice(shards, limit)))))
                    if not pending:
                        exhausted = True
                        return
                shard = pending.pop()
                fut = client.submit(run_shard, shard, job, db_arg, pure=False,
                                    key=f"servprobe-shard-{token}-{shard.id}",
                                    retries=self.retries)
                inflight[fut.key] = (fut, shard)
                ac.add(fut)

        try:
            await top_up()
            async for fut in ac:
                _, shard = inflight.pop(fut.key)
                result: ShardResult | None = None
                error: BaseException | None = None
                if fut.status == "finished":
                    try:
                        result = await fut  # fetched from the worker, through the scheduler
                    except Exception as exc:
                        error = exc
                elif fut.status != "cancelled":
                    error = await fut.exception()
                if fut.status == "cancelled" or client.status != "running":
                    # not us (Ctrl-C cancels this task, not the loop): the scheduler went away
                    self._lost_scheduler(fut, len(inflight) + 1)
                    return
                if result is not None:
                    self._merge_shard(shard, result)
                else:
                    self._shard_failed(shard, error)
                await top_up()
        finally:
            if inflight:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.cancel([f for f, _ in inflight.values()], force=True), 5)
            if self.failed_shards:
                self.run.interrupted = True
                self.failure = self.failure or (
                    f"{self.failed_shards} shard(s) failed on every retry (see above); their "
                    "hosts are not complete")

    # -- results ------------------------------------------------------------------------------

    def _merge_shard(self, shard: Shard, res: ShardResult) -> None:
        self.shards_done += 1
        self.workers_seen.add(res.worker_pid)
        self.peak_rss_kib[res.worker_pid] = max(
            self.peak_rss_kib.get(res.worker_pid, 0), res.peak_rss_kib)
        for raw in res.hosts:
            self._merge_host(raw)
        self.stats.ports_done += shard.work if shard.ports else 0
        self._count_down(shard)

    def _count_down(self, shard: Shard) -> None:
        for target in shard.hosts:
            left = self._remaining.get(target.address, shard.chunks) - 1
            if left > 0:
                self._remaining[target.address] = left
                continue
            self._remaining.pop(target.address, None)
            host = self._hosts.get(target.address)
            if host is None or target.address in self._broken:
                continue  # nothing came back, or incomplete: left to the end (partial)
            self._finish_host(host)

    def _merge_host(self, raw: RawHost) -> None:
        host = self._hosts.get(raw.address)
        if host is None:
            host = self._hosts[raw.address] = _Host(HostTarget(raw.address, raw.hostname, raw.family))
            host.result.starttime = raw.starttime
        res = host.result
        if raw.status == "up" and res.status != "up":
            self.stats.hosts_up += 1
        if raw.status == "up" or (raw.status == "down" and res.status == "unknown") or (
            raw.status == res.status and not res.reason
        ):
            if raw.status == "up" and res.status == "up" and res.latency is not None:
                raw_latency = min(res.latency, raw.latency or res.latency)
            else:
                raw_latency = raw.latency
            res.status, res.reason, res.latency = raw.status, raw.reason, raw_latency  # type: ignore[assignment]
        for name, kind in zip(raw.hostnames, raw.hostname_types, strict=False):
            if name not in res.hostnames:
                res.hostnames.append(name)
                res.hostname_types.append(kind)
        if raw.starttime is not None and (res.starttime is None or raw.starttime < res.starttime):
            res.starttime = raw.starttime
        res.timedout = res.timedout or raw.timedout
        res.partial = res.partial or raw.partial
        host.portscan_done = True
        ports = host.ports
        ports.notable.update(raw.notable)
        for key, plist in raw.bulk.items():
            ports.bulk.setdefault(key, array("H")).extend(plist)
        ports._n += raw.ports_seen
        if self.on_discovered is not None:
            for (proto, port), (state, _) in raw.notable.items():
                if state == "open":
                    self.on_discovered(raw.address, proto, port, state)
        for r in raw.services:
            key = (r.proto, r.port)
            if key in host.services:
                continue  # exactly once per (host, proto, port)
            self.stats.services_total += 1
            self.stats.services_done += 1
            host.services[key] = r
            self.outputs.port(r)

    def _shard_failed(self, shard: Shard, exc: BaseException | None) -> None:
        self.failed_shards += 1
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        _say(f"shard {shard.id} ({shard.describe()}) failed after {self.retries} "
             f"retries: {why}; the scan goes on")
        for target in shard.hosts:
            self._broken.add(target.address)
        self.stats.ports_done += shard.work if shard.ports else 0
        self._count_down(shard)

    def _lost_scheduler(self, fut: Any, lost: int) -> None:
        self.run.interrupted = True
        self.failure = (
            f"lost the Dask scheduler {self.cluster} with {lost} shard(s) in flight; every "
            "result so far is in the outputs and the store (continue with --resume)")


def make_runner_factory(**cluster_kwargs: Any) -> Callable[..., ClusterRunner]:
    """For servprobe.commands.scan: builds the runner with ScanRunner's arguments."""

    def factory(*args: Any, **kwargs: Any) -> ClusterRunner:
        return ClusterRunner(*args, **kwargs, **cluster_kwargs)

    return factory
