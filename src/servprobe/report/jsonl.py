"""JSON Lines output (-oJ): one object per line, streamed.

Line types (field "type"): "start" (run parameters, probe database), "port" (a port's final
ServiceResult, written the moment it is known), "host" (a completed host: status, names,
latency, ports summarised as extraports, host-level "hostscripts"), "summary" (last line:
counts, elapsed, interrupted, failed_services).
Strings are valid Unicode whatever a service sent (lone surrogates are written as \\xHH
text), so every line parses with any strict JSON parser.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import IO, Any

from servprobe.report.base import host_counts, split_ports
from servprobe.result import HostResult, ScanRun, ScriptResult, ServiceResult

_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()):04x}", value)
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(obj: dict[str, Any]) -> str:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")  # the common case: nothing to clean
    except UnicodeEncodeError:
        text = json.dumps(_clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text


_FIELDS = [f.name for f in dataclasses.fields(ServiceResult)]


def port_dict(r: ServiceResult) -> dict[str, Any]:
    """ServiceResult as JSON-ready data (shallow: asdict's deep copies cost more than the scan
    of a small host)."""
    d: dict[str, Any] = {"type": "port"}
    for name in _FIELDS:
        d[name] = getattr(r, name)
    d["cpes"] = list(r.cpes)
    d["hostnames"] = list(r.hostnames)
    d["rpc"] = dataclasses.asdict(r.rpc) if r.rpc is not None else None
    # post-processor findings by script id, as nmap's XML keys them
    d["scripts"] = scripts_dict(r.port_scripts())
    d["display_service"] = r.display_service()
    d["display_version"] = r.display_version()
    return d


def scripts_dict(scripts: list[ScriptResult]) -> dict[str, Any]:
    return {sc.id: {"output": sc.output, "elements": sc.elements} for sc in scripts}


class JsonLinesReporter:
    def __init__(self, fh: IO[str], *, close: bool = False) -> None:
        self.fh = fh
        self._close = close
        # ports already written, of hosts not reported yet: a host's line ends its ports, so
        # its keys are dropped then (memory stays flat in the number of hosts)
        self.seen: dict[str, set[tuple[str, int]]] = {}
        self.verbose = 0

    def _w(self, obj: dict[str, Any]) -> None:
        self.fh.write(dumps(obj) + "\n")
        self.fh.flush()

    def start(self, run: ScanRun) -> None:
        self.verbose = run.verbose
        self._w(
            {
                "type": "start",
                "scanner": "servprobe",
                "version": run.version,
                "args": run.args,
                "start": run.start,
                "db": run.db_path or None,
                "service_scan": run.service_scan,
                "scan_types": run.scan_types,
                "ports": run.ports_spec,
            }
        )

    def port(self, result: ServiceResult) -> None:
        seen = self.seen.setdefault(result.address, set())
        key = (result.proto, result.port)
        if key in seen:
            return
        seen.add(key)
        self._w(port_dict(result))

    def host(self, host: HostResult) -> None:
        if host.status == "down" and self.verbose < 1:
            self.seen.pop(host.address, None)
            return  # a /16 sweep would otherwise write a line per empty address
        listed, extra = list(host.ports), list(host.extra)
        if not extra and not host.extraports:
            listed, extra = split_ports(host.ports)
        for r in listed:
            self.port(r)  # listed closed/filtered ports, and anything not streamed yet
        self.seen.pop(host.address, None)
        self._w(
            {
                "type": "host",
                "address": host.address,
                "hostnames": host.hostnames,
                "status": host.status,
                "reason": host.reason,
                "latency": host.latency,
                "timedout": host.timedout,
                "partial": host.partial,
                "starttime": host.starttime,
                "endtime": host.endtime,
                "ports": len(listed),
                # host-level findings (nmap's <hostscript>: its SMB scripts)
                "hostscripts": scripts_dict(host.host_scripts()),
                "extraports": [
                    {"state": e.state, "proto": e.proto, "count": e.count, "reasons": e.reasons}
                    for e in extra
                ],
            }
        )

    def finish(self, run: ScanRun) -> None:
        end = run.end or time.time()
        total, up = host_counts(run)
        self._w(
            {
                "type": "summary",
                "hosts_total": total,
                "hosts_up": up,
                "start": run.start,
                "end": end,
                "elapsed": round(end - run.start, 3),
                "interrupted": run.interrupted,
                "failed_services": run.failed_services,
                "db": run.db_path or None,
            }
        )

    def close(self) -> None:
        if self._close:
            self.fh.close()
