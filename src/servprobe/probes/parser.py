"""The nmap-service-probes language → the model (ProbeDB → Probe → MatchLine).

Grammar (one directive a line; `#` comments and blank lines ignored):

    Exclude <ports>                      once, before the first Probe; T:/U: prefixes
    Probe TCP|UDP <name> q<d>…<d> [no-payload] [source=<port>]
    match|softmatch <service> m<d>…<d>[is] [p<d>…<d>] [v…] [i…] [h…] [o…] [d…] [cpe:<d>…<d>[a]]…
    ports|sslports <ports>   rarity 1-9   fallback <name>[,<name>…]
    totalwaitms|tcpwrappedms 100-300000

Lines are at most 8,192 characters (nmap ≥ 7.991; a longer line is an error). After the
probe string, nmap's newer files may give `source=N`: send the probe from local port N
(IKE peers answer only to port 500); `no-payload` keeps a UDP probe out of the port scan.

Like nmap, a delimiter cannot be escaped: the field ends at the next delimiter character.
Probe strings take C escapes (\\\\ \\0 \\a \\b \\f \\n \\r \\t \\v \\xHH); another escaped
punctuation character stands for itself, an escaped letter or digit is an error (nmap refuses
octal-looking escapes), and so is a bad \\x escape.

Unlike nmap, which stops at the first problem, the parser collects every error of a file
(each FILE:LINE: message) and keeps going; it never raises on malformed input except through
`parse_file_strict`. Mistakes nmap 7.93 accepts silently (duplicate directives, text after a
probe string, unknown fallbacks, templates that can never be filled) are warnings: the file
loads and behaves as in nmap (checked against nmap itself). Pattern checks (compiles, cannot match the empty string) are done here
too unless `validate=False` (the loader skips them for a file already validated, see cache).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from servprobe.portspec import PortSpecError, parse_portspec
from servprobe.probes.matcher import Matcher, check_pattern
from servprobe.probes.model import MatchLine, Probe, ProbeDB, SourceRef, VersionTemplate

WAIT_MIN, WAIT_MAX = 100, 300_000
VERSION_KEYS = {
    "p": "product",
    "v": "version",
    "i": "info",
    "h": "hostname",
    "o": "ostype",
    "d": "devicetype",
}
_C_ESCAPES = {
    ord("\\"): 0x5C,
    ord("0"): 0x00,
    ord("a"): 0x07,
    ord("b"): 0x08,
    ord("f"): 0x0C,
    ord("n"): 0x0A,
    ord("r"): 0x0D,
    ord("t"): 0x09,
    ord("v"): 0x0B,
}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SINGLE = ("ports", "sslports", "rarity", "fallback", "totalwaitms", "tcpwrappedms")


@dataclass(frozen=True, slots=True)
class ParseError:
    """One problem in a probe file."""

    file: str
    line: int
    message: str
    # "syntax"; "pattern": the regex itself is unusable (compile / matches empty);
    # "warning": a mistake nmap 7.93 silently accepts (the file still loads, like in nmap)
    kind: str = "syntax"

    def __str__(self) -> str:
        label = "warning: " if self.kind == "warning" else ""
        return f"{self.file}:{self.line}: {label}{self.message}"

    @property
    def is_warning(self) -> bool:
        return self.kind == "warning"


class ProbeFileError(ValueError):
    """A probe file with errors (raised by the strict entry points); `.errors` lists them
    (warnings included, for context)."""

    def __init__(self, errors: list[ParseError]) -> None:
        self.errors = errors
        shown = "\n".join(str(e) for e in errors[:20])
        more = f"\n… and {len(errors) - 20} more errors" if len(errors) > 20 else ""
        super().__init__(shown + more)


class _LineError(Exception):
    """Internal: a problem on the line being parsed."""

    def __init__(self, message: str, kind: str = "syntax") -> None:
        super().__init__(message)
        self.kind = kind


MAX_LINE = 8192  # characters per line, as nmap ≥ 7.991 reads its file


def unescape_probe_string(text: bytes) -> bytes:
    """Decode the C escapes of a probe string (nmap's rules); ValueError on a bad escape."""
    if b"\\" not in text:
        return text
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != 0x5C:
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("probe string ends with a lone backslash")
        e = text[i + 1]
        if e in _C_ESCAPES:
            out.append(_C_ESCAPES[e])
            i += 2
        elif e == ord("x"):
            hh = text[i + 2 : i + 4]
            if len(hh) != 2 or not all(h in _HEX for h in hh):
                raise ValueError(
                    f"bad \\x escape {text[i : i + 4].decode('latin-1')!r} (need two hex digits)"
                )
            out.append(int(hh, 16))
            i += 4
        elif chr(e).isalnum():
            raise ValueError(
                f"unsupported escape \\{chr(e)} (octal and other letter escapes are not allowed)"
            )
        else:
            out.append(e)
            i += 2
    return bytes(out)


def _delimited(line: str, pos: int, what: str) -> tuple[str, int]:
    """The text between the delimiter at `pos` and its next occurrence; returns (text, end+1)."""
    if pos >= len(line) or line[pos].isspace():
        raise _LineError(f"{what}: missing delimiter")
    delim = line[pos]
    end = line.find(delim, pos + 1)
    if end < 0:
        raise _LineError(f"{what}: no closing {delim!r} delimiter")
    return line[pos + 1 : end], end + 1


def _word(line: str, pos: int) -> tuple[str, int]:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    end = pos
    while end < len(line) and line[end] not in " \t":
        end += 1
    return line[pos:end], end


def _skip_ws(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    return pos


def _valid_name(name: str) -> bool:
    return (
        bool(name)
        and name[0].isalnum()
        and name.isascii()
        and name.isprintable()
        and "," not in name
    )


@dataclass(slots=True)
class _ProbeState:
    probe: Probe | None  # None: the Probe line was bad; its lines are still checked
    seen: dict[str, int] = field(default_factory=dict)
    fallback_line: int = 0


class _Parser:
    def __init__(self, path: str, validate: bool, full: bool = True) -> None:
        self.path = path
        self.validate = validate
        self.full = full
        self.errors: list[ParseError] = []
        self.probes: list[Probe] = []
        self.by_key: dict[tuple[str, str], Probe] = {}
        self.exclude: frozenset[tuple[str, int]] = frozenset()
        self.exclude_line = 0
        self.cur: _ProbeState | None = None
        self.states: list[_ProbeState] = []
        self.lineno = 0

    def error(self, line: int, message: str) -> None:
        self.errors.append(ParseError(self.path, line, message))

    def warn(self, message: str) -> None:
        self.errors.append(ParseError(self.path, self.lineno, message, "warning"))

    def run(self, data: bytes) -> None:
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > MAX_LINE:  # nmap ≥ 7.991 refuses such a file
                self.errors.append(ParseError(
                    self.path, lineno,
                    f"line is {len(raw)} characters long; at most {MAX_LINE} are allowed", "syntax"))
                continue
            text = raw.decode("latin-1")
            stripped = text.strip(" \t")
            if not stripped or stripped.startswith("#"):
                continue
            self.lineno = lineno
            try:
                self.directive(stripped, lineno)
            except _LineError as exc:
                self.errors.append(ParseError(self.path, lineno, str(exc), exc.kind))
        self.resolve_fallbacks()

    def directive(self, text: str, lineno: int) -> None:
        keyword, end = _word(text, 0)
        rest = text[end:].strip(" \t")
        if keyword == "Exclude":
            self.directive_exclude(rest, lineno)
            return
        if keyword == "Probe":
            self.directive_probe(rest, lineno)
            return
        if keyword not in ("match", "softmatch", *_SINGLE):
            if not keyword.isprintable() or len(keyword) > 40:
                raise _LineError("not a directive (binary or garbled line)")
            raise _LineError(f"unknown directive {keyword!r}")
        if self.cur is None:
            raise _LineError(f"{keyword!r} before any Probe directive")
        if keyword in _SINGLE:
            if keyword in self.cur.seen:  # nmap takes the last one
                self.warn(
                    f"duplicate {keyword!r} directive in this probe (first on line "
                    f"{self.cur.seen[keyword]}); this one wins, as in nmap"
                )
            self.cur.seen[keyword] = lineno
            if not rest:
                raise _LineError(f"{keyword!r} needs a value")
            getattr(self, "directive_" + keyword)(rest, lineno)
            return
        self.directive_match(rest, lineno, soft=keyword == "softmatch")

    # --- Exclude / Probe -----------------------------------------------------------------
    def directive_exclude(self, rest: str, lineno: int) -> None:
        if self.probes or self.cur is not None:
            raise _LineError("Exclude must come before the first Probe directive")
        if self.exclude_line:
            raise _LineError(
                f"only one Exclude directive is allowed (first on line {self.exclude_line})"
            )
        self.exclude_line = lineno
        try:
            spec = parse_portspec(rest, default_protos=("tcp", "udp"))
        except PortSpecError as exc:
            raise _LineError(f"Exclude: {exc}") from None
        self.exclude = frozenset(spec.pairs())  # type: ignore[arg-type]

    def directive_probe(self, rest: str, lineno: int) -> None:
        self.cur = _ProbeState(None)  # lines until the next Probe belong to this one
        proto_s, pos = _word(rest, 0)
        if proto_s not in ("TCP", "UDP"):
            raise _LineError(f"Probe: protocol must be TCP or UDP, not {proto_s!r}")
        name, pos = _word(rest, pos)
        if not _valid_name(name):
            raise _LineError(f"Probe: bad probe name {name!r}")
        pos = _skip_ws(rest, pos)
        if pos >= len(rest) or rest[pos] != "q":
            raise _LineError("Probe: the probe string must start with q<delimiter>")
        body, pos = _delimited(rest, pos + 1, "Probe string")
        try:
            payload = unescape_probe_string(body.encode("latin-1"))
        except ValueError as exc:
            raise _LineError(f"Probe string: {exc}") from None
        extra = rest[pos:].split()
        no_payload = False
        source_port: int | None = None
        ignored = []
        for word in extra:
            if word == "no-payload":
                no_payload = True
            elif word.startswith("source="):
                value = word[len("source="):]
                if not value.isdigit() or not 1 <= int(value) <= 65535:
                    raise _LineError(f"Probe: source= needs a port number 1-65535, not {value!r}")
                source_port = int(value)
            else:
                ignored.append(word)
        if ignored:  # nmap ignores it
            self.warn(f"Probe: text after the probe string ignored: {' '.join(ignored)!r}")
        proto = "tcp" if proto_s == "TCP" else "udp"
        key = (proto, name)
        if key in self.by_key:  # nmap matches with the first one; its lines are checked, not used
            first = self.by_key[key].source.line
            self.warn(f"duplicate probe {proto_s} {name} ignored (first on line {first})")
            return
        probe = Probe(proto=proto, name=name, payload=payload, source=SourceRef(self.path, lineno))
        if no_payload:
            probe.no_payload = True
        probe.source_port = source_port
        self.by_key[key] = probe
        self.probes.append(probe)
        self.cur.probe = probe
        self.states.append(self.cur)

    # --- per-probe directives ------------------------------------------------------------
    def _ports(self, rest: str, what: str) -> frozenset[int]:
        proto = self.cur.probe.proto if self.cur and self.cur.probe else "tcp"
        try:
            spec = parse_portspec(rest, default_protos=(proto,))
        except PortSpecError as exc:
            raise _LineError(f"{what}: {exc}") from None
        # a T:/U: prefix for the other protocol is legal syntax but means nothing here
        return frozenset(spec.get(proto))

    def directive_ports(self, rest: str, lineno: int) -> None:
        ports = self._ports(rest, "ports")
        if self.cur and self.cur.probe:
            self.cur.probe.ports = ports

    def directive_sslports(self, rest: str, lineno: int) -> None:
        ports = self._ports(rest, "sslports")
        if self.cur and self.cur.probe:
            self.cur.probe.sslports = ports

    def _int(self, rest: str, what: str, lo: int, hi: int) -> int:
        if not rest.isdigit() or not rest.isascii():
            raise _LineError(f"{what}: not a number: {rest!r}")
        value = int(rest)
        if not lo <= value <= hi:
            raise _LineError(f"{what} {value} out of range {lo}-{hi}")
        return value

    def directive_rarity(self, rest: str, lineno: int) -> None:
        value = self._int(rest, "rarity", 1, 9)
        if self.cur and self.cur.probe:
            self.cur.probe.rarity = value

    def directive_totalwaitms(self, rest: str, lineno: int) -> None:
        value = self._int(rest, "totalwaitms", WAIT_MIN, WAIT_MAX)
        if self.cur and self.cur.probe:
            self.cur.probe.totalwaitms = value

    def directive_tcpwrappedms(self, rest: str, lineno: int) -> None:
        value = self._int(rest, "tcpwrappedms", WAIT_MIN, WAIT_MAX)
        if self.cur and self.cur.probe:
            self.cur.probe.tcpwrappedms = value

    def directive_fallback(self, rest: str, lineno: int) -> None:
        names = [n for n in rest.replace(",", " ").split() if n]
        for n in names:
            if not _valid_name(n):
                raise _LineError(f"fallback: bad probe name {n!r}")
        if self.cur and self.cur.probe:
            self.cur.probe.fallback = tuple(names)
            self.cur.fallback_line = lineno

    def resolve_fallbacks(self) -> None:
        for st in self.states:
            probe = st.probe
            if probe is None:
                continue
            for name in probe.fallback:
                # nmap looks in the other protocol too: TCP DNSStatusRequestTCP falls back to
                # the UDP DNSStatusRequest's lines; an unknown name is skipped, as by nmap
                if ("tcp", name) not in self.by_key and ("udp", name) not in self.by_key:
                    self.lineno = st.fallback_line
                    self.warn(f"fallback: no probe named {name!r} (skipped)")

    # --- match / softmatch ---------------------------------------------------------------
    def directive_match(self, rest: str, lineno: int, *, soft: bool) -> None:
        kw = "softmatch" if soft else "match"
        service, pos = _word(rest, 0)
        if not service or not service.isprintable() or not service.isascii():
            raise _LineError(f"{kw}: bad or missing service name")
        pos = _skip_ws(rest, pos)
        if pos >= len(rest):
            raise _LineError(f"{kw}: missing pattern m<delimiter>…<delimiter>")
        if rest[pos] != "m":
            raise _LineError(
                f"{kw}: the pattern must start with m<delimiter>, found {rest[pos : pos + 10]!r}"
            )
        pattern, pos = _delimited(rest, pos + 1, "pattern")
        fend = pos
        while fend < len(rest) and rest[fend].isalnum():
            fend += 1
        flags = rest[pos:fend]
        bad = sorted(set(flags) - set("is"))
        if bad:
            raise _LineError(f"pattern: unknown option {''.join(bad)!r} (only i and s exist)")
        if len(set(flags)) != len(flags):
            raise _LineError(f"pattern: repeated option in {flags!r}")
        fields, cpes = self.version_fields(rest, fend, kw)
        pat = pattern.encode("latin-1")
        if not pat:
            raise _LineError("pattern: empty pattern (it would match anything)")
        flags = "".join(sorted(flags))
        if self.validate:

            labels = {v: k for k, v in VERSION_KEYS.items()}
            templates = [(labels[k] + "/", v) for k, v in fields.items()]
            templates += [("cpe:", c) for c in cpes]
            problem = check_pattern(pat, flags, templates, full=self.full)
            if problem:
                is_template = problem.startswith(
                    tuple(f"{label} template" for label, _ in templates)
                )
                if not is_template:
                    raise _LineError(f"pattern: {problem}", "pattern")
                # nmap leaves such a field out at match time; the line itself still works
                self.warn(f"{problem} (the field will always be empty)")
        if self.cur is None or self.cur.probe is None:
            return
        probe = self.cur.probe
        probe.matches.append(
            MatchLine(
                service=service,
                pattern=pat,
                flags=flags,
                soft=soft,
                template=VersionTemplate(**fields, cpes=tuple(cpes)),
                source=SourceRef(self.path, lineno),
                probe_name=probe.name,
                index=len(probe.matches),
            )
        )

    def version_fields(self, rest: str, pos: int, kw: str) -> tuple[dict[str, str], list[str]]:
        fields: dict[str, str] = {}
        cpes: list[str] = []
        n = len(rest)
        while True:
            start = pos
            pos = _skip_ws(rest, pos)
            if pos >= n:
                return fields, cpes
            if pos == start:
                raise _LineError(f"{kw}: expected a space before {rest[pos : pos + 10]!r}")
            if rest.startswith("cpe:", pos):
                key, pos = "cpe", pos + 4
            else:
                key, pos = rest[pos], pos + 1
                if key not in VERSION_KEYS:
                    raise _LineError(
                        f"{kw}: unknown version field {rest[pos - 1 : pos + 9]!r} (expected p v i h o d or cpe:)"
                    )
            value, pos = _delimited(rest, pos, f"{key}/ field" if key != "cpe" else "cpe: field")
            fend = pos
            while fend < n and rest[fend].isalnum():
                fend += 1
            opts, pos = rest[pos:fend], fend
            if key == "cpe":
                if set(opts) - {"a"}:
                    self.warn(f"cpe: unknown option {opts!r} ignored (only a exists)")
                if not value:
                    raise _LineError("cpe: empty value")
                cpes.append("cpe:/" + value)  # nmap writes cpe:/… whatever the delimiter
                continue
            if opts:
                self.warn(f"{key}/ field: unexpected option {opts!r} ignored")
            name = VERSION_KEYS[key]
            if name in fields:
                self.warn(f"{kw}: duplicate {key}/ field; the last one wins, as in nmap")
            fields[name] = value


def parse_bytes(
    data: bytes, path: str, *, validate: bool = True, full: bool = True
) -> tuple[ProbeDB, list[ParseError]]:
    """Parse probe-file content; returns the database (what parsed) and every error.

    validate: check every pattern (compiles, cannot match empty, templates fit); full=False
    checks with the stdlib parser only where it can (see matcher.check_pattern).
    """
    parser = _Parser(path, validate, full)
    parser.run(data)
    parser.errors.sort(key=lambda e: e.line)
    db = ProbeDB(
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        probes=parser.probes,
        exclude=parser.exclude,  # type: ignore[arg-type]
    )
    db.matcher = Matcher(db)  # patterns compile on first use; load_db adds the prefilter
    return db, parser.errors


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a probe file; OSError becomes a ProbeFileError with FILE:0."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ProbeFileError(
            [ParseError(os.fspath(path), 0, f"cannot read: {exc.strerror or exc}")]
        ) from None


def parse_file(
    path: str | os.PathLike[str], *, validate: bool = True, full: bool = True
) -> tuple[ProbeDB, list[ParseError]]:
    """Parse a probe file; returns (ProbeDB, errors). Unreadable file: ProbeFileError."""
    data = read_file(path)
    return parse_bytes(data, os.fspath(path), validate=validate, full=full)


def parse_file_strict(path: str | os.PathLike[str], *, validate: bool = True) -> ProbeDB:
    """Parse a probe file; raise ProbeFileError listing every error if there is any."""
    db, errors = parse_file(path, validate=validate)
    if any(not e.is_warning for e in errors):
        raise ProbeFileError(errors)
    return db
