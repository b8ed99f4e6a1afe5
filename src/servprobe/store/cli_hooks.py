"""The scan command's hooks for the store: `--store`, `--no-store`, `--resume`.

The scan command (servprobe.commands.scan) calls two things:

    argv, session = cli_hooks.prepare(argv)   # before parsing; may return an exit code
    outputs, service_scan = session.attach(outputs, targets, service_scan)  # before running

`prepare` takes the store options out of argv (so the scan parser never sees them). With
`--resume FILE` it returns the argv stored in FILE instead, and the session remembers what
that run already finished. `attach` then
  - adds a reporter that writes every final result to the store as it arrives (committed
    at once: a kill -9 loses only the services in flight),
  - on resume, leaves out the hosts already complete (their stored results are replayed to
    every output, so -oX/-oN/-oJ files hold the whole scan), and answers the service scan of
    every port already identified from the store instead of probing it again.

Why a reporter: the scanner already tells reporters each final port and host; a result the
reporters have seen is exactly a result that must survive a crash. A port whose service
scan was cut short (the run was interrupted) is not final and is not stored as a result, so
a resume probes it again.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from servprobe.result import HostResult, ScanRun, ServiceResult
from servprobe.store.paths import default_keep, default_store_path, prune_default_stores
from servprobe.store.sqlite import Key, ResumeState, Store, StoreError

OPEN_STATES = ("open", "open|filtered")
STORE_HELP = """\
Store and resume:
  --store FILE      write every result to the SQLite store FILE as it arrives
                    (default: a new file under the user state dir, e.g.
                    ~/.local/state/servprobe/scans/scan-YYYYmmdd-HHMMSS.sqlite)
  --no-store        do not keep a store
  --store-keep N    keep only the newest N default stores (default 10, $SERVPROBE_STORE_KEEP)
  --resume FILE     continue the interrupted scan stored in FILE (no other options):
                    finished hosts and services are not scanned again, and every output
                    of the original command is written in full
"""

ServiceScan = Callable[[AsyncIterator[Any], Callable[[ServiceResult], None]], Awaitable[None]]


def _err(message: str) -> None:
    print(f"servprobe: {message}", file=sys.stderr, flush=True)


def _take_option(argv: list[str], name: str, *, value: bool) -> tuple[list[str], list[str | None]]:
    """Remove every `name` (`name VALUE`, `name=VALUE`) from argv; return (rest, values)."""
    rest: list[str] = []
    found: list[str | None] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":  # everything after is positional
            rest.extend(argv[i:])
            break
        if a == name:
            if value:
                if i + 1 >= len(argv):
                    found.append(None)
                    i += 1
                    continue
                found.append(argv[i + 1])
                i += 2
                continue
            found.append("")
            i += 1
            continue
        if value and a.startswith(name + "="):
            found.append(a[len(name) + 1 :])
            i += 1
            continue
        rest.append(a)
        i += 1
    return rest, found


@dataclass
class StoreSession:
    """One scan's link to its store: where, which scan id, and what a resume already has."""

    path: Path | None
    argv: list[str]
    resume: ResumeState | None = None
    store: Store | None = None
    scan_id: int | None = None
    replayed_hosts: list[HostResult] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def finished(self) -> dict[Key, ServiceResult]:
        if self.resume is None:
            return {}
        complete = {h.address for h in self.resume.complete_hosts}
        return {r.key: r for r in self.resume.results if r.address not in complete}

    # -- wiring into the scan -------------------------------------------------------------

    def attach(
        self, outputs: Any, targets: Any = None, service_scan: ServiceScan | None = None
    ) -> tuple[Any, ServiceScan | None]:
        """Wrap the scan's outputs and service scan; leave completed hosts out of `targets`."""
        if not self.enabled:
            return outputs, service_scan
        if self.resume is not None:
            done = [h for h in self.resume.complete_hosts]
            if done and targets is not None:
                exclusions = getattr(targets, "exclusions", None)
                if exclusions is not None and hasattr(exclusions, "specs"):
                    exclusions.specs.append(_AddressSet({h.address for h in done}))
                else:  # cannot skip them: they are scanned again, results replace the old
                    done = []
            self.replayed_hosts = done
        reporter = StoreReporter(self)
        wrapped = _Outputs(outputs, reporter, self.replayed_hosts)
        if service_scan is not None and self.resume is not None and self.finished:
            service_scan = _skip_finished(service_scan, self.finished)
        return wrapped, service_scan

    def open_store(self) -> bool:
        """Open the store (at the scan's start); False, with a message, when it cannot be."""
        if self.path is None:
            return False
        if self.store is not None:
            return True
        try:
            self.store = Store.open(self.path)
        except StoreError as exc:
            _err(f"{exc}; results will not be stored")
            self.path = None
            return False
        return True

    def close(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
            self.store = None


class _AddressSet:
    """An exclusion spec (duck-typed like servprobe.scan.targets specs) for done hosts."""

    def __init__(self, addresses: set[str]) -> None:
        self.addresses = {str(ipaddress.ip_address(a)) for a in addresses}

    def contains(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return str(addr) in self.addresses

    def count(self) -> int:
        return len(self.addresses)


def _skip_finished(service_scan: ServiceScan, finished: dict[Key, ServiceResult]) -> ServiceScan:
    """A service scan that answers already identified ports from the store."""

    async def run(targets: AsyncIterator[Any], on_result: Callable[[ServiceResult], None]) -> None:
        async def remaining() -> AsyncIterator[Any]:
            async for t in targets:
                stored = finished.get((t.address, t.proto, t.port))
                if stored is not None:
                    on_result(replace(stored, cpes=list(stored.cpes),
                                      hostnames=list(stored.hostnames)))
                    continue
                yield t

        await service_scan(remaining(), on_result)

    return run


class StoreReporter:
    """A reporter (see servprobe.report.base) that keeps every final result in the store."""

    def __init__(self, session: StoreSession) -> None:
        self.session = session
        self.run: ScanRun | None = None
        self.failed = False

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        # a full disk must not stop the scan: warn once, keep scanning, outputs still written
        if self.failed:
            return
        try:
            fn()
        except Exception as exc:
            self.failed = True
            _err(f"store {self.session.path}: cannot {what} ({exc}); no longer storing results")

    def start(self, run: ScanRun) -> None:
        self.run = run
        s = self.session
        if not s.open_store():
            self.failed = True
            return
        assert s.store is not None
        spec = {
            "ports_spec": dict(run.ports_spec),
            "scan_types": list(run.scan_types),
            "service_scan": bool(getattr(run, "service_scan", True)),
            "intensity": getattr(run, "intensity", None),
            "cwd": os.getcwd(),
        }
        if s.resume is not None:
            sid = s.resume.scan.id

            def resume() -> None:
                assert s.store is not None
                s.store.mark_resumed(sid)
                s.store.update_spec(sid, resumed_at=time.time())

            s.scan_id = sid
            self._guard("mark the scan resumed", resume)
            _err(f"resuming scan #{sid} from {s.path}: {len(s.resume.results)} services "
                 f"and {len(s.resume.complete_hosts)} hosts already done")
        else:

            def begin() -> None:
                assert s.store is not None
                s.scan_id = s.store.begin_scan(s.argv, spec, db_path=run.db_path,
                                               start=run.start)

            self._guard("begin the scan", begin)
            if s.scan_id is not None:
                _err(f"storing results in {s.path} (continue an interrupted scan with: "
                     f"servprobe --resume {s.path})")

    def _final(self, result: ServiceResult) -> bool:
        run = self.run
        if run is None:
            return True
        # an open port reported from the port table because the run was cut short before
        # its service scan ended: not final, a resume must probe it
        return not (
            run.interrupted
            and getattr(run, "service_scan", True)
            and result.state in OPEN_STATES
            and result.method == "table"
        )

    def port(self, result: ServiceResult) -> None:
        s = self.session
        if s.store is None or s.scan_id is None or not self._final(result):
            return
        if result.state not in OPEN_STATES:
            return  # closed/filtered ports are kept with their host (extraports/ports)
        self._guard("record a result", lambda: s.store.record(s.scan_id, result))  # type: ignore[union-attr,arg-type]

    def host(self, host: HostResult) -> None:
        s = self.session
        if s.store is None or s.scan_id is None:
            return
        run = self.run
        if run is not None and run.interrupted and not host.timedout:
            self._guard("record a host", lambda: s.store.record_host(  # type: ignore[union-attr]
                s.scan_id, host.address, status=host.status, reason=host.reason,  # type: ignore[arg-type]
                hostnames=list(host.hostnames), starttime=host.starttime))
            return
        final = replace(host, ports=[r for r in host.ports if self._final(r)])
        self._guard("record a host",
                    lambda: s.store.record_complete_host(s.scan_id, final))  # type: ignore[union-attr,arg-type]

    def finish(self, run: ScanRun) -> None:
        s = self.session
        if s.store is None or s.scan_id is None:
            return
        status = "interrupted" if run.interrupted else "done"
        self._guard("end the scan", lambda: s.store.end_scan(s.scan_id, status))  # type: ignore[union-attr,arg-type]
        if run.interrupted:
            _err(f"scan interrupted; continue it with: servprobe --resume {s.path}")

    def close(self) -> None:
        self.session.close()


class _Outputs:
    """The scan's Outputs plus the store reporter, replaying completed hosts on resume."""

    def __init__(self, inner: Any, reporter: StoreReporter, replay: list[HostResult]) -> None:
        self._inner = inner
        self._reporter = reporter
        self._replay = replay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def start(self, run: ScanRun) -> None:
        self._reporter.start(run)
        self._inner.start(run)
        for host in self._replay:
            for r in host.ports:
                self._inner.port(r)
            self._inner.host(host)

    def port(self, result: ServiceResult) -> None:
        self._reporter.port(result)
        self._inner.port(result)

    def host(self, host: HostResult) -> None:
        self._reporter.host(host)
        self._inner.host(host)

    def finish(self, run: ScanRun) -> None:
        if self._replay:
            # the scanner counted only the hosts it scanned this time
            if getattr(run, "hosts_total", None) is not None:
                run.hosts_total = (run.hosts_total or 0) + len(self._replay)
            if getattr(run, "hosts_up", None) is not None:
                # the runner counts hosts without keeping them (memory): add the replayed ones
                run.hosts_up = (run.hosts_up or 0) + sum(1 for h in self._replay if h.status == "up")
        self._reporter.finish(run)
        try:
            self._inner.finish(run)
        finally:
            self._reporter.close()


def _address_key(address: str) -> tuple[int, int]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (ip.version, int(ip))


# -- before argument parsing ------------------------------------------------------------------


def prepare(argv: list[str]) -> tuple[list[str], StoreSession] | int:
    """Take --store/--no-store/--resume out of argv.

    Returns (argv for the scan parser, session), or an exit status after printing why:
    2 when the options are wrong or the resume file is unusable, 1 when the machine's file
    descriptor limit is too low for any scan (see servprobe.resources).
    """
    # resource limits first: a scan the machine cannot run stops here, with the fix (issue 7)
    from servprobe.resources import ResourceError, preflight

    try:
        for note in preflight(list(argv)):
            _err(note)
    except ResourceError as exc:
        _err(str(exc))
        return 1
    rest, resume = _take_option(list(argv), "--resume", value=True)
    rest, stores = _take_option(rest, "--store", value=True)
    rest, no_store = _take_option(rest, "--no-store", value=False)
    rest, keeps = _take_option(rest, "--store-keep", value=True)
    keep = default_keep()
    if keeps:
        text = keeps[-1] or ""
        if not text.isdigit() or int(text) < 1:
            _err(f"--store-keep needs a positive number, not {text!r}")
            return 2
        keep = int(text)
    if resume:
        if len(resume) > 1 or resume[0] is None or not resume[0]:
            _err("--resume takes one FILE (the store of the interrupted scan)")
            return 2
        if rest or stores or no_store:
            _err("--resume FILE takes no other options: the scan's own options are in FILE")
            return 2
        try:
            store, state = Store.resume(resume[0])
        except StoreError as exc:
            _err(f"cannot resume: {exc}")
            return 2
        path = Path(resume[0]).resolve()
        # relative output paths (-oX scan.xml) mean the files of the original run
        cwd = state.scan.spec.get("cwd")
        if isinstance(cwd, str) and cwd and Path(cwd).is_dir() and Path(cwd) != Path.cwd():
            _err(f"resuming in {cwd}, where the scan was started")
            os.chdir(cwd)
        session = StoreSession(path, list(state.args), resume=state, store=store)
        return list(state.args), session
    if any(v is None or v == "" for v in stores):
        _err("--store needs a FILE")
        return 2
    if no_store:
        return rest, StoreSession(None, rest)
    if stores:
        # an explicit request that fails is an error, before any packet is sent
        path = Path(stores[-1])
        existed = path.exists()
        try:
            store = Store.open(path)
        except StoreError as exc:
            _err(f"--store: {exc}")
            return 2
        if not existed:
            atexit.register(_remove_if_unused, path)
        return rest, StoreSession(path, rest, store=store)
    # the default store may degrade to a warning (open_store); old ones are pruned first
    prune_default_stores(keep - 1)
    return rest, StoreSession(default_store_path(), rest)


def _remove_if_unused(path: Path) -> None:
    """A store created for a command that then failed (a usage error): leave no file."""
    try:
        with Store.open(path, create=False) as store:
            if store.scans():
                return
    except Exception:  # never let cleanup turn into an error at exit
        return
    for f in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):
            f.unlink()


def attach(
    session: StoreSession, outputs: Any, targets: Any, service_scan: ServiceScan | None
) -> tuple[Any, ServiceScan | None]:
    """Function form of StoreSession.attach, for the scan command."""
    return session.attach(outputs, targets, service_scan)
