"""CSV output (-oC): one row per listed port, RFC 4180 (CRLF rows, fields quoted as needed).

Columns: host, hostname, proto, port, state, service, product, version, extrainfo, tunnel,
method, conf, cpe (several CPEs joined by a space), unfinished ("yes" when the scan stopped
before the port's service scan ended). Rows are written when a host is complete (its names
are known by then) and flushed, so an interrupted scan leaves every finished host on disk.
Service text is written as is apart from control characters (shown as \\xHH): a cell can
never break a row, and csv quoting keeps commas, quotes and newlines inert. A service-supplied
cell that a spreadsheet would take for a formula (starting with = + - @) gets a leading `'`
(OWASP's CSV-injection rule): a banner must not run a formula in the reader's spreadsheet.
"""

from __future__ import annotations

import csv
from typing import IO

from servprobe.report.base import safe_text, split_ports
from servprobe.result import HostResult, ScanRun, ServiceResult

COLUMNS = (
    "host",
    "hostname",
    "proto",
    "port",
    "state",
    "service",
    "product",
    "version",
    "extrainfo",
    "tunnel",
    "method",
    "conf",
    "cpe",
    "unfinished",
)


_FORMULA_START = ("=", "+", "-", "@")


def row(r: ServiceResult, hostname: str = "") -> list[str]:
    """The CSV cells of one port."""

    def s(value: object) -> str:
        if value is None:
            return ""
        text = safe_text(str(value))
        return "'" + text if text.startswith(_FORMULA_START) else text

    return [
        r.address,
        s(hostname),
        r.proto,
        str(r.port),
        r.state,
        s(r.service),
        s(r.product),
        s(r.version),
        s(r.extrainfo),
        s(r.tunnel),
        r.method,
        str(r.conf),
        s(" ".join(r.cpes)),
        "yes" if getattr(r, "unfinished", False) else "",
    ]


class CsvReporter:
    """A reporter (servprobe.report.base) writing CSV rows host by host."""

    def __init__(self, fh: IO[str], *, close: bool = False) -> None:
        self.fh = fh
        self._close = close
        # RFC 4180: CRLF line ends, a field quoted when it holds , " CR or LF
        self.writer = csv.writer(fh, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)

    def start(self, run: ScanRun) -> None:
        self.writer.writerow(COLUMNS)
        self.fh.flush()

    def port(self, result: ServiceResult) -> None:
        pass  # rows go out with their host, whose names are final by then

    def host(self, host: HostResult) -> None:
        listed = list(host.ports)
        if not host.extra and not host.extraports:
            listed, _ = split_ports(listed)
        name = host.hostnames[0] if host.hostnames else ""
        for r in listed:
            self.writer.writerow(row(r, name))
        self.fh.flush()

    def finish(self, run: ScanRun) -> None:
        self.fh.flush()

    def close(self) -> None:
        if self._close:
            self.fh.close()
