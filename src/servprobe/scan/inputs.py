"""`-iL FILE` inputs from other tools: per-host port lists, format detected from the content.

Formats (names for `--input-format`):
  targets       nmap's target list (whitespace-separated specs, `#` comments) — scanned as usual
  hostport      `host:port`, `[v6addr]:port`, `host:udp/53` or `host:53/udp`, one a line (naabu, RustScan)
  masscan-oL    `open tcp 22 1.2.3.4 1700000000` (`#masscan` / `# end` comment lines)
  masscan-oJ    a JSON array, one `{"ip":…, "ports":[{"port":…,"proto":…,"status":…}]}` a line
  masscan-oD    NDJSON: `{"ip":…,"port":…,"proto":…,"rec_type":"status","data":{"status":…}}`
  masscan-oX    masscan's XML: one `<host>` per port (merged per host here)
  grepable      `Host: 1.2.3.4 ()\tPorts: 22/open/tcp//ssh//` lines: masscan -oG or nmap -oG
  naabu         JSON Lines: `{"host":…,"ip":…,"port":22,"protocol":"tcp",…}`
  zmap          CSV with a header naming `saddr` and `sport` (`zmap -O csv -f saddr,sport`)
  nmap-xml      nmap's or servprobe's `-oX`: the open ports of each host of an earlier scan

Lines are read one at a time, never the whole input. A file is merged per host over all of
it (masscan writes ports in random order, -oX one <host> per port): each host is scanned
once, on every port listed for it; memory grows with the number of distinct hosts (about
450 bytes each: 43 MB for 100,000 hosts), not with the file's size. `-iL -` is scanned while the pipe
is still open: hosts are merged within a window of STREAM_WINDOW hosts and handed to the scan
whenever the input pauses for IDLE_FLUSH seconds; a host that shows up again after that is
scanned again, on its later ports.

A line that does not fit the detected format raises InputError naming FILE:LINE and the
text; with `skip_bad` a warning is printed instead and the line is left out.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import json
import queue
import re
import socket
import sys
import threading
import xml.etree.ElementTree as ET
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from servprobe.escape import terminal_safe
from servprobe.result import ExtraPorts, HostResult, ScriptResult, ServiceResult
from servprobe.scan.targets import HostTarget, TargetList, default_resolver

FORMATS = (
    "targets", "hostport", "masscan-oL", "masscan-oJ", "masscan-oD", "masscan-oX",
    "grepable", "naabu", "zmap", "nmap-xml",
)
PER_PORT = frozenset(FORMATS) - {"targets"}
OPEN_STATES = frozenset({"open", "open|filtered"})
STREAM_WINDOW = 65536  # hosts of a stream (stdin) kept open for merging (~20 MB at most)

PortMap = tuple[tuple[str, tuple[int, ...]], ...]  # (("tcp", (22, 80)), ("udp", (53,)))


class InputError(ValueError):
    """A line of an input file that is not in its format; the message names FILE:LINE."""


class _Idle:
    """Marker in a line/entry/host stream: the input paused (a pipe with nothing new)."""

    def __repr__(self) -> str:
        return "IDLE"


IDLE = _Idle()
IDLE_FLUSH = 0.5  # seconds without a new line on stdin before pending hosts go to the scan
_QUEUED_LINES = 10000  # read-ahead bound: a fast producer waits instead of filling memory


def timed_lines(lines: Iterator[tuple[int, str]], idle: float = IDLE_FLUSH) -> Iterator[Any]:
    """`lines`, read by a thread of their own, with IDLE whenever nothing new arrived for
    `idle` seconds: a pipe (masscan … | servprobe -iL -) is scanned while it is still open."""
    q: queue.Queue[Any] = queue.Queue(maxsize=_QUEUED_LINES)
    end = object()

    def reader() -> None:
        try:
            for item in lines:
                q.put(item)
        except BaseException as exc:  # an unreadable stream: raised in the consumer
            q.put(exc)
        q.put(end)

    threading.Thread(target=reader, name="servprobe-input", daemon=True).start()
    while True:
        try:
            item = q.get(timeout=idle)
        except queue.Empty:
            yield IDLE
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass(frozen=True, slots=True)
class Entry:
    """One open port of one host, as an input file lists it."""

    host: str  # address or name, as written
    proto: str
    port: int
    hostname: str | None = None


class _Bad(Exception):
    """This line does not fit the format (caught and turned into an InputError)."""


# -- reading lines -------------------------------------------------------------------------


def _numbered(path: str, stdin: TextIO | None) -> Iterator[tuple[int, str]]:
    if path == "-":
        fh = stdin if stdin is not None else sys.stdin
        yield from enumerate(fh, 1)
        return
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read target file {path!r}: {exc.strerror}") from None
    with fh:
        yield from enumerate(fh, 1)


_MASSCAN_LIST = re.compile(r"^(open|closed|banner)\s+(tcp|udp|sctp)\s+\d+\s+\S+")
_HOSTPORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^\s:/\[\]#,]+))"
    r":(?:(?P<proto>tcp|udp)/)?(?P<port>\d{1,5})(?:/(?P<proto2>tcp|udp))?$"
)


def detect(first: str) -> str:
    """The format of an input whose first meaningful line is `first`."""
    s = first.strip()
    low = s.lower()
    if s.startswith("<"):
        return "nmap-xml"  # masscan-oX is the same element layout; see _xml_entries
    if s.startswith("[") and not _HOSTPORT.match(s):
        return "masscan-oJ"
    if s.startswith("{"):
        try:
            obj = json.loads(s.rstrip(","))
        except ValueError:
            return "masscan-oJ"  # masscan -oJ records are not always valid alone
        if isinstance(obj, dict):
            if "ports" in obj:
                return "masscan-oJ"
            if "rec_type" in obj or "data" in obj:
                return "masscan-oD"
            return "naabu"
    if low.startswith("#masscan") or _MASSCAN_LIST.match(s):
        return "masscan-oL"
    if s.startswith(("Host: ", "Timestamp: ")) or low.startswith("# masscan"):
        return "grepable"
    fields = [f.strip() for f in s.split(",")]
    if "saddr" in fields:
        return "zmap"
    if _HOSTPORT.match(s):
        try:
            ipaddress.ip_address(s)  # a bare IPv6 address (::1) is a target, not host:port
        except ValueError:
            return "hostport"
    return "targets"


def _meaningful(line: str) -> bool:
    s = line.strip()
    return bool(s) and (not s.startswith("#") or s.lower().startswith(("#masscan", "# masscan")))


class PortInput:
    """One -iL source of per-port entries; iterate for Entry objects, in file order."""

    def __init__(
        self,
        path: str,
        fmt: str,
        lines: Iterator[tuple[int, str]],
        *,
        skip_bad: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.name = "<stdin>" if path == "-" else path
        self.format = fmt
        self._lines = lines
        self.skip_bad = skip_bad
        self.warn = warn or _warn_stderr
        self.bad_lines = 0
        self._zmap_cols: dict[str, int] | None = None

    def _bad(self, lineno: int, text: str, why: str) -> None:
        shown = terminal_safe(text.rstrip("\r\n")[:200])
        msg = f"{self.name}:{lineno}: {why} ({self.format} input): {shown!r}"
        if not self.skip_bad:
            raise InputError(msg)
        self.bad_lines += 1
        self.warn(f"{msg}; skipped (--skip-bad-input)")

    def __iter__(self) -> Iterator[Entry]:
        if self.format in ("nmap-xml", "masscan-oX"):
            yield from self._xml_entries()
            return
        parse = _LINE_PARSERS[self.format]
        for item in self._lines:
            if item is IDLE:
                yield IDLE  # type: ignore[misc]
                continue
            lineno, line = item
            s = line.strip()
            if not s:
                continue
            try:
                if self.format == "zmap":
                    entries = self._zmap(s)
                else:
                    entries = parse(s)
            except _Bad as exc:
                self._bad(lineno, line, str(exc))
                continue
            yield from entries

    # zmap: the header names the columns
    def _zmap(self, s: str) -> list[Entry]:
        fields = [f.strip() for f in s.split(",")]
        if self._zmap_cols is None:
            if "saddr" not in fields or "sport" not in fields:
                raise _Bad("zmap CSV header must name saddr and sport (zmap -O csv -f saddr,sport)")
            self._zmap_cols = {name: i for i, name in enumerate(fields)}
            return []
        cols = self._zmap_cols
        if len(fields) < len(cols):
            raise _Bad(f"expected {len(cols)} fields")
        # zmap's default filter already drops failures; honour the columns when present
        if "success" in cols and fields[cols["success"]] in ("0", "false"):
            return []
        if "classification" in cols and fields[cols["classification"]] == "rst":
            return []
        return [Entry(_address(fields[cols["saddr"]]), "tcp", _port(fields[cols["sport"]]))]

    def _xml_entries(self) -> Iterator[Entry]:
        parser = ET.XMLPullParser(events=("start", "end"))
        root: ET.Element | None = None
        lineno, line = 0, ""

        def events() -> Iterator[tuple[str, ET.Element]]:
            nonlocal root
            for event, elem in parser.read_events():
                if event == "start" and root is None:
                    root = elem
                    if elem.tag != "nmaprun":
                        raise InputError(
                            f"{self.name}:{lineno}: not an nmap/masscan XML scan (root <{elem.tag}>)"
                        )
                    if elem.get("scanner") == "masscan":
                        self.format = "masscan-oX"
                yield event, elem

        try:
            for item in self._lines:
                if item is IDLE:
                    yield IDLE  # type: ignore[misc]
                    continue
                lineno, line = item
                parser.feed(line)
                for event, elem in events():
                    if event == "end" and elem.tag == "host":
                        yield from _xml_host(elem)
                        elem.clear()
                        if root is not None:
                            root.clear()  # keep memory flat whatever the file size
            parser.close()
            yield from (e for ev, el in events() if ev == "end" and el.tag == "host" for e in _xml_host(el))
        except ET.ParseError as exc:
            where = exc.position[0] if exc.position else lineno
            raise InputError(f"{self.name}:{where}: not well-formed XML ({exc}): {terminal_safe(line.strip()[:200])!r}") from None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def _xml_service(r: ServiceResult, svc: ET.Element) -> None:
    r.service = svc.get("name")
    r.product = svc.get("product")
    r.version = svc.get("version")
    r.extrainfo = svc.get("extrainfo")
    r.hostname = svc.get("hostname")
    r.ostype = svc.get("ostype")
    r.devicetype = svc.get("devicetype")
    r.tunnel = "ssl" if svc.get("tunnel") == "ssl" else None
    r.method = "probed" if svc.get("method") == "probed" else "table"
    conf = svc.get("conf", "")
    r.conf = int(conf) if conf.isdigit() else (10 if r.method == "probed" else 3)
    r.fingerprint = svc.get("servicefp")
    r.cpes = [c.text for c in svc.iter("cpe") if c.text]


def host_from_xml(host: ET.Element) -> HostResult | None:
    """One `<host>` of nmap's XML layout (nmap's, servprobe's, masscan's) as a HostResult;
    None without an IP address. A host without <status> (masscan) counts as up."""
    address = next((a.get("addr") for a in host.iter("address")
                    if a.get("addrtype") in ("ipv4", "ipv6") and a.get("addr")), None)
    if not address:
        return None
    h = HostResult(address=address, starttime=_float(host.get("starttime")),
                   endtime=_float(host.get("endtime")))
    status = host.find("status")
    h.status = "up" if status is None else status.get("state", "unknown")  # type: ignore[assignment]
    h.reason = "" if status is None else status.get("reason", "")
    for hn in host.iter("hostname"):
        if hn.get("name"):
            h.hostnames.append(hn.get("name", ""))
            h.hostname_types.append(hn.get("type", "user"))
    for ex in host.iter("extraports"):
        count = int(ex.get("count", "0") or 0) if (ex.get("count") or "0").isdigit() else 0
        state = ex.get("state", "closed")
        reasons = {er.get("reason", ""): int(er.get("count", "0")) for er in ex.iter("extrareasons")
                   if (er.get("count") or "").isdigit()}
        proto = next((er.get("proto") for er in ex.iter("extrareasons") if er.get("proto")), "tcp")
        h.extra.append(ExtraPorts(state, proto, count, reasons))  # type: ignore[arg-type]
        h.extraports[state] = h.extraports.get(state, 0) + count
    for port in host.iter("port"):
        portid = port.get("portid", "")
        if not (portid.isascii() and portid.isdigit()):
            continue
        st = port.find("state")
        r = ServiceResult(address=address, port=int(portid), proto=port.get("protocol", "tcp"),  # type: ignore[arg-type]
                          state=(st.get("state", "open") if st is not None else "open"),  # type: ignore[arg-type]
                          reason=(st.get("reason", "") if st is not None else ""))
        svc = port.find("service")
        if svc is not None:
            _xml_service(r, svc)
        r.scripts = [ScriptResult(sc.get("id", ""), sc.get("output", "")) for sc in port.iter("script")]
        r.hostnames = list(h.hostnames)
        h.ports.append(r)
    return h


def _xml_host(host: ET.Element) -> list[Entry]:
    """The open ports of one <host> of an earlier scan (down hosts: none)."""
    h = host_from_xml(host)
    if h is None or h.status != "up":
        return []
    name = h.hostnames[0] if h.hostnames else None
    out = []
    for r in h.ports:
        if r.state in OPEN_STATES and r.proto in ("tcp", "udp") and 0 < r.port < 65536:
            out.append(Entry(h.address, r.proto, r.port, name))
    return out


# -- per-line parsers ------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise _Bad(f"bad port {text!r}")
    return int(text)


@functools.lru_cache(maxsize=4096)  # tools repeat a host on every port line
def _address(text: str) -> str:
    """The canonical form of an IP address; _Bad if it is none."""
    try:
        # fast path: an IPv4 address already written canonically (what the tools write)
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except (OSError, ValueError):
        pass
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _Bad(f"bad address {text!r}") from None


def _proto(text: str) -> str:
    p = text.lower()
    if p not in ("tcp", "udp"):
        raise _Bad(f"unsupported protocol {text!r}")
    return p


def _hostport(s: str) -> list[Entry]:
    s = s.split("#", 1)[0].strip()
    if not s:
        return []
    m = _HOSTPORT.match(s)
    if not m:
        raise _Bad("expected HOST:PORT, [IPv6]:PORT or HOST:tcp/PORT")
    if m.group("v6"):
        host = _address(m.group("v6"))
    else:
        host = m.group("host")
    if m.group("proto") and m.group("proto2"):
        raise _Bad("the protocol is given twice")
    return [Entry(host, m.group("proto") or m.group("proto2") or "tcp", _port(m.group("port")))]


def _masscan_list(s: str) -> list[Entry]:
    if s.startswith("#"):
        return []
    parts = s.split()
    if len(parts) < 4 or parts[0] not in ("open", "closed", "banner"):
        raise _Bad("expected 'open PROTO PORT ADDRESS TIMESTAMP'")
    if parts[0] != "open":
        return []  # closed ports and banner lines carry nothing to probe
    if parts[1] == "sctp":
        return []
    return [Entry(_address(parts[3]), _proto(parts[1]), _port(parts[2]))]


def _json_obj(s: str) -> dict[str, object]:
    try:
        obj = json.loads(s.rstrip(","))
    except ValueError:
        raise _Bad("not valid JSON") from None
    if not isinstance(obj, dict):
        raise _Bad("expected a JSON object")
    return obj


def _masscan_json(s: str) -> list[Entry]:
    if s in ("[", "]", ","):
        return []
    obj = _json_obj(s.lstrip(","))
    ip, ports = obj.get("ip"), obj.get("ports")
    if "finished" in obj:
        return []
    if not isinstance(ip, str) or not isinstance(ports, list):
        raise _Bad('expected {"ip": ..., "ports": [...]}')
    out = []
    for p in ports:
        if not isinstance(p, dict):
            raise _Bad("ports items must be objects")
        if p.get("status") not in OPEN_STATES:
            continue  # banner records have no status; closed ports have "closed"
        out.append(Entry(_address(ip), _proto(str(p.get("proto", "tcp"))), _port(str(p.get("port")))))
    return out


def _masscan_ndjson(s: str) -> list[Entry]:
    obj = _json_obj(s)
    if obj.get("rec_type", "status") != "status":
        return []
    data = obj.get("data")
    status = data.get("status") if isinstance(data, dict) else obj.get("status")
    ip = obj.get("ip")
    if not isinstance(ip, str) or "port" not in obj:
        raise _Bad('expected {"ip": ..., "port": ..., "proto": ...}')
    if status not in OPEN_STATES:
        return []
    return [Entry(_address(ip), _proto(str(obj.get("proto", "tcp"))), _port(str(obj.get("port"))))]


def _naabu(s: str) -> list[Entry]:
    obj = _json_obj(s)
    ip, host, port = obj.get("ip"), obj.get("host"), obj.get("port")
    if not isinstance(ip, str) and not isinstance(host, str):
        raise _Bad('expected {"ip": ..., "port": ...}')
    if isinstance(port, dict):  # naabu 1.x wrote {"Port": 22, "Protocol": 0}
        port = port.get("Port")
    proto = str(obj.get("protocol") or "tcp")
    if isinstance(ip, str) and ip:
        name = host if isinstance(host, str) and host and host != ip else None
        return [Entry(_address(ip), _proto(proto), _port(str(port)), name)]
    return [Entry(str(host), _proto(proto), _port(str(port)))]


_GREP_PORT = re.compile(r"(\d+)/([^/]*)/([^/]*)/")


def _grepable(s: str) -> list[Entry]:
    if s.startswith("#"):
        return []
    fields = dict(
        (k.strip(), v.strip())
        for k, _, v in (f.partition(":") for f in s.split("\t"))
        if _ == ":"
    )
    host = fields.get("Host")
    if not host:
        raise _Bad("expected 'Host: ADDRESS (NAME)\\tPorts: PORT/STATE/PROTO//...'")
    address, _, rest = host.partition(" ")
    name = rest.strip().strip("()") or None
    ports = fields.get("Ports")
    if ports is None:
        return []  # "Status: Up" lines, masscan banner lines
    out = []
    for item in re.split(r",\s*(?=\d+/)", ports):
        m = _GREP_PORT.match(item.strip())
        if not m:
            raise _Bad(f"bad port entry {item.strip()!r}")
        port, state, proto = m.groups()
        if state in OPEN_STATES and proto in ("tcp", "udp"):
            out.append(Entry(_address(address), proto, _port(port), name))
    return out


_LINE_PARSERS: dict[str, Callable[[str], list[Entry]]] = {
    "hostport": _hostport,
    "masscan-oL": _masscan_list,
    "masscan-oJ": _masscan_json,
    "masscan-oD": _masscan_ndjson,
    "naabu": _naabu,
    "grepable": _grepable,
    "zmap": lambda s: [],  # handled by PortInput._zmap (needs the header)
}


def _warn_stderr(message: str) -> None:
    print(f"servprobe: warning: {message}", file=sys.stderr)


# -- opening an input ----------------------------------------------------------------------


def open_input(
    path: str,
    fmt: str = "auto",
    *,
    stdin: TextIO | None = None,
    skip_bad: bool = False,
    warn: Callable[[str], None] | None = None,
) -> tuple[str, Iterator[tuple[int, str]]]:
    """(format, numbered lines): the detected (or forced) format and the whole input, still
    unread past the lines detection looked at."""
    if fmt not in ("auto", *FORMATS):
        raise InputError(f"unknown input format {fmt!r} (choose from auto, {', '.join(FORMATS)})")
    lines = _numbered(path, stdin)
    peeked: list[tuple[int, str]] = []
    if fmt == "auto":
        fmt = "targets"
        for item in lines:
            peeked.append(item)
            if _meaningful(item[1]):
                fmt = detect(item[1])
                break

    def chained() -> Iterator[tuple[int, str]]:
        yield from peeked
        yield from lines

    return fmt, chained()


def merge_hosts(
    entries: Iterable[Entry], window: int | None = None
) -> Iterator[tuple[str, str | None, PortMap]]:
    """(host, hostname, ports) per host, in order of first appearance.

    `window=None` (a file) merges over the whole input: hosts go out at its end, memory
    grows with the number of distinct hosts (a name and 2 bytes a port), not with lines.
    A `window` (a stream) keeps at most that many hosts open; the oldest goes out when a new
    one would exceed it, and all go out when the input pauses (IDLE).
    """
    # host -> [hostname, tcp ports, udp ports]; arrays of 2-byte ports, deduplicated at the end
    pending: OrderedDict[str, list[Any]] = OrderedDict()

    def emit(host: str, slot: list[Any]) -> tuple[str, str | None, PortMap]:
        ports = tuple((proto, tuple(sorted(set(arr)))) for proto, arr in zip(("tcp", "udp"), slot[1:], strict=True) if arr)
        return host, slot[0], ports

    for e in entries:
        if e is IDLE:
            # the input paused: what is pending goes to the scan now (a host that shows up
            # again later is scanned again on its later ports)
            while pending:
                yield emit(*pending.popitem(last=False))
            yield IDLE  # type: ignore[misc]
            continue
        slot = pending.get(e.host)
        if slot is None:
            slot = pending[e.host] = [e.hostname, array("H"), array("H")]
            if window is not None and len(pending) > window:
                yield emit(*pending.popitem(last=False))
        elif slot[0] is None and e.hostname:
            slot[0] = e.hostname
        slot[1 if e.proto == "tcp" else 2].append(e.port)
    while pending:
        yield emit(*pending.popitem(last=False))


def intersect(ports: PortMap, allowed: dict[str, list[int]] | None) -> PortMap:
    """The listed ports that -p also names (all of them without -p)."""
    if allowed is None:
        return ports
    out = []
    for proto, plist in ports:
        keep = set(allowed.get(proto, ()))
        kept = tuple(p for p in plist if p in keep)
        if kept:
            out.append((proto, kept))
    return tuple(out)


class PortListTargets:
    """A target list whose -iL part lists ports per host (HostTarget.ports set).

    Duck-types servprobe.scan.targets.TargetList for the runner: iteration, `count()`,
    `exclusions`; `ports_count()` is what the progress display counts.
    """

    def __init__(
        self,
        base: TargetList,
        source: PortInput,
        *,
        allowed: dict[str, list[int]] | None = None,
        ipv6: bool = False,
        resolver: Callable[[str, int], list[str]] = default_resolver,
        warn: Callable[[str], None] | None = None,
        counted: tuple[int, int] | None = None,
    ) -> None:
        self.base = base
        self.source = source
        self.allowed = allowed
        self.ipv6 = ipv6
        self.resolver = resolver
        self.warn = warn or _warn_stderr
        self._counted = counted  # (hosts, ports) from a syntax pass over a file
        # a file is merged whole (a host is scanned once, on all its listed ports); a stream
        # within a window, and whenever it pauses
        self.window = STREAM_WINDOW if source.path == "-" else None

    @property
    def exclusions(self):  # type: ignore[no-untyped-def]
        return self.base.exclusions

    @property
    def format(self) -> str:
        return self.source.format

    def count(self) -> int:
        return self.base.count() + (self._counted[0] if self._counted else 0)

    def ports_count(self, per_host: int) -> int:
        return self.base.count() * per_host + (self._counted[1] if self._counted else 0)

    def _resolve(self, host: str) -> tuple[str, int] | None:
        try:
            ip = ipaddress.ip_address(host)
            return str(ip), socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        except ValueError:
            pass
        family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        try:
            addrs = self.resolver(host, family)
        except OSError:
            addrs = []
        if not addrs:
            self.warn(f'Failed to resolve "{host}".')
            return None
        return addrs[0], family

    def __iter__(self) -> Iterator[HostTarget]:
        yield from self.base
        yield from (t for t in self._listed() if t is not IDLE)  # type: ignore[misc]

    def chunks(self, size: int) -> Iterator[list[HostTarget]]:
        """Hosts in lists of up to `size` for the runner; with a streamed input a list goes
        out as soon as the input pauses, possibly empty ("nothing new yet")."""
        batch: list[HostTarget] = []
        for item in itertools.chain(self.base, self._listed()):
            if item is IDLE:
                yield batch
                batch = []
                continue
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _listed(self) -> Iterator[HostTarget | _Idle]:
        excl = self.base.exclusions
        for item in merge_hosts(self.source, self.window):
            if item is IDLE:
                yield IDLE
                continue
            host, name, ports = item
            ports = intersect(ports, self.allowed)
            if not ports:
                continue
            resolved = self._resolve(host)
            if resolved is None:
                continue
            address, family = resolved
            if excl.excluded(address):
                continue
            hostname = name or (host if host != address else None)
            yield HostTarget(address, hostname, family, ports=ports)


def build_port_targets(
    base: TargetList,
    path: str,
    fmt: str,
    lines: Iterator[tuple[int, str]],
    *,
    allowed: dict[str, list[int]] | None = None,
    skip_bad: bool = False,
    ipv6: bool = False,
    stdin_ok: bool = True,
    warn: Callable[[str], None] | None = None,
) -> PortListTargets:
    """The target list of a per-port input. A file gets a syntax pass first (bad lines exit
    before any packet); stdin is read only as the scan goes."""
    counted = None
    if path != "-":
        check = PortInput(path, fmt, lines, skip_bad=skip_bad, warn=warn)
        hosts, nports = 0, 0
        for _, _, ports in merge_hosts(check):
            ports = intersect(ports, allowed)
            if ports:
                hosts += 1
                nports += sum(len(p) for _, p in ports)
        counted = (hosts, nports)
        # the real pass re-reads the file; warnings were printed once already
        _, lines = open_input(path, fmt)
        source = PortInput(path, check.format, lines, skip_bad=skip_bad, warn=lambda _m: None)
    else:
        source = PortInput(path, fmt, timed_lines(lines), skip_bad=skip_bad, warn=warn)
    return PortListTargets(base, source, allowed=allowed, ipv6=ipv6, warn=warn, counted=counted)


class _LineTexts:
    """Numbered lines as a text stream, for servprobe.scan.targets.read_target_file."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines

    def __iter__(self) -> Iterator[str]:
        return (text for _, text in self._lines)


@dataclass
class CliTargets:
    """What the scan command gets: the target list, and whether -iL listed ports per host."""

    targets: TargetList | PortListTargets
    per_port: bool
    allowed: dict[str, list[int]] | None = None  # -p, for a per-port input


def cli_targets(
    targets: list[str],
    *,
    input_file: str | None,
    input_format: str = "auto",
    skip_bad: bool = False,
    exclude: Iterable[str] = (),
    exclude_file: str | None = None,
    ipv6: bool = False,
    ports: str | None = None,
    exclude_ports: str | None = None,
    stdin: TextIO | None = None,
) -> CliTargets:
    """The scan command's targets; raises TargetError, InputError or PortSpecError."""
    from servprobe.scan.ports import select_ports
    from servprobe.scan.targets import build_target_list

    fmt, lines = ("targets", iter(())) if input_file is None else open_input(
        input_file, input_format, stdin=stdin
    )
    if input_file is None or fmt == "targets":
        given = targets or ([] if input_file else ["127.0.0.1"])
        tl = build_target_list(
            given,
            input_file=input_file,
            exclude=exclude,
            exclude_file=exclude_file,
            ipv6=ipv6,
            stdin=_LineTexts(lines) if input_file == "-" else stdin,  # type: ignore[arg-type]
        )
        return CliTargets(tl, False)
    base = build_target_list(targets, exclude=exclude, exclude_file=exclude_file, ipv6=ipv6)
    allowed = None
    if ports or exclude_ports:
        # a -p item without T:/U: matches the listed port on either protocol
        allowed = select_ports(["tcp", "udp"], spec=ports or "1-65535", exclude=exclude_ports).ports
    tl2 = build_port_targets(
        base, input_file, fmt, lines, allowed=allowed, skip_bad=skip_bad, ipv6=ipv6
    )
    return CliTargets(tl2, True, allowed)
