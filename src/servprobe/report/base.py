"""What every reporter shares: the event interface, the fan-out, and nmap's presentation rules.

A reporter hears four events, in this order: `start(run)`, then any number of `port(result)`
(a port's final result, as soon as known — for streaming formats) and `host(host)` (a host
is complete: its listed ports, extraports, status), then `finish(run)`. Reporters write and
flush as they go, so a killed scan leaves every completed host on disk.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Protocol

from servprobe.escape import terminal_safe
from servprobe.result import ExtraPorts, HostResult, ScanRun, ServiceResult


class TextFileReporter:
    """A reporter writing text to a file it flushes after every write (XML, grepable)."""

    def __init__(self, fh: IO[str], *, close: bool = False) -> None:
        self.fh = fh
        self._close = close
        self.service_scan = True
        self.verbose = 0

    def _w(self, text: str) -> None:
        self.fh.write(text)
        self.fh.flush()

    def _begin(self, run: ScanRun) -> None:
        self.service_scan = run.service_scan
        self.verbose = run.verbose

    def close(self) -> None:
        if self._close:
            self.fh.close()


# nmap lists a state's ports one by one only when there are few of them
COLLAPSE_THRESHOLD = 25
# at most this many fingerprints per host in normal output (nmap: 9)
MAX_FINGERPRINTS = 9


class Reporter(Protocol):
    def start(self, run: ScanRun) -> None: ...
    def port(self, result: ServiceResult) -> None: ...
    def host(self, host: HostResult) -> None: ...
    def finish(self, run: ScanRun) -> None: ...


class Outputs:
    """Sends each event to every reporter; a failing reporter does not stop the others."""

    def __init__(
        self, reporters: Iterable[Reporter] = (), on_broken_pipe: Callable[[], None] | None = None
    ) -> None:
        self.reporters = list(reporters)
        self.errors: list[str] = []
        # a reporter whose pipe closed (`| head`) is dropped and this is called: the CLI then
        # ends the scan quietly, like nmap's SIGPIPE (servprobe.report.pipes)
        self.on_broken_pipe = on_broken_pipe
        self.failed = 0  # services an internal error ended (issue 11, bug 8), for the summary

    def _each(self, method: str, arg: object) -> None:
        for r in list(self.reporters):
            try:
                getattr(r, method)(arg)
            except BrokenPipeError:
                self.reporters.remove(r)
                if self.on_broken_pipe is None:
                    raise
                self.on_broken_pipe()
            except OSError as exc:
                self.errors.append(f"{type(r).__name__}: {exc}")

    def start(self, run: ScanRun) -> None:
        self._each("start", run)

    def port(self, result: ServiceResult) -> None:
        self._each("port", result)

    def host(self, host: HostResult) -> None:
        # counted per host (a host's line ends its ports), not per port() call: a port may be
        # streamed early and listed again with its host
        self.failed += sum(1 for r in host.ports if r.error)
        self._each("host", host)

    def finish(self, run: ScanRun) -> None:
        run.failed_services = max(run.failed_services, self.failed)
        self._each("finish", run)
        for r in self.reporters:
            close = getattr(r, "close", None)
            if close is not None:
                try:
                    close()
                except OSError as exc:
                    self.errors.append(f"{type(r).__name__}: {exc}")


# states nmap never folds, whatever their count (PortList::isIgnoredState); with --open,
# the states that may still be open are kept too
NEVER_FOLDED = frozenset({"open"})
KEPT_WITH_OPEN_ONLY = frozenset({"open", "open|filtered", "unfiltered"})


def folded_states(
    counts: dict[str, int], threshold: int = COLLAPSE_THRESHOLD, open_only: bool = False
) -> set[str]:
    """The states summarised as "Not shown" instead of listed — nmap's rule: a state is
    folded when its port count, summed over every protocol of the host, exceeds `threshold`
    (so 20 closed tcp + 10 closed udp ports fold both); `open` never is; with --open every
    state that cannot be open is."""
    if open_only:
        return {s for s, n in counts.items() if n and s not in KEPT_WITH_OPEN_ONLY}
    return {s for s, n in counts.items() if n > threshold and s not in NEVER_FOLDED}


def collapse_ports(
    results: Iterable[ServiceResult],
    bulk: Iterable[tuple[str, str, str, Sequence[int]]] = (),
    make: Callable[[str, int, str, str], ServiceResult] | None = None,
    threshold: int = COLLAPSE_THRESHOLD,
    open_only: bool = False,
) -> tuple[list[ServiceResult], list[ExtraPorts]]:
    """The one port-collapsing function (runner and every reporter): (listed, extra).

    `results` are ports with a result each; `bulk` are (proto, state, reason, ports) groups
    kept as bare port numbers (65,535 closed ports need no objects): those of a folded state
    are only counted, the others become `make(proto, port, state, reason)` results. Listed
    ports are TCP first, by port; extra groups by count, largest first (nmap's order)."""
    results = list(results)
    bulk = list(bulk)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.state] = counts.get(r.state, 0) + 1
    for _, state, _, ports in bulk:
        counts[state] = counts.get(state, 0) + len(ports)
    folded = folded_states(counts, threshold, open_only)
    listed: list[ServiceResult] = []
    groups: dict[tuple[str, str], tuple[dict[str, int], list[int]]] = {}
    for r in results:
        if r.state in folded:
            reasons, ports = groups.setdefault((r.proto, r.state), ({}, []))
            reason = r.reason or "unknown"
            reasons[reason] = reasons.get(reason, 0) + 1
            ports.append(r.port)
        else:
            listed.append(r)
    for proto, state, reason, ports in bulk:
        if state in folded:
            reasons, members = groups.setdefault((proto, state), ({}, []))
            reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + len(ports)
            members.extend(ports)
        elif make is not None:
            listed.extend(make(proto, port, state, reason) for port in ports)
    extra = [
        ExtraPorts(state, proto, len(ports), reasons, sorted(ports))  # type: ignore[arg-type]
        for (proto, state), (reasons, ports) in groups.items()
    ]
    listed.sort(key=lambda r: (r.proto != "tcp", r.port))
    extra.sort(key=lambda e: (-e.count, e.proto != "tcp", e.proto, e.state))
    return listed, extra


def split_ports(
    results: Iterable[ServiceResult], threshold: int = COLLAPSE_THRESHOLD
) -> tuple[list[ServiceResult], list[ExtraPorts]]:
    """collapse_ports for ports that all have a result (a host built without the runner)."""
    return collapse_ports(results, threshold=threshold)


def extra_text(extra: Iterable[ExtraPorts]) -> str:
    """ "995 closed tcp ports (conn-refused), 3 filtered tcp ports (no-response)"."""
    parts = []
    for e in extra:
        reasons = ", ".join(
            f"{n} {r}" if len(e.reasons) > 1 else r
            for r, n in sorted(e.reasons.items(), key=lambda kv: -kv[1])
        )
        noun = "port" if e.count == 1 else "ports"
        parts.append(f"{e.count} {e.state} {e.proto} {noun}" + (f" ({reasons})" if reasons else ""))
    return ", ".join(parts)


def service_info(results: Iterable[ServiceResult]) -> str:
    """nmap's "Service Info:" line: hosts, OSs, device types and OS CPEs over all ports."""
    hosts: list[str] = []
    oses: list[str] = []
    devices: list[str] = []
    cpes: list[str] = []
    for r in results:
        for value, acc in ((r.hostname, hosts), (r.ostype, oses), (r.devicetype, devices)):
            if value and value not in acc:
                acc.append(value)
        for cpe in r.cpes:
            if (cpe.startswith("cpe:/o") or cpe.startswith("cpe:/h")) and cpe not in cpes:
                cpes.append(cpe)
    parts = []
    if hosts:
        parts.append(("Hosts: " if len(hosts) > 1 else "Host: ") + ", ".join(hosts))
    if oses:
        parts.append(("OSs: " if len(oses) > 1 else "OS: ") + ", ".join(oses))
    if devices:
        parts.append(("Devices: " if len(devices) > 1 else "Device: ") + ", ".join(devices))
    if cpes:
        parts.append("CPE: " + ", ".join(cpes))
    return "; ".join(parts)


def unwrap_fingerprint(fp: str) -> str:
    """A fingerprint as one string, whether it arrived whole or in nmap's SF: lines."""
    lines = fp.strip().splitlines()
    if not lines:
        return ""
    return lines[0] + "".join(line[3:] if line.startswith("SF:") else line for line in lines[1:])


def wrap_fingerprint(fp: str, width: int = 75) -> list[str]:
    """nmap's layout: the first chunk as is, the following ones prefixed with "SF:"."""
    fp = unwrap_fingerprint(fp)
    chunks = [fp[i : i + width] for i in range(0, len(fp), width)] or [""]
    return [chunks[0]] + [f"SF:{c}" for c in chunks[1:]]


def port_count(spec: str) -> int:
    """How many ports a compact list like "1-3,5" names (XML's numservices)."""
    n = 0
    for item in spec.split(","):
        lo, _, hi = item.strip().partition("-")
        if lo:
            n += (int(hi) - int(lo) + 1) if hi else 1
    return n


def host_counts(run: ScanRun) -> tuple[int, int]:
    """(total, up) for the summary line."""
    total = run.hosts_total if run.hosts_total is not None else len(run.hosts)
    up = run.hosts_up if run.hosts_up is not None else sum(1 for h in run.hosts if h.status == "up")
    return total, up


def summary_text(run: ScanRun, prog: str = "servprobe") -> str:
    total, up = host_counts(run)
    elapsed = (run.end or time.time()) - run.start
    addrs = "IP address" if total == 1 else "IP addresses"
    hosts = "host" if up == 1 else "hosts"
    text = f"{total} {addrs} ({up} {hosts} up) scanned in {elapsed:.2f} seconds"
    if run.failed_services:
        n = run.failed_services
        text += (
            f"; {n} {'service' if n == 1 else 'services'} failed (internal error, details with -d)"
        )
    return text


def timestr(t: float) -> str:
    """nmap's ctime-like stamp: "Tue Nov 24 23:26:10 2026"."""
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(t))


def command_line(run: ScanRun, prog: str = "servprobe") -> str:
    import shlex

    return " ".join([prog, *(shlex.quote(a) for a in run.args)])


_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(text: object) -> str:
    """Text for a terminal or a text file: control characters and lone surrogates (which no
    encoder accepts) written as \\xHH."""
    return _SURROGATE.sub(lambda m: f"\\x{ord(m.group()):04x}", terminal_safe(str(text)))


def write(fh: IO[str], text: str) -> None:
    fh.write(text)
    fh.flush()
