"""Fuzz targets: one function per attack surface, taking raw bytes, raising on a real bug.

Shared by the atheris entry points (tests/fuzz/fuzz_*.py, for long runs) and the bounded
pytest pass (tests/fuzz/test_fuzz_short.py). A target may reject input only through the
documented error type of the code under test; anything else (another exception, a field
that is not printable, a result outside its range) is a bug and raises AssertionError or
propagates.

Targets:
  probe_parser   servprobe.probes.parser.parse_bytes on arbitrary probe-file text
  templates      servprobe.probes.templates.substitute / identify on arbitrary templates
                 and captured groups
  match          ProbeDB.match on arbitrary service responses (nmap's DB when installed)
  match_regex    the same without the hyperscan prefilter (every pattern runs)
  engine         the sans-IO ServiceMachine in the virtual-time simulator against a server
                 scripted by the input (delays, data, close/reset, refusal, TLS, early
                 timers): it must always end, never stall without a deadline
  portspec       servprobe.portspec.parse_portspec on arbitrary -p text
  targets        servprobe.scan.targets (when present) on arbitrary target specs
  fpreader       servprobe.probes.fpreader (when present) on arbitrary SF- fingerprints
"""

from __future__ import annotations

import importlib
import ipaddress
import socket
import time
from collections.abc import Callable
from functools import cache
from typing import Any

PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))


def _printable(value: str | None, what: str) -> None:
    if value is not None:
        bad = set(value) - PRINTABLE
        assert not bad, f"{what} is not printable: {value!r}"


# -- probe parser ---------------------------------------------------------------------------


def probe_parser(data: bytes) -> None:
    from servprobe.probes.parser import parse_bytes

    db, errors = parse_bytes(data, "fuzz.probes", validate=True)
    lines = data.count(b"\n") + 1
    for err in errors:
        assert 0 <= err.line <= lines + 1, f"error line {err.line} outside 0..{lines}"
        str(err)  # must render
    for probe in db.probes:
        assert probe.proto in ("tcp", "udp")
        assert 1 <= probe.source.line <= lines
        for p in probe.ports | probe.sslports:
            assert 0 <= p <= 65535
        if probe.totalwaitms is not None:
            assert 100 <= probe.totalwaitms <= 300_000
        for m in probe.matches:
            assert 1 <= m.source.line <= lines
            assert set(m.flags) <= set("is"), m.flags


# -- templates ------------------------------------------------------------------------------


@cache
def _template_regex() -> Any:
    import regex

    return regex.compile(rb"(?s)^(.{0,12})(.{0,12})(.{0,12})(.*)$")


def templates(data: bytes) -> None:
    from servprobe.probes.model import MatchLine, SourceRef, VersionTemplate
    from servprobe.probes.templates import LIMITS, TemplateError, identify, substitute

    template, _, subject = data.partition(b"\xff")
    text = template.decode("latin-1")
    m = _template_regex().match(subject)
    assert m is not None
    try:
        out = substitute(text, m)
        assert isinstance(out, bytes)
    except TemplateError:
        pass
    try:
        substitute(text, m, cpe=True)
    except TemplateError:
        pass
    line = MatchLine(
        service="fuzz", pattern=b".", flags="", soft=False,
        template=VersionTemplate(product=text, version=text, info=text, hostname=text,
                                 ostype=text, devicetype=text, cpes=(text,)),
        source=SourceRef("fuzz", 1), probe_name="NULL", index=0,
    )
    ident = identify(line, m)
    for name, limit in LIMITS.items():
        value = getattr(ident, name)
        _printable(value, name)
        # at most limit - 2 bytes are kept (nmap 7.93, tests/data/nmap/field-limits.xml),
        # each shown as at most 4 characters (\\xHH)
        assert value is None or len(value) <= 4 * (limit - 2), (name, len(value))
    for cpe in ident.cpes:
        _printable(cpe, "cpe")


# -- matching untrusted responses -----------------------------------------------------------


@cache
def _db(prefilter: bool | None = None) -> Any:
    import servprobe

    return servprobe.load_db(None, prefilter=prefilter)


@cache
def _probe_names() -> tuple[tuple[str, str], ...]:
    return tuple((p.name, p.proto) for p in _db().probes)


MATCH_SECONDS = 10.0  # per response: every pattern has a per-search timeout (0.25 s)


def match(data: bytes, *, prefilter: bool | None = None) -> None:
    db = _db(prefilter)
    names = _probe_names()
    if not data:
        return
    name, proto = names[data[0] % len(names)]
    t = time.monotonic()
    ident = db.match(name, data[1:], proto)  # type: ignore[arg-type]
    took = time.monotonic() - t
    assert took < MATCH_SECONDS, f"matching took {took:.1f}s"
    if ident is not None:
        for f in ("product", "version", "info", "hostname", "ostype", "devicetype"):
            _printable(getattr(ident, f), f)
        for cpe in ident.cpes:
            _printable(cpe, "cpe")


def match_regex(data: bytes) -> None:
    """Like match, without the hyperscan prefilter: every pattern runs in `regex`."""
    match(data, prefilter=False)


# -- the engine's state machine against a fuzz-scripted server -------------------------------


class _Bytes:
    """Consumes fuzz input as small choices (zeros once exhausted: deterministic)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def chunk(self, limit: int = 600) -> bytes:
        n = min(self.byte() * 3, limit)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


_CANNED = (
    b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n",
    b"220 (vsFTPd 3.0.3)\r\n",
    b"\x16\x03\x01\x00\x4a\x02\x00\x00\x46\x03\x01",  # a TLS ServerHello header
    b"-ERR unknown command\r\n",
    b"\x00" * 20,
)
_DELAYS = (0.0, 0.001, 0.05, 0.3, 2.0, 5.5, 12.0, 40.0)


def _server_model(fz: _Bytes) -> Any:
    from servprobe.engine.sim import CLOSE, RESET, ServerModel

    class Fuzzed(ServerModel):
        refuse = fz.byte() % 16 == 0
        tls_min_level = (None, 0, 1, 2)[fz.byte() % 4]

        def _replies(self) -> list[tuple[float, object]]:
            out: list[tuple[float, object]] = []
            for _ in range(fz.byte() % 4):
                delay = _DELAYS[fz.byte() % len(_DELAYS)]
                kind = fz.byte() % 10
                what: object
                if kind < 4:
                    what = fz.chunk() or b"x"
                elif kind < 8:
                    what = _CANNED[kind % len(_CANNED)]
                else:
                    what = CLOSE if kind == 8 else RESET
                out.append((delay, what))
            return out

        def on_connect(self, conn: int, tls: bool) -> list[tuple[float, object]]:
            return self._replies()

        def on_data(self, conn: int, payload: bytes, since: float, tls: bool) -> list[tuple[float, object]]:
            return self._replies()

    return Fuzzed()


SIM_LIMIT = 3600.0  # virtual seconds: far beyond any probe sequence at intensity 9


def engine(data: bytes) -> None:
    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.engine.plan import Planner
    from servprobe.engine.sim import simulate
    from servprobe.engine.state import ConnBudget, ServiceMachine

    db = _db()
    fz = _Bytes(data)
    proto = "udp" if fz.byte() % 5 == 0 else "tcp"
    port = (80, 443, 22, 21, 53, 111, 6379, 9100, 31337, 161)[fz.byte() % 10]
    opts = EngineOptions(intensity=fz.byte() % 10, sequential=fz.byte() % 3 == 0)
    budget = (None, ConnBudget(0), ConnBudget(2), ConnBudget(64))[fz.byte() % 4]
    # timers firing early, within the 1 ms slack the driver allows (the simulator fires every
    # timer that early, forever: beyond the slack virtual time would never advance)
    early = (0.0, 0.0, 0.0002, 0.0005, 0.0009)[fz.byte() % 5]
    machine = ServiceMachine(ServiceTarget("127.0.0.1", port, proto), db, _planner(), opts, budget)
    # a stalled machine (no deadline, no event) or a run past the limit raises RuntimeError
    run = simulate(machine, _server_model(fz), limit=SIM_LIMIT, early=early)
    r = run.result
    assert r.port == port and r.proto == proto
    for f in ("service", "product", "version", "extrainfo", "hostname", "ostype", "devicetype"):
        _printable(getattr(r, f), f)
    del Planner  # imported for the type only; the planner is cached per database


@cache
def _planner() -> Any:
    from servprobe.engine.plan import Planner

    return Planner(_db())


# -- port specs -----------------------------------------------------------------------------

_TABLE = [("http", "tcp", 80), ("https", "tcp", 443), ("domain", "udp", 53),
          ("domain", "tcp", 53), ("ssh", "tcp", 22), ("snmp", "udp", 161)]


def portspec(data: bytes) -> None:
    from servprobe.portspec import PortSpecError, lookup_in_table, parse_portspec

    text = data.decode("utf-8", "replace")
    try:
        spec = parse_portspec(text, ("tcp",), lookup_in_table(_TABLE))
    except PortSpecError as exc:
        str(exc)
        return
    for proto in ("tcp", "udp"):
        ports = spec.get(proto)
        assert all(0 <= p <= 65535 for p in ports)


# -- H3's target specs and H1's fingerprint reader (fuzzed once they exist) -----------------


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _fake_resolver(name: str, family: int) -> list[str]:
    # never touch DNS from a fuzzer: every name "resolves" to loopback
    return ["::1"] if family == socket.AF_INET6 else ["127.0.0.1"]


def targets(data: bytes) -> None:
    mod = _optional("servprobe.scan.targets")
    if mod is None:
        return
    text = data[1:].decode("utf-8", "replace")
    ipv6 = bool(data[:1]) and data[0] & 1 == 1
    try:
        spec = mod.parse_target(text, ipv6=ipv6, resolver=_fake_resolver, warn=lambda m: None)
    except mod.TargetError as exc:
        str(exc)
        return
    count = spec.count()
    assert count >= 1, (text, count)
    for n, host in enumerate(spec):
        ipaddress.ip_address(host.address)  # only numeric addresses come out
        if n >= 256:
            break


def fpreader(data: bytes) -> None:
    mod = _optional("servprobe.probes.fpreader")
    if mod is None:
        return
    text = data.decode("latin-1")
    for reader in (mod.parse_fingerprint, mod.read_fingerprints):
        try:
            got = reader(text)
        except mod.FingerprintError as exc:
            str(exc)
            continue
        for fp in got if isinstance(got, list) else [got]:
            assert fp.proto in ("tcp", "udp")
            for r in fp.responses:
                assert isinstance(r.data, bytes) and r.length >= 0


TARGETS: dict[str, Callable[[bytes], None]] = {
    "probe_parser": probe_parser,
    "templates": templates,
    "match": match,
    "match_regex": match_regex,
    "engine": engine,
    "portspec": portspec,
    "targets": targets,
    "fpreader": fpreader,
}
