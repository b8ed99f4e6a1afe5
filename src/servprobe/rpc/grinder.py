"""Public RPC grinding API: name the SunRPC program behind a port, with or without a portmapper.

Used by the rpc-grind post-processor (servprobe.post.rpc: after version detection says a
port speaks SunRPC) and by the CLI's -sR (RPC scan without full version detection). The
decisions are flows (generators of rpc.transport operations) that run on any transport of
the one interface; the async functions below run them on the asyncio loop:

    wants_grind(result)                    -> should the driver hand this result to us?
    await grind_result(result, options)    -> the result, named after the RPC program
    await rpc_scan(targets, options)       -> -sR: one result per target
    await rpc_service_scan(targets, options, on_result)
                                           -> -sR streaming, shaped like run_service_scan

How a port is identified (RpcInfo.via):
  "portmapper"  the host's portmapper (TCP or UDP 111) lists the port in its DUMP, and the
                port confirmed it: one NULL call with an absurd version came back as
                PROG_MISMATCH (which also gives the real version range). If the port does
                not confirm (stale registration), it is ground like any other.
  "grind"       no portmapper answer, the portmapper is disabled (EngineOptions.rpc_portmapper
                = False, as if 111 were firewalled), or it does not list the port: NULL calls
                for every program of the table (see grind.py for the rules).

Reported like nmap: service = program name, version "low-high" ("N" when low == high),
extrainfo "RPC #number". When the server does not tell its versions (it accepts any version),
version stays empty and RpcInfo.lowver/highver are 0.

A server that accepts any program number (the canary call is not refused) gets no program
identity at all: claiming the first table entry that "answered" would be a false identity.
Its result keeps its service and says "accepts any RPC program" in extrainfo.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from ..engine.options import EngineOptions, ServiceTarget
from ..result import RpcInfo, ServiceResult
from ..timing import timing
from .grind import Grinder, GrindResult, Outcome
from .portmap import PMAP_PORT, PortMap, merge, parse_dump_reply
from .portmap import dump_call as _dump_call
from .protocol import RpcError
from .table import RpcTable, default_table
from .transport import CallOp, FlowOp, GrindOp, Op, run

if TYPE_CHECKING:
    from servprobe.engine.transport import Transport

RPC_SERVICE_NAMES = frozenset({"rpcbind", "sunrpc", "rpc", "portmapper"})
# Calls in flight per port, by timing template (servprobe.timing, the one table).
WINDOW_BY_TIMING = {t: timing(t).rpc_window for t in range(6)}
GRIND_TIMEOUT = 60.0  # whole-table grind of one port, worst case (UDP, lossy)
CHECK_TIMEOUT = 10.0  # confirming the programs the portmapper lists at the port
PMAP_TIMEOUT = 2.0
PMAP_CACHE_TTL = 60.0


def wants_grind(result: ServiceResult) -> bool:
    """True when version detection says the port speaks SunRPC and nobody named it yet."""
    if result.state not in ("open", "open|filtered") or result.tunnel is not None:
        return False
    if result.rpc is not None:  # already complete (portmapper) or already ground
        return False
    if result.method != "probed":
        return False
    return (result.service or "").lower() in RPC_SERVICE_NAMES


def _window(options: EngineOptions | None) -> int:
    timing = getattr(options, "timing", 3) if options is not None else 3
    return WINDOW_BY_TIMING.get(timing, 32)


def _portmapper_enabled(options: EngineOptions | None) -> bool:
    return bool(getattr(options, "rpc_portmapper", True)) if options is not None else True


# -- portmapper --------------------------------------------------------------------------


def portmapper_flow(
    address: str, *, port: int = PMAP_PORT, timeout: float = PMAP_TIMEOUT
) -> Generator[Op, Any, PortMap | None]:
    """DUMP the portmapper of a host: TCP first, then UDP; v2 (IPv4) or v4/v3 (IPv6 too).

    A flow (rpc.transport.FlowOp): None when nothing answers as a portmapper there.
    """
    family = 6 if ":" in address else 4
    versions = (2, 4) if family == 4 else (4, 3)
    rng = random.Random()
    for proto in ("tcp", "udp"):
        for version in versions:
            msg = _dump_call(rng.getrandbits(32), version)
            try:
                raw = yield CallOp(
                    address, port, proto, msg, timeout=timeout, tries=2 if proto == "udp" else 1
                )
            except (OSError, TimeoutError, RpcError, EOFError):
                break  # nobody (or no RPC) there on this transport: try the other one
            try:
                entries = parse_dump_reply(raw, version, family)
            except RpcError:
                continue  # e.g. PROG_MISMATCH: this portmapper lacks that version
            if version == 2 and family == 4:
                # v2 lists IPv4 only and nothing else is needed for an IPv4 target.
                return PortMap(entries, f"{proto}/{port} v2")
            return PortMap(merge([entries]), f"{proto}/{port} v{version}")
    return None


async def query_portmapper(
    address: str, *, port: int = PMAP_PORT, timeout: float = PMAP_TIMEOUT
) -> PortMap | None:
    """portmapper_flow on the running asyncio loop."""
    return await run(FlowOp(portmapper_flow(address, port=port, timeout=timeout)))


class _CacheEntry:
    __slots__ = ("at", "done", "query", "scope", "value", "waiters")

    def __init__(self, at: float, scope: object) -> None:
        self.at = at
        self.scope = scope
        self.done = False
        self.value: PortMap | None = None
        self.waiters: list[Callable[[Any, BaseException | None], None]] = []
        self.query: FlowOp | None = None


class PortmapCache:
    """One DUMP per host and scan, shared by every port of that host being ground."""

    def __init__(self, ttl: float = PMAP_CACHE_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[str, _CacheEntry] = {}

    def lookup(self, address: str) -> Op:
        """An operation whose value is the host's PortMap (or None), queried once."""
        return _CachedDump(self, address)

    async def get(self, address: str) -> PortMap | None:
        return await run(self.lookup(address))

    def _entry(self, address: str, transport: Transport) -> _CacheEntry:
        now = transport.now()
        scope = getattr(transport, "loop", transport)  # one loop / one simulation
        hit = self._entries.get(address)
        if hit is None or hit.scope is not scope or now - hit.at > self.ttl:
            hit = self._entries[address] = _CacheEntry(now, scope)
            entry = hit

            def answered(value: Any, error: BaseException | None) -> None:
                entry.done, entry.value, entry.query = True, value if error is None else None, None
                waiters, entry.waiters = entry.waiters, []
                for w in waiters:
                    w(entry.value, None)

            hit.query = FlowOp(portmapper_flow(address))
            hit.query.start(transport, answered)
        return hit


class _CachedDump(Op):
    """A waiter on the cache: the query goes on for the others when one waiter cancels."""

    def __init__(self, cache: PortmapCache, address: str) -> None:
        super().__init__()
        self.cache = cache
        self.address = address
        self.entry: _CacheEntry | None = None

    def begin(self) -> None:
        assert self.transport is not None
        entry = self.entry = self.cache._entry(self.address, self.transport)
        if entry.done:
            value = entry.value
            self.transport.call_soon(lambda: self.finish(value))
        else:
            entry.waiters.append(self._answer)

    def _answer(self, value: Any, error: BaseException | None) -> None:
        self.finish(value, error)

    def cancel(self) -> None:
        if self.entry is not None and self._answer in self.entry.waiters:
            self.entry.waiters.remove(self._answer)
        super().cancel()


# The engine driver calls grind_result() port by port with the same EngineOptions object:
# one cache per options object (held strongly so its id is not reused while cached).
_CACHES: dict[int, tuple[EngineOptions, PortmapCache]] = {}


def _cache_for(options: EngineOptions | None) -> PortmapCache:
    if options is None:
        return PortmapCache()
    key = id(options)
    held = _CACHES.get(key)
    if held is None or held[0] is not options:
        if len(_CACHES) > 64:
            _CACHES.clear()
        held = (options, PortmapCache())
        _CACHES[key] = held
    return held[1]


# -- grinding ----------------------------------------------------------------------------


def grind_op(
    address: str,
    port: int,
    proto: str,
    *,
    programs: Iterable[int] | None = None,
    table: RpcTable | None = None,
    window: int = 32,
    canary: bool = True,
    connect_timeout: float = 5.0,
    timeout: float = GRIND_TIMEOUT,
    rng: random.Random | None = None,
) -> Generator[Op, Any, GrindResult]:
    """A flow grinding one port: NULL calls for every program (default: the whole table)."""
    if programs is None:
        programs = (table or default_table()).numbers()
    machine = Grinder(list(programs), stream=proto == "tcp", window=window, canary=canary, rng=rng)
    yield GrindOp(machine, address, port, proto, connect_timeout=connect_timeout, timeout=timeout)
    if machine.result is None:  # the transport ended without the machine deciding
        machine.unreachable("transport ended")
    assert machine.result is not None
    return machine.result


async def grind_port(address: str, port: int, proto: str, **kw: Any) -> GrindResult:
    """Grind one port on the running asyncio loop (grind_op's arguments)."""
    return await run(FlowOp(grind_op(address, port, proto, **kw)))


def _version_text(low: int, high: int) -> str | None:
    if low <= 0 and high <= 0:
        return None
    return str(low) if low == high else f"{low}-{high}"


def rpc_fields(info: RpcInfo, now: float) -> dict[str, Any]:
    """The result's fields as nmap shows an RPC port: `status 1 (RPC #100024)`."""
    return {
        "service": info.name,
        "product": None,
        "version": _version_text(info.lowver, info.highver),
        "extrainfo": f"RPC #{info.program}",
        "cpes": [],
        "method": "probed",
        "conf": 10,
        "soft": False,
        "rpc": info,
        "finished": now,
    }


def apply_rpc(result: ServiceResult, info: RpcInfo) -> ServiceResult:
    """A copy of `result` shown as an RPC port (rpc_fields)."""
    return dataclasses.replace(result, **rpc_fields(info, time.time()))


def identify_flow(
    address: str,
    port: int,
    proto: str,
    options: EngineOptions | None = None,
    *,
    cache: PortmapCache | None = None,
    table: RpcTable | None = None,
) -> Generator[Op, Any, tuple[RpcInfo | None, GrindResult | None]]:
    """Name the RPC program on one port, as a flow: (info or None, the grind that decided)."""
    table = table or default_table()
    window = _window(options)
    connect_timeout = getattr(options, "connect_timeout", 5.0) if options else 5.0
    if _portmapper_enabled(options):
        pmap = yield (cache or _cache_for(options)).lookup(address)
        listed = pmap.programs_at(proto, port) if pmap else {}
        if listed:
            check = yield from grind_op(
                address,
                port,
                proto,
                programs=list(listed),
                window=window,
                connect_timeout=connect_timeout,
                timeout=CHECK_TIMEOUT,
            )
            if check.outcome is Outcome.FOUND and check.program is not None:
                low, high = check.lowver, check.highver
                if low is None or high is None:
                    vers = listed[check.program]
                    low, high = min(vers), max(vers)
                name = table.name(check.program)
                return RpcInfo(check.program, name, low, high, via="portmapper"), check
            if check.outcome in (Outcome.NO_RESPONSE, Outcome.CLOSED):
                # The port would not answer us; rpcinfo-style, trust the registration.
                prog = min(listed)
                vers = listed[prog]
                return RpcInfo(prog, table.name(prog), min(vers), max(vers), "portmapper"), check
            # Stale registration or something else answers there now: grind it.
    res = yield from grind_op(
        address,
        port,
        proto,
        table=table,
        window=window,
        connect_timeout=connect_timeout,
    )
    if res.outcome is Outcome.FOUND and res.program is not None:
        name = table.name(res.program)
        return RpcInfo(res.program, name, res.lowver or 0, res.highver or 0, via="grind"), res
    return None, res


async def identify(
    address: str,
    port: int,
    proto: str,
    options: EngineOptions | None = None,
    *,
    cache: PortmapCache | None = None,
    table: RpcTable | None = None,
) -> tuple[RpcInfo | None, GrindResult | None]:
    """identify_flow on the running asyncio loop."""
    return await run(FlowOp(identify_flow(address, port, proto, options, cache=cache, table=table)))


PROMISCUOUS_NOTE = "accepts any RPC program"


async def grind_result(
    result: ServiceResult,
    options: EngineOptions | None = None,
    *,
    cache: PortmapCache | None = None,
) -> ServiceResult:
    """Name the RPC program behind a result version detection found to speak SunRPC.

    Returns a new ServiceResult; the input is returned unchanged when the port is not RPC
    after all or its program is not in the table. (A scan does this through the rpc-grind
    post-processor, servprobe.post.rpc; this is the same flow for library callers.)
    """
    info, grind = await identify(result.address, result.port, result.proto, options, cache=cache)
    if info is not None:
        return apply_rpc(result, info)
    if grind is not None and grind.outcome is Outcome.PROMISCUOUS and not result.extrainfo:
        return dataclasses.replace(result, extrainfo=PROMISCUOUS_NOTE)
    return result


async def _rpc_one(t: ServiceTarget, options: EngineOptions, cache: PortmapCache) -> ServiceResult:
    base = ServiceResult(t.address, t.port, t.proto, state="open")
    if t.hostname:
        base.hostnames = [t.hostname]
    info, grind = await identify(t.address, t.port, t.proto, options, cache=cache)
    if info is not None:
        return apply_rpc(base, info)
    if grind is not None and grind.outcome is Outcome.PROMISCUOUS:
        return dataclasses.replace(
            base, service="rpcbind", extrainfo=PROMISCUOUS_NOTE, method="probed"
        )
    if grind is not None and grind.outcome in (Outcome.EXHAUSTED, Outcome.DENIED):
        # It speaks RPC, we just cannot name the program.
        return dataclasses.replace(base, service="rpcbind", method="probed", conf=10)
    return base


async def rpc_service_scan(
    targets: Iterable[ServiceTarget] | AsyncIterable[ServiceTarget],
    options: EngineOptions | None,
    on_result: Callable[[ServiceResult], None],
) -> None:
    """-sR in a pipeline: same shape as run_service_scan minus the probe DB.

    Targets may stream in (an async iterable, e.g. from the port scanner); on_result(result)
    is called as each port finishes, in any order. Ports that turn out not to be RPC come
    back as plain open results (service None).
    """
    options = options or EngineOptions()
    limit = options.max_parallelism or timing(options.timing).nmap_parallelism
    sem = asyncio.Semaphore(max(1, limit))
    cache = PortmapCache()
    tasks: set[asyncio.Task[None]] = set()

    async def one(t: ServiceTarget) -> None:
        try:
            on_result(await _rpc_one(t, options, cache))
        finally:
            sem.release()

    try:
        if hasattr(targets, "__aiter__"):
            async for t in targets:  # type: ignore[union-attr]
                await sem.acquire()
                task = asyncio.create_task(one(t))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            for t in targets:  # type: ignore[union-attr]
                await sem.acquire()
                task = asyncio.create_task(one(t))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


async def rpc_scan(
    targets: list[ServiceTarget], options: EngineOptions | None = None
) -> list[ServiceResult]:
    """-sR: grind every given (open) port without version detection, in parallel.

    Returns one result per target, in the targets' order.
    """
    options = options or EngineOptions()
    limit = options.max_parallelism or timing(options.timing).nmap_parallelism
    sem = asyncio.Semaphore(max(1, limit))
    cache = PortmapCache()

    async def one(t: ServiceTarget) -> ServiceResult:
        async with sem:
            return await _rpc_one(t, options, cache)

    return list(await asyncio.gather(*(one(t) for t in targets)))
