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
    """A ScanRunner for these options, planned by the scan command's own `plan_scan`."""
    from servprobe.commands.scan import UsageError, _engine, plan_scan
    from servprobe.report.base import Outputs
    from servprobe.scan.runner import ScanRunner

    try:
        plan = plan_scan(args, [])
        engine = _engine(plan.db, plan.options, None) if plan.db is not None else None
    except UsageError as exc:
        raise ScanError(str(exc)) from None
    return ScanRunner(plan.chosen.targets, plan.config, Outputs([_Collector(emit)]), plan.run,
                      engine)


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
