"""`servprobe convert SCAN.xml|STORE.sqlite -oJ/-oC/-oH FILE`: render an earlier scan again.

The input is an `-oX` file (ours or nmap's: nmaprun/host/ports/service/cpe/script) or a
servprobe scan store (`--store`; the latest scan, or `--scan ID`). It is rebuilt into the
result model (servprobe.result) and fed to the same reporters a live scan uses, so a
converted file is what the scan would have written with that flag.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import IO, Any

from servprobe.escape import terminal_safe
from servprobe.report.base import Outputs, Reporter
from servprobe.report.csv import CsvReporter
from servprobe.report.html import HtmlReporter
from servprobe.report.jsonl import JsonLinesReporter
from servprobe.result import ScanRun
from servprobe.scan.inputs import host_from_xml

EXAMPLES = """\
examples:
  servprobe convert scan.xml -oH scan.html          an -oX file (ours or nmap's) as a web page
  servprobe convert nmap-scan.xml -oC ports.csv     nmap's XML as CSV
  servprobe convert ~/.local/state/servprobe/scans/scan-….sqlite -oJ - --scan 3

exit status: 0 written, 2 unreadable input or bad usage
"""


class ConvertError(Exception):
    """An input that cannot be read; the message names the file."""


def read_xml(path: Path) -> ScanRun:
    """An nmap/servprobe -oX file as a ScanRun with its hosts."""
    try:
        root = ET.parse(path).getroot()  # expat refuses entity-expansion bombs
    except (ET.ParseError, OSError) as exc:
        raise ConvertError(f"{path}: cannot read XML: {exc}") from None
    if root.tag != "nmaprun":
        raise ConvertError(f"{path}: not an nmap/servprobe XML file (root <{root.tag}>)")
    args = root.get("args", "")
    try:
        argv = shlex.split(args)[1:]
    except ValueError:
        argv = args.split()[1:]
    start = root.get("start", "")
    run = ScanRun(args=argv, start=float(start) if start.isdigit() else 0.0,
                  version=root.get("version", ""))
    run.scan_types = [si.get("type", "") for si in root.iter("scaninfo")]
    run.ports_spec = {si.get("protocol", ""): si.get("services", "")
                      for si in root.iter("scaninfo") if si.get("services")}
    run.service_scan = any(s.get("method") == "probed" for s in root.iter("service"))
    finished = root.find("runstats/finished")
    end = finished.get("time", "") if finished is not None else ""
    run.end = float(end) if end.isdigit() else None
    for host in root.iter("host"):
        h = host_from_xml(host)
        if h is not None:
            run.hosts.append(h)
    run.hosts_total = len(run.hosts)
    run.hosts_up = sum(1 for h in run.hosts if h.status == "up")
    return run


def read_store(path: Path, scan_id: int | None) -> ScanRun:
    from servprobe.store import Store, StoreError

    try:
        with Store.open(path, create=False) as store:
            return store.scan_run(scan_id)
    except StoreError as exc:
        raise ConvertError(str(exc)) from None


def kind_of(path: Path) -> str:
    """"store" or "xml", from the file's first bytes; ConvertError otherwise."""
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError as exc:
        raise ConvertError(f"{path}: {exc.strerror or exc}") from None
    if head.startswith(b"SQLite format 3\x00"):
        return "store"
    if head.lstrip().startswith(b"<"):
        return "xml"
    raise ConvertError(f"{path}: neither a servprobe store nor an XML scan file")


def read(path_text: str, scan_id: int | None = None) -> ScanRun:
    """A scan from an -oX file or a store, told apart by content."""
    path = Path(path_text)
    if kind_of(path) == "store":
        return read_store(path, scan_id)
    if scan_id is not None:
        raise ConvertError(f"{path}: --scan only applies to stores")
    return read_xml(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servprobe convert",
        description="Render an earlier scan (an -oX file, ours or nmap's, or a servprobe store) in another format.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="SCAN", help="an -oX file or a servprobe store (.sqlite)")
    p.add_argument("-oJ", metavar="FILE", help="JSON Lines (- = stdout)")
    p.add_argument("-oC", metavar="FILE", help="CSV, one row per port")
    p.add_argument("-oH", metavar="FILE", help="a self-contained HTML page")
    p.add_argument("--scan", type=int, metavar="ID", help="which scan of a store (default: the latest)")
    return p


def _open(path: str) -> tuple[IO[str], bool]:
    if path == "-":
        return sys.stdout, False
    return open(path, "w", encoding="utf-8", errors="backslashreplace", newline=""), True


def write(run: ScanRun, outputs: list[tuple[str, str]]) -> list[str]:
    """Feed `run` to a reporter per (kind, path); returns output errors."""
    reporters: list[Reporter] = []
    kinds: dict[str, Any] = {"J": JsonLinesReporter, "C": CsvReporter, "H": HtmlReporter}
    for kind, path in outputs:
        fh, close = _open(path)
        reporters.append(kinds[kind](fh, close=close))
    out = Outputs(reporters)
    hosts = list(run.hosts)
    run.hosts = []
    out.start(run)
    for h in hosts:
        for r in h.ports:
            out.port(r)
        out.host(h)
        run.hosts.append(h)
    out.finish(run)
    return out.errors


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    outputs = [(k, getattr(opts, f"o{k}")) for k in ("J", "C", "H") if getattr(opts, f"o{k}")]
    if not outputs:
        print("servprobe convert: error: name at least one output (-oJ, -oC or -oH FILE)", file=sys.stderr)
        return 2
    if sum(1 for _, p in outputs if p == "-") > 1:
        print("servprobe convert: error: only one output can go to stdout", file=sys.stderr)
        return 2
    try:
        run = read(opts.input, opts.scan)
    except ConvertError as exc:
        print(f"servprobe convert: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    try:
        errors = write(run, outputs)
    except OSError as exc:
        print(f"servprobe convert: cannot write output: {terminal_safe(str(exc))}", file=sys.stderr)
        return 2
    for e in errors:
        print(f"servprobe convert: output error: {terminal_safe(e)}", file=sys.stderr)
    return 1 if errors else 0
