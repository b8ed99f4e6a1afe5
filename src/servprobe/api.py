"""The Python API: `servprobe.scan(...)` (an iterator) and `servprobe.ascan(...)` (an async
iterator) of ServiceResult objects, as they arrive.

Options are the scan command's, as keyword arguments with the same names and defaults: the
names are the CLI parser's own destinations (`ports="22,80"` is `-p`, `version_intensity=2`
is `--version-intensity 2`, `sU=True` is `-sU`, `Pn=True`, `timing=4` or `"aggressive"`,
`host_timeout="30s"`, `input_file="masscan.txt"`, `no_dns=True`, ...); the defaults come from
that parser, so they cannot drift apart. `servprobe.scan_options()` lists them.

No global state: every call builds its own target list, engine, runner and (for `scan`) an
event loop in a thread of its own; nothing is printed, no signal handler is installed, no
store is written. Cancelling is leaving the loop: `break` (or closing the generator, or
cancelling the task consuming `ascan`) stops the scan and waits until its sockets are closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from servprobe.result import HostResult, ScanRun, ServiceResult

_DONE = object()


class ScanError(ValueError):
    """Bad options or targets (the CLI's usage errors); the message names the offending text."""


def _defaults() -> argparse.Namespace:
    from servprobe.commands.scan import build_parser

    return build_parser().parse_args([])


def scan_options() -> dict[str, Any]:
    """Every keyword `scan`/`ascan` take, with its default (the CLI's)."""
    skip = {"targets", "oN", "oX", "oG", "oJ", "oC", "oH", "oA", "no_progress", "store",
            "store_keep", "no_store", "resume", "cluster", "shard_size"}
    return {k: v for k, v in vars(_defaults()).items() if k not in skip}


def _namespace(targets: str | Iterable[str] | None, options: dict[str, Any]) -> argparse.Namespace:
    from servprobe.commands.scan import parse_time, parse_timing

    args = _defaults()
    known = scan_options()
    for key, value in options.items():
        if key not in known:
            raise TypeError(f"unknown scan option {key!r}; options are: {', '.join(sorted(known))}")
        try:
            if key == "timing" and isinstance(value, str):
                value = parse_timing(value)
            elif key == "host_timeout" and isinstance(value, str):
                value = parse_time(value)
        except argparse.ArgumentTypeError as exc:
            raise ScanError(str(exc)) from None
        if key == "exclude" and isinstance(value, str):
            value = [value]
        setattr(args, key, value)
    # like the command line: no targets means 127.0.0.1, unless input_file lists them
    if targets is None:
        targets = [] if args.input_file else (["::1"] if args.ipv6 else ["127.0.0.1"])
    args.targets = targets.split() if isinstance(targets, str) else list(targets)
    return args


class _Collector:
    """A reporter handing every final port result to `emit`."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit

    def start(self, run: ScanRun) -> None:
        pass

    def port(self, result: ServiceResult) -> None:
        self.emit(result)

    def host(self, host: HostResult) -> None:
        pass

    def finish(self, run: ScanRun) -> None:
        pass


def _runner(args: argparse.Namespace, emit: Any) -> Any:
    """A ScanRunner for these options, built as `servprobe.commands.scan._main` builds it."""
    from servprobe import __version__
    from servprobe.commands.scan import UsageError, _engine, engine_options, load_probe_db
    from servprobe.portspec import PortSpecError
    from servprobe.report.base import Outputs
    from servprobe.scan.inputs import InputError, cli_targets
    from servprobe.scan.ports import PortSelection, select_ports
    from servprobe.scan.portscan import config_for_timing
    from servprobe.scan.runner import HOSTGROUP_BY_TIMING, RunConfig, ScanRunner
    from servprobe.scan.targets import TargetError

    try:
        if args.ipv6 and not args.targets and not args.input_file:
            args.targets = ["::1"]
        chosen = cli_targets(
            args.targets, input_file=args.input_file, input_format=args.input_format,
            skip_bad=args.skip_bad_input, exclude=args.exclude, exclude_file=args.excludefile,
            ipv6=args.ipv6, ports=args.ports, exclude_ports=args.exclude_ports,
        )
        protos = (["tcp"] if (args.sT or args.sS or not args.sU) else []) + (["udp"] if args.sU else [])
        if args.fast and args.top_ports:
            raise ScanError("fast and top_ports cannot be used together")
        ports = select_ports(protos, spec=args.ports, fast=args.fast, top=args.top_ports,
                             exclude=args.exclude_ports)
        if args.sn or args.sL:
            ports = PortSelection({})
            args.no_sV = True
        service_scan = not args.no_sV
        db = load_probe_db(args.db) if service_scan else None
        options = engine_options(args)
        engine = _engine(db, options, None) if service_scan else None
    except (TargetError, InputError, PortSpecError, UsageError) as exc:
        raise ScanError(str(exc)) from None
    run = ScanRun(
        args=[], start=time.time(),
        db_path=str(getattr(db, "path", "") or "") if db is not None else "",
        scan_types=["connect" if p == "tcp" else "udp" for p in protos],
        ports_spec=(PortSelection(chosen.allowed or {}).spec_strings() if chosen.per_port
                    else ports.spec_strings()),
        version=__version__, intensity=options.intensity,
    )
    pscfg = config_for_timing(args.timing, args.max_parallelism)
    if args.max_retries is not None:
        pscfg.retries = args.max_retries
    config = RunConfig(
        ports=ports, portscan=pscfg, skip_discovery=args.Pn, reverse_dns=not args.no_dns,
        host_timeout=args.host_timeout, hostgroup=HOSTGROUP_BY_TIMING.get(args.timing, 256),
        open_only=args.open_only, list_only=args.sL,
        verify_listed=chosen.per_port and bool(args.ports),
    )
    return ScanRunner(chosen.targets, config, Outputs([_Collector(emit)]), run, engine)


async def ascan(targets: str | Iterable[str] | None = None, ports: str | None = None,
                **options: Any) -> AsyncIterator[ServiceResult]:
    """Scan in the running event loop; yields each port's final ServiceResult as it is known.

    `async for r in servprobe.ascan("127.0.0.1", ports="22,80"): print(r.to_dict())`
    """
    results: asyncio.Queue[Any] = asyncio.Queue()
    runner = _runner(_namespace(targets, {"ports": ports, **options}), results.put_nowait)

    async def go() -> None:
        try:
            await runner.execute()
        finally:
            results.put_nowait(_DONE)

    task = asyncio.create_task(go())
    try:
        while True:
            item = await results.get()
            if item is _DONE:
                break
            yield item
        await task  # an engine failure surfaces here
    finally:
        if not task.done():
            runner.stop("cancelled")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)


def scan(targets: str | Iterable[str] | None = None, ports: str | None = None,
         **options: Any) -> Iterator[ServiceResult]:
    """Scan in a thread of its own; yields each port's final ServiceResult as it is known.

    `for r in servprobe.scan("127.0.0.1", ports="22,80", version_intensity=2): print(r)`
    Leaving the loop early stops the scan.
    """
    args = _namespace(targets, {"ports": ports, **options})
    out: queue.Queue[Any] = queue.Queue()
    ready: queue.Queue[Any] = queue.Queue()

    def thread_main() -> None:
        from servprobe.net.loop import new_event_loop

        loop = new_event_loop()
        try:
            runner = _runner(args, out.put)
        except BaseException as exc:  # handed to the caller's thread
            ready.put(exc)
            loop.close()
            return
        ready.put((loop, runner))
        try:
            loop.run_until_complete(runner.execute())
            out.put(_DONE)
        except BaseException as exc:  # handed to the caller's thread
            out.put(exc)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    worker = threading.Thread(target=thread_main, name="servprobe-scan", daemon=True)
    worker.start()
    first = ready.get()
    if isinstance(first, BaseException):
        worker.join()
        raise first
    loop, runner = first
    finished = False
    try:
        while True:
            item = out.get()
            if item is _DONE:
                finished = True
                break
            if isinstance(item, BaseException):
                finished = True
                raise item
            yield item
    finally:
        if not finished:
            with contextlib.suppress(RuntimeError):  # the loop may have just ended
                loop.call_soon_threadsafe(runner.stop, "cancelled")
        worker.join()
