"""`servprobe [options] TARGETS`: the scanner people run, with nmap's flags for this job.

Parses the flags (usage errors → message naming the offending text, exit 2, no traceback),
builds targets, ports, engine options and reporters, then runs servprobe.scan.runner.
Ctrl-C / SIGTERM stop the scan cleanly: every finished result still reaches every requested
output, the XML is closed, and the exit code is 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from servprobe import __version__
from servprobe.cli import SUBCOMMAND_HELP, mistyped_subcommand
from servprobe.cluster import (
    ClusterError,
    ClusterSpec,
    ClusterUrlError,
    parse_cluster_url,
    take_resume_override,
    with_cluster,
)
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.escape import terminal_safe
from servprobe.portspec import PortSpecError
from servprobe.report.base import Outputs, Reporter
from servprobe.report.csv import CsvReporter
from servprobe.report.grepable import GrepableReporter
from servprobe.report.html import HtmlReporter
from servprobe.report.jsonl import JsonLinesReporter
from servprobe.report.normal import NormalReporter
from servprobe.report.pipes import PipeWatch, exit_like_sigpipe
from servprobe.report.xml import XmlReporter
from servprobe.result import ScanRun, ServiceResult
from servprobe.scan.inputs import FORMATS as INPUT_FORMATS
from servprobe.scan.inputs import InputError, cli_targets
from servprobe.scan.ports import PortSelection, select_ports
from servprobe.scan.portscan import config_for_timing
from servprobe.scan.runner import HOSTGROUP_BY_TIMING, RunConfig, ScanRunner
from servprobe.scan.targets import TargetError
from servprobe.store import cli_hooks as store_hooks
from servprobe.store.paths import default_keep, default_store_dir

EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

TIMING_NAMES = {"paranoid": 0, "sneaky": 1, "polite": 2, "normal": 3, "aggressive": 4, "insane": 5}

EXAMPLES = """\
examples:
  servprobe                                   top 1000 TCP ports of 127.0.0.1
  servprobe -p 22,80,443 192.168.1.0/24       three ports on a /24
  servprobe -p- -T4 10.0.0.5                  all 65535 TCP ports, faster timing
  servprobe -sU -p U:53,161,T:22 host.lan     UDP 53/161 and TCP 22
  servprobe -F --version-light -oA scan 10.0.0.1-20
                                              top 100 ports, light probing, scan.nmap/.xml/.gnmap
  servprobe -iL hosts.txt --exclude 10.0.0.1 -oJ results.jsonl
                                              targets from a file, JSON Lines streamed as found
  servprobe --db bundled -p 8080 127.0.0.1    use servprobe's own probe database

targets: 10.0.0.1  10.0.0.0/24  10.0.0-3.1-254  10.0.1,3,5-7.1  host.example  -6 ::1  -iL FILE
times (--host-timeout): 500ms  10s  30m  2h  (a bare number is seconds)
exit status: 0 done, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C), 143 SIGTERM,
  129 SIGHUP; every output is complete and well-formed for what had finished
"""


class UsageError(Exception):
    """A bad command line; the message names the offending text."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 itself; keep one format
        raise UsageError(message)


def parse_time(text: str) -> float:
    """nmap's time spec: 500ms, 10s, 30m, 2h; a bare number is seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text or "")
    if not m:
        raise argparse.ArgumentTypeError(f"bad time {text!r} (use e.g. 500ms, 10s, 30m, 2h)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"time must be positive: {text!r}")
    return value


def parse_timing(text: str) -> int:
    t = text.strip().lower()
    if t in TIMING_NAMES:
        return TIMING_NAMES[t]
    if t.isdigit() and 0 <= int(t) <= 5:
        return int(t)
    raise argparse.ArgumentTypeError(f"bad timing template {text!r} (0-5 or paranoid..insane)")


def _int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    def conv(text: str) -> int:
        if not re.fullmatch(r"\d+", text.strip()):
            raise argparse.ArgumentTypeError(f"not a number: {text!r}")
        value = int(text)
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{text!r} out of range ({bound})")
        return value

    return conv


def _store_dir() -> str:
    # argparse %-formats help strings
    return str(default_store_dir()).replace("%", "%%")


def build_parser() -> _Parser:
    p = _Parser(
        prog="servprobe",
        usage="servprobe [options] [TARGETS...]",
        description="Find out what really runs behind open ports (nmap -sV compatible flags).",
        epilog=EXAMPLES + "\n" + SUBCOMMAND_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("targets", nargs="*", metavar="TARGETS", help="hosts, networks, ranges")
    g = p.add_argument_group("scan types")
    g.add_argument("-sV", dest="sV", action="store_true", help="version detection (on by default)")
    g.add_argument("--no-sV", dest="no_sV", action="store_true", help="port scan only, no version detection")
    g.add_argument("-sT", dest="sT", action="store_true", help="TCP connect scan (the default)")
    g.add_argument("-sS", dest="sS", action="store_true", help="accepted for nmap habits: runs a connect scan (no raw sockets)")
    g.add_argument("-sU", dest="sU", action="store_true", help="UDP scan")
    g.add_argument("-sR", dest="sR", action="store_true", help="RPC grinding (part of -sV)")
    g.add_argument("-sn", dest="sn", action="store_true", help="host discovery only: no port scan")
    g.add_argument("-sL", dest="sL", action="store_true", help="list the targets (no packets sent)")
    g = p.add_argument_group("targets and host discovery")
    g.add_argument("-iL", dest="input_file", metavar="FILE", help="read targets from FILE (- = stdin): an nmap target list, or per-host ports from masscan/naabu/zmap/nmap-XML/host:port (detected)")
    g.add_argument("--input-format", choices=("auto", *INPUT_FORMATS), default="auto", metavar="FORMAT", help=f"force the -iL format: {', '.join(INPUT_FORMATS)}")
    g.add_argument("--skip-bad-input", action="store_true", help="warn about and skip -iL lines that do not parse (default: exit 2)")
    g.add_argument("--exclude", action="append", default=[], metavar="HOSTS", help="comma-separated targets to skip")
    g.add_argument("--excludefile", metavar="FILE", help="targets to skip, from FILE")
    g.add_argument("-Pn", "-PN", "-P0", dest="Pn", action="store_true", help="skip host discovery: treat every host as up")
    g.add_argument("-n", dest="no_dns", action="store_true", help="no reverse DNS")
    g.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 targets")
    g = p.add_argument_group("ports")
    g.add_argument("-p", dest="ports", metavar="PORTS", help="e.g. 22,80-90,http,T:443,U:53; -p- for all")
    g.add_argument("--exclude-ports", metavar="PORTS", help="ports to leave out")
    g.add_argument("--open", dest="open_only", action="store_true", help="show only open (or possibly open) ports")
    g.add_argument("-F", dest="fast", action="store_true", help="fast: top 100 ports")
    g.add_argument("--top-ports", type=_int_range(1, 65535), metavar="N", help="the N most common ports")
    g = p.add_argument_group("version detection")
    g.add_argument("--version-intensity", type=_int_range(0, 9), metavar="0-9", help="probe rarity limit (default 7)")
    g.add_argument("--version-light", action="store_true", help="intensity 2")
    g.add_argument("--version-all", action="store_true", help="intensity 9")
    g.add_argument("--version-trace", action="store_true", help="show every probe sent and answer received")
    g.add_argument("--allports", action="store_true", help="also probe ports the probe file excludes")
    g.add_argument("--version-scripts", metavar="all|none|ID,...", default="all",
                   help="post-processors after the match, nmap's version scripts (default all; "
                   "ids: amqp-info, mqtt-subscribe, snmp-info, ...)")
    g.add_argument("--db", metavar="PATH|bundled|nmap", help="probe database (default: nmap's if installed, else bundled)")
    g.add_argument("--probe-parallelism", type=_int_range(1, 64), metavar="N", help="speculative probe connections per service")
    g.add_argument("--sequential", action="store_true", help="nmap's exact one-probe-at-a-time order and waits")
    g.add_argument("--max-conn-per-host", type=_int_range(0), metavar="N",
                   help="speculative connections per host, beyond each service's own one (0: none)")
    g = p.add_argument_group("timing")
    g.add_argument("-T", dest="timing", type=parse_timing, default=3, metavar="0-5", help="timing template (default 3)")
    g.add_argument("--max-parallelism", type=_int_range(1), metavar="N", help="services probed at once")
    g.add_argument("--host-timeout", type=parse_time, metavar="TIME", help="give up on a host after TIME")
    g.add_argument("--max-retries", type=_int_range(0, 50), metavar="N", help="port scan retransmissions per port")
    g = p.add_argument_group("output")
    g.add_argument("-oN", metavar="FILE", help="normal output to FILE (- = stdout)")
    g.add_argument("-oX", metavar="FILE", help="XML output (nmap.dtd)")
    g.add_argument("-oG", metavar="FILE", help="grepable output")
    g.add_argument("-oJ", metavar="FILE", help="JSON Lines, streamed as results arrive")
    g.add_argument("-oC", metavar="FILE", help="CSV, one row per port (RFC 4180)")
    g.add_argument("-oH", metavar="FILE", help="one self-contained HTML page: summary, charts, sortable table")
    g.add_argument("-oA", metavar="BASE", help="BASE.nmap, BASE.xml and BASE.gnmap (add -oJ/-oH/-oC for more)")
    g.add_argument("-v", dest="verbose", action="count", default=0, help="more output (repeatable)")
    g.add_argument("--reason", action="store_true", help="a REASON column (syn-ack, conn-refused, ...)")
    g.add_argument("-d", dest="debug", action="count", default=0, help="debugging output (repeatable)")
    g.add_argument("--no-progress", action="store_true", help="no live progress display")
    # taken out of argv by servprobe.store.cli_hooks.prepare before parsing; listed for --help
    g = p.add_argument_group("scan store (results kept as they arrive)")
    g.add_argument("--store", metavar="FILE", help=f"the SQLite store to write (default: a new file in {_store_dir()}, of which the newest --store-keep are kept)")
    g.add_argument("--store-keep", metavar="N", help=f"default stores to keep (default {default_keep()}; env SERVPROBE_STORE_KEEP, dir SERVPROBE_STORE_DIR)")
    g.add_argument("--no-store", action="store_true", help="keep no store")
    g.add_argument("--resume", metavar="FILE", help="continue the interrupted scan stored in FILE")
    g = p.add_argument_group("many machines (Dask distributed, pip install 'servprobe[dask]')")
    g.add_argument("--cluster", metavar="URL", help="run the scan on a Dask cluster: tcp://HOST:PORT or tls://HOST:PORT (a `dask scheduler`), or local:N worker processes")
    g.add_argument("--shard-size", type=_int_range(1), metavar="N", help="with --cluster: hosts x ports per task (default: up to 8192)")
    p.add_argument("-V", "--version", action="version", version=f"servprobe {__version__}")
    return p


def expand_combined(argv: list[str]) -> list[str]:
    """nmap lets scan types combine (-sTV, -sUV) and -T take words; argparse does not."""
    out: list[str] = []
    for arg in argv:
        m = re.fullmatch(r"-s([STUVR]{2,})", arg)
        if m:
            out.extend(f"-s{c}" for c in m.group(1))
        else:
            out.append(arg)
    return out


# --------------------------------------------------------------------------------------------


def _open_out(path: str) -> tuple[IO[str], bool]:
    if path == "-":
        return sys.stdout, False
    try:
        return open(path, "w", encoding="utf-8", errors="backslashreplace"), True
    except OSError as exc:
        raise UsageError(f"cannot write output file {path!r}: {exc.strerror}") from None


def build_outputs(args: argparse.Namespace) -> tuple[list[Reporter], bool]:
    """Reporters for the requested outputs; the bool says whether the terminal gets the
    normal output (not when another format was sent to stdout with `-`)."""
    specs: list[tuple[str, str]] = []
    if args.oA:
        specs += [("N", args.oA + ".nmap"), ("X", args.oA + ".xml"), ("G", args.oA + ".gnmap")]
    for kind in ("N", "X", "G", "J", "C", "H"):
        path = getattr(args, f"o{kind}")
        if path:
            specs.append((kind, path))
    reporters: list[Reporter] = []
    stdout_flags = [f"-o{kind} -" for kind, path in specs if path == "-"]
    if len(stdout_flags) > 1:
        # two formats on one stream would interleave into something no parser reads
        raise UsageError(f"only one output can go to stdout: {' and '.join(stdout_flags)}")
    to_stdout = bool(stdout_flags)
    for kind, path in specs:
        fh, close = _open_out(path)
        if kind == "N":
            reporters.append(NormalReporter(fh, file_mode=path != "-", close=close, reason=args.reason))
        elif kind == "X":
            reporters.append(XmlReporter(fh, close=close))
        elif kind == "G":
            reporters.append(GrepableReporter(fh, close=close))
        elif kind == "C":
            reporters.append(CsvReporter(fh, close=close))
        elif kind == "H":
            reporters.append(HtmlReporter(fh, close=close))
        else:
            reporters.append(JsonLinesReporter(fh, close=close))
    return reporters, not to_stdout


def engine_options(args: argparse.Namespace) -> EngineOptions:
    intensity = 7
    if args.version_light:
        intensity = 2
    if args.version_all:
        intensity = 9
    if args.version_intensity is not None:
        intensity = args.version_intensity
    opts = EngineOptions(
        intensity=intensity,
        allports=args.allports,
        timing=args.timing,
        max_parallelism=args.max_parallelism,
        host_timeout=args.host_timeout,
        version_trace=args.version_trace,
        sequential=args.sequential,
    )
    if args.probe_parallelism is not None:
        opts.probe_parallelism = args.probe_parallelism
    if args.max_conn_per_host is not None:
        opts.per_host_connections = args.max_conn_per_host
    opts.debug = args.debug  # -d: a service's internal error is printed (engine Fault)
    if args.sR:
        opts.rpc_grind = True
    from servprobe.post import SelectionError, select

    try:
        select(args.version_scripts)
    except SelectionError as exc:
        raise UsageError(f"--version-scripts: {exc}") from None
    opts.version_scripts = args.version_scripts
    return opts


def load_probe_db(choice: str | None) -> Any:
    import servprobe

    try:
        return servprobe.load_db(choice)
    except ImportError as exc:
        raise UsageError(f"the probe database loader is not available ({exc})") from None
    except (OSError, ValueError) as exc:
        where = f" {choice!r}" if choice else ""
        raise UsageError(f"cannot load probe database{where}: {exc}") from None


PIPES = PipeWatch()  # the process's standard streams (servprobe.report.pipes)


def _stderr(msg: str) -> None:
    print(f"servprobe: {msg}", file=sys.stderr)


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except UsageError as exc:
        print("usage: servprobe [options] [TARGETS...]   (servprobe --help for more)", file=sys.stderr)
        print(f"servprobe: error: {terminal_safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE


@dataclass(slots=True)
class ScanPlan:
    """What a scan's options ask for, before any packet: shared by the CLI and servprobe.api."""

    chosen: Any  # servprobe.scan.inputs.ChosenTargets: targets, per-port input, allowed ports
    protos: list[str]
    ports: PortSelection
    db: Any  # ProbeDB, or None without -sV
    options: EngineOptions
    run: ScanRun
    config: RunConfig


def plan_scan(args: argparse.Namespace, argv: list[str]) -> ScanPlan:
    """Targets, ports, probe database, engine options, the run's header and the runner's
    config from parsed options; bad input raises UsageError naming the offending text."""
    if args.ipv6 and not args.targets and not args.input_file:
        args.targets = ["::1"]
    try:
        # issue 15 (servprobe.scan.inputs): -iL may list ports per host (masscan, naabu, ...)
        chosen = cli_targets(
            args.targets,
            input_file=args.input_file,
            input_format=args.input_format,
            skip_bad=args.skip_bad_input,
            exclude=args.exclude,
            exclude_file=args.excludefile,
            ipv6=args.ipv6,
            ports=args.ports,
            exclude_ports=args.exclude_ports,
        )
    except TargetError as exc:
        raise UsageError(f"bad target: {exc}") from None
    except InputError as exc:
        raise UsageError(str(exc)) from None
    except PortSpecError as exc:
        raise UsageError(f"bad port list: {exc}") from None
    protos = (["tcp"] if (args.sT or args.sS or not args.sU) else []) + (["udp"] if args.sU else [])
    if args.fast and args.top_ports:
        raise UsageError("-F and --top-ports cannot be used together")
    try:
        ports = select_ports(
            protos, spec=args.ports, fast=args.fast, top=args.top_ports, exclude=args.exclude_ports
        )
    except PortSpecError as exc:
        raise UsageError(f"bad port list: {exc}") from None
    if args.sn or args.sL:
        if args.ports or args.fast or args.top_ports or args.sU:
            raise UsageError(f"{'-sn' if args.sn else '-sL'} scans no ports: drop -p/-F/--top-ports/-sU")
        ports = PortSelection({})
        args.no_sV = True
    db = load_probe_db(args.db) if not args.no_sV else None
    options = engine_options(args)
    run = ScanRun(
        args=list(argv),
        start=time.time(),
        db_path=str(getattr(db, "path", "") or "") if db is not None else "",
        scan_types=["connect" if p == "tcp" else "udp" for p in protos],
        # per-port input: only -p is known up front (the listed ports arrive as the scan goes)
        ports_spec=(PortSelection(chosen.allowed or {}).spec_strings() if chosen.per_port
                    else ports.spec_strings()),
        version=__version__,
        verbose=args.verbose,
        debugging=args.debug,
        intensity=options.intensity,
    )
    pscfg = config_for_timing(args.timing, args.max_parallelism)
    if args.max_retries is not None:
        pscfg.retries = args.max_retries
    config = RunConfig(
        ports=ports,
        portscan=pscfg,
        skip_discovery=args.Pn,
        reverse_dns=not args.no_dns,
        host_timeout=args.host_timeout,
        hostgroup=HOSTGROUP_BY_TIMING.get(args.timing, 256),
        open_only=args.open_only,
        list_only=args.sL,
        verify_listed=chosen.per_port and bool(args.ports),
    )
    return ScanPlan(chosen, protos, ports, db, options, run, config)


def _main(argv: list[str]) -> int:
    # issue 7 (servprobe.store.cli_hooks): --store/--no-store/--resume are taken out here;
    # --resume swaps in the argv stored with the interrupted scan
    # issue 14: `--resume FILE --cluster URL|local:N|none` resumes elsewhere
    argv, cluster_override = take_resume_override(argv)
    prepared = store_hooks.prepare(argv)
    if isinstance(prepared, int):
        return prepared
    argv, store_session = prepared
    if cluster_override is not None:
        argv = with_cluster(argv, cluster_override)
    parser = build_parser()
    args = parser.parse_args(expand_combined(argv))

    if args.targets and (typo := mistyped_subcommand(args.targets[0])):
        raise UsageError(typo)  # `servprobe dbx`: not a silent "Failed to resolve" scan
    plan = plan_scan(args, argv)
    chosen, targets, ports, db, options = plan.chosen, plan.chosen.targets, plan.ports, plan.db, plan.options
    cluster_spec = ClusterSpec()
    if args.cluster is not None:
        try:
            cluster_spec = parse_cluster_url(args.cluster)
        except ClusterUrlError as exc:
            raise UsageError(str(exc)) from None
        if chosen.per_port:
            raise UsageError("--cluster does not take per-port target lists (-iL with ports) yet")
    if args.sS:
        _stderr("-sS needs raw sockets; servprobe runs a TCP connect scan (-sT) instead")
    service_scan = db is not None

    reporters, terminal = build_outputs(args)
    if terminal:
        reporters.insert(0, NormalReporter(None, reason=args.reason))
    outputs = Outputs(reporters)

    run, config, pscfg = plan.run, plan.config, plan.config.portscan
    trace = None
    if args.version_trace:
        def trace(line: str) -> None:
            try:
                print(terminal_safe(line), file=sys.stderr, flush=True)
            except BrokenPipeError:  # `2>&1 | head`: end quietly (servprobe.report.pipes)
                PIPES.closed(2)

    engine = _engine(db, options, trace) if service_scan else None
    # issue 7: results go to the store as they arrive; a resume skips finished work
    outputs, engine = store_hooks.attach(store_session, outputs, targets, engine)
    if args.debug:
        _stderr(
            f"ports: {ports.total()} ({', '.join(f'{k}: {len(v)}' for k, v in ports.ports.items())}); "
            f"connect timeout {pscfg.timeout}s, retries {pscfg.retries}, sockets {pscfg.concurrency}"
        )

    make_runner = None
    if args.cluster is not None:
        make_runner = _cluster_runner(args, cluster_spec, config, options if service_scan else None, db)
    return _run(
        targets, config, outputs, run, engine,
        progress=not args.no_progress and not args.version_trace, terminal=terminal,
        make_runner=make_runner,
    )


def _cluster_runner(args: argparse.Namespace, spec: ClusterSpec, config: RunConfig,
                    options: EngineOptions | None, db: Any) -> Callable[..., Any]:
    """issue 14: the runner that spreads this scan over a Dask cluster."""
    from servprobe.cluster.client import make_runner_factory
    from servprobe.cluster.worker import Job

    db_bytes = None
    if db is not None:
        try:
            db_bytes = Path(db.path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read probe database {str(db.path)!r}: {exc.strerror}") from None
    job = Job(config=config, options=options, db_name=str(getattr(db, "path", "") or ""))
    return make_runner_factory(cluster=spec, job=job, db_bytes=db_bytes,
                               shard_work=args.shard_size, debug=args.debug)


def _engine(db: Any, options: EngineOptions, trace: Callable[[str], None] | None) -> Callable[
    [AsyncIterator[ServiceTarget], Callable[[ServiceResult], None]], Any
]:
    try:
        from servprobe.net.driver import run_service_scan
    except ImportError as exc:
        raise UsageError(f"the service scan engine is not available ({exc}); use --no-sV") from None

    async def scan(targets: AsyncIterator[ServiceTarget], on_result: Callable[[ServiceResult], None]) -> None:
        await run_service_scan(db, targets, options, on_result, trace)

    return scan


def _run(
    targets: Any,
    config: RunConfig,
    outputs: Outputs,
    run: ScanRun,
    engine: Any,
    progress: bool,
    terminal: bool = True,
    make_runner: Callable[..., ScanRunner] | None = None,
) -> int:
    from servprobe.report.progress import ProgressDisplay, wanted

    signalled: list[int] = []
    runners: list[ScanRunner] = []

    async def go() -> ScanRun:
        discovered = None
        if run.verbose and terminal:
            def discovered(address: str, proto: str, port: int, state: str) -> None:
                print(f"Discovered {state} port {port}/{proto} on {address}", flush=True)

        runner = (make_runner or ScanRunner)(targets, config, outputs, run, engine, on_discovered=discovered)
        runners.append(runner)
        loop = asyncio.get_running_loop()
        # a closed stdout/stderr pipe ends the scan at once, files still written (nmap: SIGPIPE)
        PIPES.on_broken = lambda: runner.stop("broken pipe")
        outputs.on_broken_pipe = PIPES.closed
        PIPES.start(loop)

        def on_signal(signum: int) -> None:
            signalled.append(signum)
            runner.stop(signal.Signals(signum).name)
            # a second Ctrl-C while finishing up falls back to Python's KeyboardInterrupt
            loop.remove_signal_handler(signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
            except (NotImplementedError, RuntimeError):
                pass
        display = ProgressDisplay(runner.stats) if progress and wanted() else None
        if display is not None:
            display.start()
        try:
            return await runner.execute()
        finally:
            PIPES.stop()
            if display is not None:
                display.stop()

    from servprobe.net.loop import new_event_loop

    loop = new_event_loop()
    try:
        loop.run_until_complete(go())
    except (KeyboardInterrupt, BrokenPipeError):
        raise
    except InputError as exc:  # a bad line further down a streamed -iL (stdin)
        _stderr(f"error: {terminal_safe(str(exc))} (every output was closed)")
        return EXIT_USAGE
    except ClusterError as exc:  # --cluster unusable (issue 14): outputs are already closed
        _stderr(f"cluster: {terminal_safe(str(exc))} (every output was closed)")
        return 1
    except Exception as exc:  # a bug or an engine failure: outputs are already closed
        if run.debugging:
            import traceback

            traceback.print_exc()
        _stderr(f"scan failed: {terminal_safe(repr(exc))} (every output was closed; -d shows the traceback)")
        return 1
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
    if PIPES.broken:
        exit_like_sigpipe()  # quietly, as nmap dies of SIGPIPE
    for err in outputs.errors:
        _stderr(f"output error: {err}")
    if signalled:
        _stderr(f"interrupted by {signal.Signals(signalled[0]).name}; finished results were written")
        return 128 + signalled[0]  # 130 SIGINT, 143 SIGTERM, 129 SIGHUP
    failure = getattr(runners[0], "failure", None) if runners else None
    if failure:  # a --cluster run that could not finish (issue 14)
        _stderr(f"cluster: {terminal_safe(failure)}")
        return 1
    return 1 if outputs.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
