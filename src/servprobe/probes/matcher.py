"""Running a database's patterns: compile (lazily, with the `regex` module) and match.

Semantics (nmap's): a response to probe P is tried against P's lines in file order, then
each probe of P's `fallback` list, then NULL (TCP only; UDP never falls back to NULL). The
first line that matches, soft or hard, wins. A pattern is searched (not anchored) over the
whole response. nmap stops PCRE at a match limit of 50,000 and counts that as "no match";
we bound every search by time instead (`timeout`, seconds per regex call: the matcher's
default, or the caller's — the engine passes EngineOptions.regex_timeout) and count a
timeout as no match. No line is exempt, whatever its shape.
The two limits differ only on pathological backtracking, where `regex` is usually fast enough
to finish well inside the timeout and so may find a match PCRE gives up on.

Patterns compile on first use (a probe's lines when that probe first matches something), so
loading a database costs only parsing. An optional prefilter (probes.prefilter, hyperscan)
narrows each probe's lines to candidates; results are identical with or without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import regex

from servprobe.probes.pcre import (
    PatternSyntaxError,
    literal_prefix,
    parse_info,
    translate,
)
from servprobe.probes.templates import check_template, identify

if TYPE_CHECKING:
    from servprobe.probes.model import Identification, MatchLine, Probe, ProbeDB

DEFAULT_TIMEOUT = 0.25  # seconds per search; nmap's PCRE match limit is the equivalent
_BAD = object()  # MatchLine.compiled for a pattern that does not compile


def regex_flags(flags: str) -> int:
    return (regex.IGNORECASE if "i" in flags else 0) | (regex.DOTALL if "s" in flags else 0)


def compile_pattern(pattern: bytes, flags: str) -> Any:
    """The `regex` pattern object for a probe-file pattern (PCRE meaning); raises on error."""
    return regex.compile(translate(pattern), regex_flags(flags) | regex.VERSION0)


def check_pattern(
    pattern: bytes, flags: str, templates: Iterable[tuple[str, str]] = (), *, full: bool = True
) -> str | None:
    """Why this pattern is unusable (nmap would refuse it), or None when it is fine.

    templates: (label, template) pairs of the line, checked against the pattern's groups
    (e.g. a `$3` with two groups can never be filled). full=False skips compiling with
    `regex` when the stdlib parser can read the pattern (≈ 4x faster; a pattern `regex` then
    refuses is only found at first use, where it never matches).
    """
    try:
        translated = translate(pattern)
    except PatternSyntaxError as exc:
        return str(exc)
    info = parse_info(translated, flags)
    compiled = None
    if full or info is None:
        try:
            compiled = regex.compile(translated, regex_flags(flags) | regex.VERSION0)
        except Exception as exc:  # regex.error mostly; never let a hostile file crash us
            return f"bad regular expression: {exc}"
    if info is not None:
        width = info[0]
    else:
        # the stdlib parser could not read it (regex-only syntax): try typical empty matches
        width = 1
        for subject in (b"", b"\n", b"\r\n", b"x", b"\x00"):
            try:
                m = compiled.search(subject, timeout=0.05)  # type: ignore[union-attr]
            except TimeoutError:
                continue
            if m is not None and m.end() == m.start():
                width = 0
                break
    if width == 0:
        return "pattern can match the empty string (nmap rejects it)"
    groups = compiled.groups if compiled is not None else info[1]  # type: ignore[index]
    for label, template in templates:
        problem = check_template(template, groups)
        if problem:
            return f"{label} template {template!r}: {problem}"
    return None


def line_literal(line: MatchLine) -> bytes:
    """The bytes every match of the line starts with (lower-cased under "i"), computed on
    first need and kept on the line."""
    lit = line.literal
    if lit is None:
        lit = literal_prefix(line.pattern)
        if "i" in line.flags:
            lit = lit.lower()
        line.literal = lit
    return lit


class _ProbeIndex:
    """A probe's lines bucketed by the first byte their anchored literal prefix requires:
    a response starting with byte B only needs the lines of bucket B plus those without a
    prefix (in file order). This is the prefilter when hyperscan is not available."""

    __slots__ = ("buckets", "cache", "generic")

    def __init__(self, probe: Probe) -> None:
        self.buckets: dict[int, list[int]] = {}
        self.generic: list[int] = []
        self.cache: dict[int, list[int]] = {}
        for i, line in enumerate(probe.matches):
            lit = line_literal(line)
            if not lit:
                self.generic.append(i)
                continue
            first = {lit[0], lit[:1].upper()[0]} if "i" in line.flags else {lit[0]}
            for b in first:
                self.buckets.setdefault(b, []).append(i)

    def for_first_byte(self, b: int) -> list[int]:
        got = self.cache.get(b)
        if got is None:
            got = self.cache[b] = sorted(self.buckets.get(b, []) + self.generic)
        return got


class Matcher:
    """Matches responses against a ProbeDB; set as `ProbeDB.matcher` by the loader."""

    def __init__(
        self, db: ProbeDB, *, prefilter: Any = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.db = db
        self.prefilter = prefilter
        self.timeout = timeout
        self.timeouts = 0  # searches abandoned on the timeout (counted as no match)
        self._chains: dict[Probe, tuple[Probe, ...]] = {}
        self._by_name = {(p.proto, p.name): p for p in db.probes}
        self._indexes: dict[Probe, _ProbeIndex] = {}

    # --- compilation ---------------------------------------------------------------------
    def compiled(self, line: MatchLine) -> Any:
        """The compiled pattern of a line, or None if it does not compile."""
        c = line.compiled
        if c is None:
            try:
                c = compile_pattern(line.pattern, line.flags)
            except Exception:  # the parser reports bad patterns; here they never match
                c = _BAD
            line.compiled = c
        return None if c is _BAD else c

    def compile_all(self) -> list[tuple[MatchLine, str]]:
        """Compile every line now; returns (line, error) for those that fail."""
        bad = []
        for probe in self.db.probes:
            for line in probe.matches:
                if self.compiled(line) is None:
                    bad.append(
                        (line, check_pattern(line.pattern, line.flags) or "does not compile")
                    )
        return bad

    # --- matching ------------------------------------------------------------------------
    def chain(self, probe: Probe) -> tuple[Probe, ...]:
        """The probes whose lines a response to `probe` is tried against, in order."""
        key = probe  # Probe hashes by identity (eq=False): cheaper than a tuple
        got = self._chains.get(key)
        if got is None:
            seq: list[Probe] = [probe]
            for name in probe.fallback:
                other = "udp" if probe.proto == "tcp" else "tcp"
                fb = self._by_name.get((probe.proto, name)) or self._by_name.get((other, name))
                if fb is not None and fb not in seq:
                    seq.append(fb)
            null = self._by_name.get(("tcp", "NULL"))
            if probe.proto == "tcp" and null is not None and null not in seq:
                seq.append(null)
            got = self._chains[key] = tuple(seq)
        return got

    def search(self, line: MatchLine, data: bytes, timeout: float | None = None) -> Any:
        pat = line.compiled
        if pat is None or pat is _BAD:
            pat = self.compiled(line)
            if pat is None:
                return None
        try:
            # positional: regex parses keyword arguments slower than it runs a short search
            return pat.search(data, None, None, None, False, timeout or self.timeout)
        except TimeoutError:
            self.timeouts += 1
            return None

    def _index(self, probe: Probe) -> _ProbeIndex:
        key = probe  # Probe hashes by identity (eq=False): cheaper than a tuple
        idx = self._indexes.get(key)
        if idx is None:
            idx = self._indexes[key] = _ProbeIndex(probe)
        return idx

    def _candidates(self, probe: Probe, data: bytes) -> Sequence[int]:
        if self.prefilter is not None:
            cand: Sequence[int] | None = self.prefilter.candidates(probe, data)
            if cand is not None:
                return cand
        idx = self._indexes.get(probe) or self._index(probe)
        return idx.for_first_byte(data[0] if data else -1)

    def _scan(self, probe: Probe, data: bytes, timeout: float | None = None) -> tuple[MatchLine, Any] | None:
        matches = probe.matches
        head: dict[int, bytes] = {}
        for i in self._candidates(probe, data):
            line = matches[i]
            lit = line.literal
            if lit is None:
                lit = line_literal(line)
            if lit:
                n = len(lit)
                got = head.get(n)
                if got is None:
                    got = head[n] = data[:n]
                if got != lit and ("i" not in line.flags or got.lower() != lit):
                    continue
            m = self.search(line, data, timeout)
            if m is not None:
                return line, m
        return None

    def find(self, probe: Probe, data: bytes, timeout: float | None = None) -> tuple[MatchLine, Any] | None:
        """The first line (with its regex match) that matches `data` sent back to `probe`;
        `timeout`: seconds per regex call (default: the matcher's)."""
        for p in self._chains.get(probe) or self.chain(probe):
            found = self._scan(p, data, timeout)
            if found is not None:
                return found
        return None

    def match_probe_lines(self, probe: Probe, data: bytes) -> tuple[MatchLine, Any] | None:
        """Like find() but only over `probe`'s own lines (no fallback, no NULL)."""
        return self._scan(probe, data)

    def match(self, probe: Probe, data: bytes, timeout: float | None = None) -> Identification | None:
        found = self.find(probe, data, timeout)
        if found is None:
            return None
        line, m = found
        return identify(line, m)
