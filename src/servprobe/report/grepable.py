"""Grepable output (-oG), line per host like nmap's: `Host: A (name)<TAB>Status: Up` and
`Host: A (name)<TAB>Ports: port/state/proto/owner/service/rpc/version/, ...<TAB>Ignored State: ...`.

Fields are separated by "/" and ports by ", ", so a "/" inside a value becomes "|" (as nmap
does: ssl|http) and a comma becomes ";" is not needed because nmap keeps commas; control
characters are escaped so one host stays on one line.
"""

from __future__ import annotations

import time

from servprobe.report.base import (
    TextFileReporter,
    command_line,
    safe_text,
    split_ports,
    summary_text,
    timestr,
)
from servprobe.result import HostResult, ScanRun, ServiceResult


def _field(text: str | None) -> str:
    return safe_text(text or "").replace("/", "|")


def port_field(r: ServiceResult, service_scan: bool) -> str:
    service = r.service or ("unknown" if service_scan and r.state == "open" else "")
    if r.tunnel == "ssl" and service:
        service = f"ssl|{service}"
    if service_scan and r.method == "table" and r.service and r.state in ("open", "open|filtered"):
        service += "?"
    rpc = f"(rpc #{r.rpc.program})" if r.rpc is not None else ""
    version = r.display_version() if service_scan else ""
    return f"{r.port}/{r.state}/{r.proto}//{_field(service)}/{_field(rpc)}/{_field(version)}/"


class GrepableReporter(TextFileReporter):
    def start(self, run: ScanRun) -> None:
        self._begin(run)
        lines = [
            f"# servprobe {run.version} scan initiated {timestr(run.start)} as: {safe_text(command_line(run))}"
        ]
        if run.service_scan and run.db_path:
            lines.append(f"# Probe database: {safe_text(run.db_path)}")
        if run.verbose:
            specs = [
                f"{proto.upper()}({_n(run.ports_spec.get(proto, ''))};{run.ports_spec.get(proto, '')})"
                for proto in ("tcp", "udp")
            ]
            lines.append("# Ports scanned: " + " ".join(specs))
        self._w("\n".join(lines) + "\n")

    def port(self, result: ServiceResult) -> None:
        pass

    def host(self, host: HostResult) -> None:
        name = safe_text(host.hostnames[0]) if host.hostnames else ""
        who = f"Host: {host.address} ({name})"
        if host.status == "unknown":  # -sL
            self._w(f"{who}\tStatus: Unknown\n")
            return
        if host.status != "up":
            if self.verbose:
                self._w(f"{who}\tStatus: Down\n")
            return
        lines = [f"{who}\tStatus: Up"]
        listed, extra = list(host.ports), list(host.extra)
        if not extra and not host.extraports:
            listed, extra = split_ports(host.ports)
        line = f"{who}\tPorts: " + ", ".join(port_field(r, self.service_scan) for r in listed)
        if extra:
            line += "\tIgnored State: " + ", ".join(f"{e.state} ({e.count})" for e in extra)
        if listed or extra:
            lines.append(line)
        self._w("\n".join(lines) + "\n")

    def finish(self, run: ScanRun) -> None:
        end = run.end or time.time()
        note = " (interrupted)" if run.interrupted else ""
        self._w(f"# servprobe done at {timestr(end)} -- {summary_text(run)}{note}\n")


def _n(spec: str) -> int:
    n = 0
    for item in spec.split(","):
        if item:
            lo, _, hi = item.partition("-")
            n += (int(hi) - int(lo) + 1) if hi else 1
    return n
