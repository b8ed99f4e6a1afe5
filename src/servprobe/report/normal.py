"""Normal (human) output, laid out like nmap's: header, per-host port table, fingerprints,
"Service Info:", summary. Written to the terminal and, with -oN, to a file.

Everything printed goes through servprobe.escape.terminal_safe: a banner carrying ANSI
escapes shows them as \\x1b text instead of recolouring (or rewriting) the user's terminal.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO

from servprobe.report.base import (
    MAX_FINGERPRINTS,
    command_line,
    extra_text,
    safe_text,
    service_info,
    split_ports,
    summary_text,
    timestr,
    wrap_fingerprint,
)
from servprobe.result import HostResult, ScanRun, ScriptResult, ServiceResult

PROG = "servprobe"
FP_SEPARATOR = "==============NEXT SERVICE FINGERPRINT (SUBMIT INDIVIDUALLY)=============="


def _s(text: object) -> str:
    return safe_text(str(text))


def port_table(results: list[ServiceResult], service_scan: bool, reason: bool = False) -> list[str]:
    """The PORT STATE SERVICE [REASON] [VERSION] table, columns aligned like nmap's."""
    header = (
        ["PORT", "STATE", "SERVICE"]
        + (["REASON"] if reason else [])
        + (["VERSION"] if service_scan else [])
    )
    rows = [header]
    for r in results:
        service = r.display_service() if service_scan else _plain_service(r)
        row = [f"{r.port}/{r.proto}", r.state, _s(service)]
        if reason:
            row.append(_s(r.reason or "unknown"))
        if service_scan:
            row.append(_s(r.display_version()))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append(" ".join(cells).rstrip())
        if n and service_scan:
            lines.extend(script_lines(results[n - 1]))
    return lines


def script_lines(r: ServiceResult) -> list[str]:
    """Post-processor findings under their port, as nmap prints script output:
    `| id: first line`, following lines `| …`, the last one `|_`."""
    return _script_block(r.port_scripts())


def _script_block(scripts: list[ScriptResult]) -> list[str]:
    out: list[str] = []
    for script in scripts:
        first, *rest = script.output.split("\n")
        lines = [f"{script.id}: {first}", *rest]
        for i, line in enumerate(lines):
            out.append(("|_" if i == len(lines) - 1 else "| ") + _s(line).rstrip())
    return out


def seconds(value: float) -> str:
    """Two significant digits in fixed notation, like nmap's "0.000054s"."""
    if value <= 0:
        return "0.0"
    digits = max(1, 1 - math.floor(math.log10(value)))
    return f"{value:.{digits}f}"


def _plain_service(r: ServiceResult) -> str:
    name = r.service or "unknown"
    return f"ssl/{name}" if r.tunnel == "ssl" else name


def host_report(host: HostResult, run: ScanRun, reason: bool = False) -> list[str]:
    """One host's block, ending with an empty line."""
    names = [n for n in host.hostnames if n]
    who = f"{_s(names[0])} ({host.address})" if names else host.address
    if host.status == "unknown":  # -sL: listed, not scanned
        return [f"{PROG} scan report for {who}"]
    if host.status != "up":
        return [f"{PROG} scan report for {who} [host down]", ""]
    out = [f"{PROG} scan report for {who}"]
    latency = f" ({seconds(host.latency)}s latency)" if host.latency is not None else ""
    out.append(f"Host is up{latency}.")
    if len(names) > 1:
        out.append("Other names: " + ", ".join(_s(n) for n in names[1:]))
    if host.partial:
        out.append(
            "Warning: the scan was interrupted before this host was finished; results below are partial."
        )
    if host.timedout:
        out.append("Warning: host timed out (--host-timeout); results below are partial.")
    listed = list(host.ports)
    extra = list(host.extra)
    if not host.extra and not host.extraports:
        listed, extra = split_ports(host.ports)
    if not listed:
        total = sum(e.count for e in extra)
        if total:
            out.append(f"All {total} scanned ports on {who} are in ignored states.")
            out.append("Not shown: " + extra_text(extra))
        out.append("")
        return out
    if extra:
        out.append("Not shown: " + extra_text(extra))
    else:
        out.append("")
    out.extend(port_table(listed, run.service_scan, reason))
    # the engine only builds a fingerprint when nothing hard-matched
    fps = [r for r in listed if r.fingerprint]
    if fps and run.service_scan:
        n = len(fps)
        noun = "service" if n == 1 else "services"
        out.append(
            f"{n} {noun} unrecognized despite returning data. If you know the service/version, "
            "write a match line (check it with `servprobe match --fingerprint FILE`) for:"
        )
        for i, r in enumerate(fps[:MAX_FINGERPRINTS]):
            if i:
                out.append(FP_SEPARATOR)
            out.extend(_s(line) for line in wrap_fingerprint(r.fingerprint or ""))
        if n > MAX_FINGERPRINTS:
            out.append(f"({n - MAX_FINGERPRINTS} more fingerprints in the XML/JSON output)")
    info = service_info(listed)
    if info and run.service_scan:
        out.append("Service Info: " + _s(info))
    hostscripts = host.host_scripts() if run.service_scan else []
    if hostscripts:  # nmap: a blank line, then the block, after "Service Info:"
        out.extend(["", "Host script results:", *_script_block(hostscripts)])
    out.append("")
    return out


class NormalReporter:
    """nmap-style text; `file_mode` writes -oN's comment header/footer instead of the
    terminal's "Starting ..." / "done:" lines."""

    def __init__(
        self,
        fh: IO[str] | None = None,
        *,
        file_mode: bool = False,
        close: bool = False,
        reason: bool = False,
    ) -> None:
        self._fh = fh
        self.reason = reason  # --reason: a REASON column
        self.file_mode = file_mode
        self._close = close
        self.hosts_shown = 0
        self.down_seen = 0
        self.verbose = 0
        self._run = ScanRun(args=[], start=time.time())

    @property
    def fh(self) -> IO[str]:
        # resolved at write time: rich's live display swaps sys.stdout while it runs
        return self._fh if self._fh is not None else sys.stdout

    def _write(self, lines: list[str]) -> None:
        self.fh.write("\n".join(lines) + "\n")
        self.fh.flush()

    def start(self, run: ScanRun) -> None:
        self.verbose = run.verbose
        self._run = run
        if self.file_mode:
            lines = [
                f"# {PROG} {run.version} scan initiated {timestr(run.start)} as: {_s(command_line(run))}"
            ]
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(run.start))
            lines = [f"Starting {PROG} {run.version} at {stamp}"]
        if run.service_scan and run.db_path:
            prefix = "# " if self.file_mode else ""
            lines.append(f"{prefix}Probe database: {_s(run.db_path)}")
        self._write(lines)

    def port(self, result: ServiceResult) -> None:
        pass

    def host(self, host: HostResult) -> None:
        if host.status == "down":
            self.down_seen += 1
        if host.status == "down" and self.verbose < 1:
            return
        self.hosts_shown += 1
        self._write(host_report(host, self._run, self.reason))

    def finish(self, run: ScanRun) -> None:
        total_up = sum(1 for h in run.hosts if h.status == "up")
        lines: list[str] = []
        up = run.hosts_up if run.hosts_up is not None else total_up
        if up == 0 and self.down_seen and not run.interrupted:
            lines.append(
                "Note: Host seems down. If it is really up, but blocking our ping probes, try -Pn"
            )
        if run.interrupted:
            lines.append(
                f"{PROG}: scan interrupted; hosts marked partial above were not finished, later hosts were not scanned."
            )
        if run.service_scan and up:
            lines.append(
                "Service detection performed. Please report any incorrect results to the probe database's maintainers."
            )
        if self.file_mode:
            end = run.end or time.time()
            lines.append(f"# {PROG} done at {timestr(end)} -- {summary_text(run)}")
        else:
            lines.append(f"{PROG} done: {summary_text(run)}")
        self._write(lines)

    def close(self) -> None:
        if self._close and self._fh is not None:
            self._fh.close()
