"""The typed model of a probe file: ProbeDB → Probe → MatchLine, and Identification.

This module owns the shapes every other part of servprobe relies on, as plain data: it
imports no other part of servprobe. The parser (`probes.parser`) builds them and attaches a
matcher (`probes.matcher`, which compiles and runs the patterns; `probes.templates` turns a
regex match into an Identification). The engine only needs: `ProbeDB.probes`, `Probe`
attributes, and `ProbeDB.match()`, which hands the work to that matcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

Proto = Literal["tcp", "udp"]


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a directive came from: shown to users as FILE:LINE."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class VersionTemplate:
    """The raw p/ v/ i/ h/ o/ d/ and cpe:/ fields of a match line, before substitution.

    Values keep their template syntax ($1, $P(2), $SUBST(1,"_","."), $I(1,">")).
    """

    product: str | None = None
    version: str | None = None
    info: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpes: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class MatchLine:
    """One `match` or `softmatch` directive."""

    service: str
    pattern: bytes  # the regex source between the delimiters, as bytes (latin-1 of the file)
    flags: str  # subset of "is"
    soft: bool
    template: VersionTemplate
    source: SourceRef
    probe_name: str
    index: int  # position of this line within its probe
    compiled: Any = None  # set by probes.matcher (a `regex` pattern object)
    # set by probes.matcher on first need: bytes every match starts with (ASCII-lower-cased
    # when flags has "i"); None until then
    literal: bytes | None = None
    plan: Any = None  # set by probes.templates: the line's templates, ready to fill


@dataclass(eq=False, slots=True)
class Probe:
    """One `Probe` section with its directives and match lines."""

    proto: Proto
    name: str
    payload: bytes
    source: SourceRef
    ports: frozenset[int] = frozenset()
    sslports: frozenset[int] = frozenset()
    rarity: int | None = None  # None: the file gave none (nmap treats that as always eligible)
    fallback: tuple[str, ...] = ()
    totalwaitms: int | None = None
    tcpwrappedms: int | None = None
    matches: list[MatchLine] = field(default_factory=list)
    no_payload: bool = False  # `no-payload` after the probe string: never a UDP scan payload
    source_port: int | None = None  # `source=N` after the probe string: send from local port N

    @property
    def is_null(self) -> bool:
        return self.proto == "tcp" and self.name == "NULL"

    @property
    def services(self) -> frozenset[str]:
        """Service names this probe's own lines (match and softmatch) can report."""
        return frozenset(m.service for m in self.matches)


@dataclass(frozen=True, slots=True)
class Identification:
    """What a response is, once a line matched and its templates were applied.

    Every string is printable (non-printable bytes escaped) and truncated like nmap's
    (product/version/hostname 80, info 256, ostype/devicetype 32).
    """

    service: str
    soft: bool
    product: str | None = None
    version: str | None = None
    info: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpes: tuple[str, ...] = ()
    source: SourceRef | None = None
    probe: str | None = None  # name of the probe whose line matched

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "soft": self.soft,
            "product": self.product,
            "version": self.version,
            "info": self.info,
            "hostname": self.hostname,
            "ostype": self.ostype,
            "devicetype": self.devicetype,
            "cpes": list(self.cpes),
            "line": str(self.source) if self.source else None,
            "probe": self.probe,
        }


@dataclass(eq=False)
class ProbeDB:
    """A loaded probe database. Build it with `servprobe.load_db()`."""

    path: str
    sha256: str
    probes: list[Probe]
    exclude: frozenset[tuple[Proto, int]] = frozenset()
    # set by the loader: the object that actually runs patterns (see probes.matcher)
    matcher: Any = None
    # problems found while loading a non-strict load (probes.parser.ParseError objects)
    errors: list[Any] = field(default_factory=list)

    def probe(self, name: str, proto: Proto = "tcp") -> Probe:
        # a dict built on first use (the engine looks a probe up for every response)
        index = self.__dict__.get("_by_name")
        if index is None or len(index) != len(self.probes):
            index = self.__dict__["_by_name"] = {(p.proto, p.name): p for p in self.probes}
        found = index.get((proto, name))
        if found is not None:
            return found
        for p in self.probes:  # the list may have been edited since the index was built
            if p.name == name and p.proto == proto:
                return p
        raise KeyError(f"no {proto.upper()} probe named {name!r} in {self.path}")

    def probes_for(self, proto: Proto) -> Iterable[Probe]:
        return (p for p in self.probes if p.proto == proto)

    def match(
        self, probe_name: str, data: bytes, proto: Proto = "tcp", timeout: float | None = None
    ) -> Identification | None:
        """Identify `data`, received in answer to probe `probe_name`.

        Tries the probe's own lines in file order, then each probe of its `fallback` list,
        then NULL (TCP only); the first line that matches, soft or hard, wins. `timeout`:
        seconds per regex call (a timeout counts as no match); default the matcher's.
        """
        matcher = self.matcher
        if matcher is None:
            raise RuntimeError("this ProbeDB has no matcher: build it with servprobe.load_db(), "
                               "probes.parser.parse_bytes() or attach a probes.matcher.Matcher")
        probe = self.probe(probe_name, proto)
        return matcher.match(probe, data) if timeout is None else matcher.match(probe, data, timeout)
