"""Example responses for match lines: the reader and the checker behind `servprobe db check`.

Owns the example-file format and `check(db, examples_dir) -> ExampleReport`.

An examples directory holds JSON files (`*.json`), each an object with a list "examples"::

    {"examples": [
      {"id": "ssh-openssh-debian",            # the line's "#@id" tag in the probe file
       "probe": "NULL", "proto": "tcp",       # the probe the response answered
       "response": "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n",
       "expect": {"service": "ssh", "product": "OpenSSH", "version": "9.2p1 Debian 2+deb12u3",
                  "info": "protocol 2.0", "ostype": "Linux", "cpes": ["cpe:/a:openbsd:openssh:9.2p1"]},
       "source": "real capture: openssh-server 1:9.2p1-2+deb12u3 (Debian 12), 2026-11-24"}
    ]}

"response" uses the probe-file escapes: \\\\ \\xHH \\0 \\r \\n \\t \\a \\b \\f \\v; every other
character stands for its own byte (latin-1). "expect" names the whole result: a field left
out must come out empty, so a template change that adds a field is noticed. "soft" defaults
to false. "line" may replace "id": the 1-based line number of the match line.

A line gets its id from a comment `#@id NAME` directly above it (nmap ignores comments, so
the file stays valid for nmap). The checker runs the database's real match order
(`ProbeDB.match`: the probe's lines, its fallbacks, then NULL) and requires that the very
line named by the example wins -- an earlier line that steals the response is a failure even
when it would report the same fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servprobe.probes.parser import unescape_probe_string

if TYPE_CHECKING:
    from servprobe.probes.model import Identification, ProbeDB

FIELDS = (
    "service",
    "soft",
    "product",
    "version",
    "info",
    "hostname",
    "ostype",
    "devicetype",
    "cpes",
)


class ExampleError(ValueError):
    """An example file that cannot be read; the message names FILE and entry."""


def unescape(text: str) -> bytes:
    """Decode an example "response" string (probe-file escapes) into the bytes a service sent."""
    for i, ch in enumerate(text):
        if ord(ch) > 0xFF:
            raise ValueError(f"character {ch!r} at {i} is not a byte; write \\xHH")
    return unescape_probe_string(text.encode("latin-1"))


def escape(data: bytes) -> str:
    """The inverse of `unescape`, readable: printable ASCII kept, \\r \\n \\t named."""
    named = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t"}
    return "".join(named.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}") for b in data)


@dataclass(frozen=True, slots=True)
class Example:
    """One example response and the identification it must produce."""

    file: str
    index: int  # position in its file's "examples" list
    probe: str
    proto: str
    response: bytes
    expect: dict[str, Any]
    line_id: str | None = None
    line: int | None = None
    source: str = ""

    @property
    def where(self) -> str:
        tag = self.line_id if self.line_id is not None else f"line {self.line}"
        return f"{self.file}[{self.index}] ({tag})"


@dataclass(slots=True)
class ExampleReport:
    """What `check` found. `ok` is true when nothing failed and every line has an example."""

    db_path: str
    examples: int = 0
    lines: int = 0
    failures: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "FILE:LINE service" of lines without one
    unknown_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failures or self.missing or self.unknown_ids)

    def summary(self) -> str:
        parts = [
            f"{self.db_path}: {self.lines} match lines, {self.examples} examples",
            f"{len(self.failures)} failing",
            f"{len(self.missing)} lines without examples",
        ]
        if self.unknown_ids:
            parts.append(f"{len(self.unknown_ids)} unknown ids")
        return ", ".join(parts)

    def format(self) -> str:
        out = [self.summary()]
        out += [f"FAIL {f}" for f in self.failures]
        out += [f"NO EXAMPLE {m}" for m in self.missing]
        out += [f"UNKNOWN ID {u}" for u in self.unknown_ids]
        return "\n".join(out)

    def as_dict(self) -> dict[str, Any]:
        return {
            "db": self.db_path,
            "examples": self.examples,
            "lines": self.lines,
            "ok": self.ok,
            "failures": self.failures,
            "missing": self.missing,
            "unknown_ids": self.unknown_ids,
        }


def line_ids(path: str | Path) -> dict[str, int]:
    """Map each `#@id NAME` tag of a probe file to the line number of the line below it."""
    ids: dict[str, int] = {}
    pending: str | None = None
    with open(path, encoding="latin-1") as fh:
        for number, raw in enumerate(fh, start=1):
            text = raw.strip()
            if text.startswith("#@id "):
                pending = text[5:].strip()
                continue
            if pending is not None and (text.startswith("match ") or text.startswith("softmatch ")):
                if pending in ids:
                    raise ExampleError(f"{path}:{number}: id {pending!r} used twice")
                ids[pending] = number
            if text and not text.startswith("#"):
                pending = None
    return ids


def read_examples(directory: str | Path) -> list[Example]:
    """Every example of every `*.json` file under `directory`, in file-name order."""
    out: list[Example] = []
    for path in sorted(Path(directory).rglob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExampleError(f"{path}: {exc}") from exc
        entries = doc.get("examples") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise ExampleError(f'{path}: expected an object with an "examples" list')
        for index, entry in enumerate(entries):
            out.append(_example(path, index, entry))
    return out


def _example(path: Path, index: int, entry: Any) -> Example:
    where = f"{path}[{index}]"
    if not isinstance(entry, dict):
        raise ExampleError(f"{where}: an example is a JSON object")
    for key in ("probe", "response", "expect"):
        if key not in entry:
            raise ExampleError(f"{where}: missing {key!r}")
    if "id" not in entry and "line" not in entry:
        raise ExampleError(f'{where}: give the line as "id" (its #@id tag) or "line"')
    expect = entry["expect"]
    if not isinstance(expect, dict) or "service" not in expect:
        raise ExampleError(f'{where}: "expect" must be an object with at least "service"')
    unknown = set(expect) - set(FIELDS)
    if unknown:
        raise ExampleError(f"{where}: unknown expect fields {sorted(unknown)}")
    proto = str(entry.get("proto", "tcp")).lower()
    if proto not in ("tcp", "udp"):
        raise ExampleError(f"{where}: proto must be tcp or udp")
    try:
        response = unescape(str(entry["response"]))
    except ValueError as exc:
        raise ExampleError(f"{where}: response: {exc}") from exc
    return Example(
        file=path.name,
        index=index,
        probe=str(entry["probe"]),
        proto=proto,
        response=response,
        expect=expect,
        line_id=entry.get("id"),
        line=entry.get("line"),
        source=str(entry.get("source", "")),
    )


def _differences(ident: Identification, expect: dict[str, Any]) -> list[str]:
    got = ident.as_dict()
    diffs = []
    for name in FIELDS:
        want = expect.get(name, [] if name == "cpes" else (False if name == "soft" else None))
        have = got[name]
        if name == "cpes":
            have = list(have)
            want = list(want)
        if have != want:
            diffs.append(f"{name}: expected {want!r}, got {have!r}")
    return diffs


def check_example(db: ProbeDB, example: Example, ids: dict[str, int]) -> str | None:
    """None when the example is identified by its own line with the expected fields."""
    if example.line_id is not None:
        if example.line_id not in ids:
            return f"{example.where}: no line tagged #@id {example.line_id}"
        target = ids[example.line_id]
    else:
        target = int(example.line)  # type: ignore[arg-type]
    try:
        ident = db.match(example.probe, example.response, example.proto)  # type: ignore[arg-type]
    except KeyError as exc:
        return f"{example.where}: {exc.args[0] if exc.args else exc}"
    if ident is None:
        return f"{example.where}: no line matched (expected line {target})"
    line = ident.source.line if ident.source else None
    if line != target:
        return (
            f"{example.where}: line {line} ({ident.service}) matched first, expected line {target}"
        )
    diffs = _differences(ident, example.expect)
    if diffs:
        return f"{example.where}: " + "; ".join(diffs)
    return None


def check(db: ProbeDB, examples_dir: str | Path) -> ExampleReport:
    """Run every example against `db` and list failures and match lines without examples."""
    report = ExampleReport(db_path=db.path)
    ids = line_ids(db.path)
    examples = read_examples(examples_dir)
    report.examples = len(examples)
    covered: set[int] = set()
    for example in examples:
        problem = check_example(db, example, ids)
        if problem is None:
            covered.add(ids[example.line_id] if example.line_id is not None else int(example.line))  # type: ignore[arg-type]
        else:
            report.failures.append(problem)
    used = {e.line_id for e in examples if e.line_id is not None}
    report.unknown_ids = sorted(u for u in used if u not in ids)
    all_lines = [m for p in db.probes for m in p.matches]
    report.lines = len(all_lines)
    for m in all_lines:
        if m.source.line not in covered:
            report.missing.append(f"{m.source} {'softmatch' if m.soft else 'match'} {m.service}")
    return report


# --------------------------------------------------------------------------- measuring
# The figures of issue 13's field measurement, computed the same way over any labelled set:
# identified = a hard match naming a product; version right = our version equals the real one
# or starts with it followed by a separator; named wrongly = a product named that is not the
# real one (share of what we name).
_VERSION_SEPARATORS = " -_.+~:/("


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def version_right(ours: str | None, real: str) -> bool:
    if not ours:
        return False
    return ours == real or (ours.startswith(real) and ours[len(real)] in _VERSION_SEPARATORS)


def product_right(ours: str, names: list[str]) -> bool:
    """Ours names the real product: one of its accepted names is inside ours, or ours in it."""
    o = _norm(ours)
    return any(n and (n in o or o in n) for n in map(_norm, names))


@dataclass(slots=True)
class Figures:
    """Counts for one protocol; the percentages are what the issue tracks."""

    total: int = 0
    identified: int = 0
    with_version: int = 0  # entries whose real version is known
    version_right: int = 0
    wrong: int = 0  # products named that are not the real one

    def as_dict(self) -> dict[str, float | int | None]:
        def pct(a: int, b: int) -> float | None:  # None: nothing to count
            return round(100.0 * a / b, 1) if b else None

        return {"total": self.total, "identified_pct": pct(self.identified, self.total),
                "version_right_pct": pct(self.version_right, self.with_version),
                "wrong_pct": pct(self.wrong, self.identified)}


@dataclass(frozen=True, slots=True)
class Labelled:
    """A response with the product (its accepted names) and version it really comes from."""

    protocol: str
    probe: str
    proto: str
    response: bytes
    names: tuple[str, ...]  # empty: the response names no product
    version: str | None


def read_labelled(path: str | Path) -> list[Labelled]:
    """An evaluation file: {"entries": [{protocol, probe, proto, response, truth}]}."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for i, e in enumerate(doc["entries"]):
        try:
            truth = e["truth"]
            out.append(Labelled(e["protocol"], e["probe"], e.get("proto", "tcp"),
                                unescape(e["response"]), tuple(truth.get("names") or ()),
                                truth.get("version")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ExampleError(f"{path}[{i}]: {exc}") from exc
    return out


def labelled_examples(examples: list[Example]) -> list[Labelled]:
    """Examples as labelled entries: their expected product and version are the truth."""
    return [Labelled(e.expect["service"], e.probe, e.proto, e.response,
                     (e.expect["product"],) if e.expect.get("product") else (),
                     e.expect.get("version")) for e in examples]


def measure(db: ProbeDB, entries: list[Labelled]) -> dict[str, Figures]:
    """Figures per protocol (and "all") for `db` over `entries`."""
    out: dict[str, Figures] = {}
    for entry in entries:
        try:
            ident = db.match(entry.probe, entry.response, entry.proto)  # type: ignore[arg-type]
        except KeyError:  # the database has no such probe: nothing identified
            ident = None
        for key in (entry.protocol, "all"):
            fig = out.setdefault(key, Figures())
            fig.total += 1
            named = ident is not None and not ident.soft and bool(ident.product)
            if named:
                fig.identified += 1
                if not (entry.names and product_right(ident.product, list(entry.names))):  # type: ignore[union-attr, arg-type]
                    fig.wrong += 1
            if entry.version:
                fig.with_version += 1
                if named and version_right(ident.version, entry.version):  # type: ignore[union-attr]
                    fig.version_right += 1
    return out
