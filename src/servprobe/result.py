"""The one result model every stage produces and every reporter consumes.

Data flows one way: targets → port scan → service scan → ServiceResult → reporters.
Reporters read these objects and never reach back into the scan.
All text fields are already printable (service bytes are escaped before they get here);
reporters still escape for their own format (XML, JSON, terminal).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Proto = Literal["tcp", "udp"]
PortState = Literal["open", "closed", "filtered", "open|filtered", "unfiltered"]
Method = Literal["probed", "table"]

# Findings nmap reports once per host (its SMB scripts are hostrule scripts): normal output
# prints them under "Host script results:", XML in <hostscript>, JSON Lines in the host line.
# They are still found per port (the SMB post-processors run on each SMB port); the first
# port's finding stands for the host.
HOST_SCRIPTS = frozenset(
    {"smb-os-discovery", "smb-security-mode", "smb2-security-mode", "smb2-time", "smb-ntlm-info"}
)


@dataclass(slots=True)
class RpcInfo:
    """What the RPC grinder (or a portmapper DUMP) found on a port."""

    program: int
    name: str
    lowver: int
    highver: int
    via: Literal["grind", "portmapper"] = "grind"


@dataclass(slots=True)
class ScriptResult:
    """What one post-processor found on a port, shown as nmap shows a version script.

    `id` is nmap's script name where one exists (amqp-info, http-server-header), else ours;
    `output` is printable text (normal output's `| id: …` lines, XML's `output` attribute);
    `elements` is the structured form (XML `<elem key=…>`/`<table>`, JSON Lines `scripts`):
    str values, lists, or nested dicts of the same.
    """

    id: str
    output: str
    elements: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ServiceResult:
    """One port of one host, with what version detection found there."""

    address: str
    port: int
    proto: Proto
    state: PortState = "open"
    reason: str = ""  # syn-ack, conn-refused, udp-response, no-response, ...
    service: str | None = None  # e.g. "http"; "rndc?"-style guesses have method="table"
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpes: list[str] = field(default_factory=list)
    tunnel: Literal["ssl"] | None = None
    method: Method = "table"
    conf: int = 3  # 10 probed, 8 tcpwrapped, 3 table
    soft: bool = False  # only a softmatch was found
    matched: str | None = None  # FILE:LINE of the line that matched
    probe: str | None = None  # probe whose response matched
    fingerprint: str | None = None  # nmap SF- fingerprint, when unrecognized
    rpc: RpcInfo | None = None
    scripts: list[ScriptResult] = field(default_factory=list)  # post-processor findings
    hostnames: list[str] = field(default_factory=list)  # of the host, for reporters
    finished: float | None = None  # unix time the result became final
    # the scan stopped (Ctrl-C, --host-timeout) before this open port's service scan ended:
    # `service` is only the port table's guess
    unfinished: bool = False
    # an internal error ended this service's scan (issue 11, bug 8): the result is the port
    # table's guess; the run summary counts these
    error: str | None = None

    @property
    def key(self) -> tuple[str, Proto, int]:
        return (self.address, self.proto, self.port)

    def display_service(self) -> str:
        """The SERVICE column as nmap prints it: ssl/http, rndc?, tcpwrapped."""
        name = self.service or "unknown"
        if self.tunnel == "ssl":
            name = f"ssl/{name}"
        if self.method == "table" and self.state in ("open", "open|filtered") and self.service:
            name += "?"
        return name

    def display_version(self) -> str:
        """The VERSION column as nmap prints it: product version (extrainfo).

        Hostname, OS and device type go to the host's "Service Info:" line, as in nmap.
        """
        parts = [p for p in (self.product, self.version) if p]
        if self.extrainfo:
            parts.append(f"({self.extrainfo})")
        if self.unfinished and not parts:
            parts.append("(service scan unfinished)")
        return " ".join(parts)

    def port_scripts(self) -> list[ScriptResult]:
        """The findings shown under this port (host-level ones go to the host)."""
        return [s for s in self.scripts if s.id not in HOST_SCRIPTS]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["display_service"] = self.display_service()
        return d


@dataclass(slots=True)
class ExtraPorts:
    """Ports of one state and protocol not listed one by one ("Not shown: 995 closed tcp
    ports (conn-refused)"); `reasons` counts why, `ports` lists them for XML extrareasons."""

    state: str
    proto: Proto
    count: int
    reasons: dict[str, int] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)


@dataclass(slots=True)
class HostResult:
    address: str
    hostnames: list[str] = field(default_factory=list)
    status: Literal["up", "down", "unknown"] = "unknown"
    reason: str = ""
    ports: list[ServiceResult] = field(default_factory=list)
    # counts of ports not listed individually, by state: {"closed": 995}
    extraports: dict[str, int] = field(default_factory=dict)
    starttime: float | None = None
    endtime: float | None = None
    # added by the scanner (issue 4): per-protocol detail of `extraports`, latency, timeout
    extra: list[ExtraPorts] = field(default_factory=list)
    latency: float | None = None  # seconds, from host discovery
    timedout: bool = False  # --host-timeout cut this host short
    hostname_types: list[str] = field(default_factory=list)  # parallel to hostnames: user|PTR
    partial: bool = False  # the scan stopped (Ctrl-C) before this host was finished

    def host_scripts(self) -> list[ScriptResult]:
        """Host-level findings (HOST_SCRIPTS), once each, sorted by id as nmap prints them."""
        found: dict[str, ScriptResult] = {}
        for r in self.ports:
            for s in r.scripts:
                if s.id in HOST_SCRIPTS:
                    found.setdefault(s.id, s)
        return [found[k] for k in sorted(found)]


@dataclass(slots=True)
class ScanRun:
    """A whole run: what was asked, what database was used, and every host."""

    args: list[str]
    start: float
    db_path: str = ""
    scan_types: list[str] = field(default_factory=list)  # "connect", "udp"
    ports_spec: dict[str, str] = field(default_factory=dict)  # {"tcp": "1-1000"} for scaninfo
    hosts: list[HostResult] = field(default_factory=list)
    end: float | None = None
    interrupted: bool = False
    version: str = "0.1.0"
    # added by the scanner (issue 4)
    service_scan: bool = True  # -sV (version detection) ran
    verbose: int = 0
    debugging: int = 0
    intensity: int = 7
    hosts_total: int | None = None  # hosts tried, when `hosts` holds only the up ones
    hosts_up: int | None = None
    # services whose scan an internal error ended (issue 11, bug 8), counted by the reporters
    # as results pass; a caller may set it when it knows better
    failed_services: int = 0
