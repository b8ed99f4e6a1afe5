"""`servprobe db lint`: mistakes a probe file can hold that parse and load fine.

Owns `lint(db, examples_dir=None, budget=...) -> LintReport` and its four checks:

- **shadowed**: a line that strings built from its own pattern never reach, because an
  earlier line of the same probe matches them first (the database's real match order,
  `ProbeDB.match`). Witness strings come from the pattern's parse tree (the shortest one, and
  one with every repeat taken once more and other alternatives); a line is reported only
  when it matches its witnesses itself and every one of them goes to an earlier line.
  With `examples_dir`, lines without an example are listed too (`no-example`).
- **backtracking**: patterns with a repeat nested inside another repeat (not possessive), or
  a repeated group whose body can match texts of different lengths (`(?:a|aa)+`), are risky shapes; each is run on crafted near-miss inputs (its witness with a
  long run of the inner repeat's characters spliced in, then a byte that breaks the match)
  under a time budget per search. A search that runs out of budget is a finding.
- **spelling**: one product named two ways (same letters and digits, different case,
  spaces or punctuation: "Apache httpd" / "Apache HTTPd").
- **cpe**: `cpe:` templates that are not CPE 2.2 URIs (`cpe:/{a,h,o}:vendor[:product
  [:version[:update[:edition[:language]]]]]`, components of `[a-z0-9._~%-]`, `$n`/`$P(n)`/
  `$SUBST(...)`/`$I(...)` substitutions allowed).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from servprobe.probes.pcre import _sre_parse, translate

if TYPE_CHECKING:
    from servprobe.probes.model import MatchLine, ProbeDB

_C = _sre_parse  # constants live beside the parser (re._constants re-exported there)
_LIT, _NLIT, _ANY, _IN = _C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN
_BRANCH, _SUB, _AT = _C.BRANCH, _C.SUBPATTERN, _C.AT
_REPEATS = {_C.MAX_REPEAT, _C.MIN_REPEAT, getattr(_C, "POSSESSIVE_REPEAT", None)} - {None}
_POSSESSIVE = getattr(_C, "POSSESSIVE_REPEAT", None)
_ATOMIC = getattr(_C, "ATOMIC_GROUP", None)
_ASSERTS = {_C.ASSERT, _C.ASSERT_NOT}
_GROUPREF = _C.GROUPREF
_GROUPREF_EXISTS = _C.GROUPREF_EXISTS
_MAXREPEAT = _C.MAXREPEAT
_PREFERRED = b"a0A.-_/: 1bxZ"
_CATEGORIES = {
    _C.CATEGORY_DIGIT: set(b"0123456789"),
    _C.CATEGORY_NOT_DIGIT: set(range(256)) - set(b"0123456789"),
    _C.CATEGORY_SPACE: set(b" \t\n\r\x0b\x0c"),
    _C.CATEGORY_NOT_SPACE: set(range(256)) - set(b" \t\n\r\x0b\x0c"),
    _C.CATEGORY_WORD: set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"),
    _C.CATEGORY_NOT_WORD: set(range(256))
    - set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"),
}
_NEAR_MISS_RUNS = (24, 48)
_CPE_PART = re.compile(r"""(?:[a-z0-9._~%-]|\$\d|\$P\(\d\)|\$SUBST\(\d,"[^"]*","[^"]*"\)|\$I\(\d,"[<>]"\))*""")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # shadowed | no-example | backtracking | spelling | cpe
    where: str  # FILE:LINE
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass(slots=True)
class LintReport:
    db_path: str
    lines: int = 0
    checked_shadow: int = 0  # lines with a witness they match themselves
    risky_shapes: int = 0  # patterns with a risky repeat, tried on near-miss inputs
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("shadowed", "no-example", "backtracking", "spelling", "cpe")}
        for f in self.findings:
            out[f.kind] += 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"db": self.db_path, "lines": self.lines, "checked_shadow": self.checked_shadow,
                "risky_shapes": self.risky_shapes, "counts": self.counts(), "ok": self.ok,
                "findings": [{"kind": f.kind, "where": f.where, "message": f.message}
                             for f in self.findings]}


# --------------------------------------------------------------------- witness strings
def _charset(items: Any, icase: bool) -> set[int]:
    negate = False
    chars: set[int] = set()
    for op, av in items:
        if op is _C.NEGATE:
            negate = True
        elif op is _LIT:
            chars.add(av)
        elif op is _C.RANGE:
            chars.update(range(av[0], av[1] + 1))
        elif op is _C.CATEGORY:
            chars |= _CATEGORIES.get(av, set())
    if icase:
        chars |= {c ^ 0x20 for c in chars if 0x41 <= (c & ~0x20) <= 0x5A}
    return (set(range(256)) - chars) if negate else chars


def _pick(chars: set[int], variant: int) -> int:
    order = list(_PREFERRED) if variant == 0 else list(reversed(_PREFERRED))
    for c in order:
        if c in chars:
            return c
    printable = [c for c in range(0x20, 0x7F) if c in chars]
    return (printable or sorted(chars) or [0])[0 if variant == 0 else -1]


class _Gen:
    """Builds one string a parse tree matches (lookarounds ignored: the result is verified)."""

    def __init__(self, icase: bool, variant: int) -> None:
        self.icase = icase
        self.variant = variant
        self.groups: dict[int, bytes] = {}

    def run(self, tree: Any) -> bytes:
        out = bytearray()
        for op, av in tree:
            out += self.item(op, av)
        return bytes(out)

    def item(self, op: Any, av: Any) -> bytes:
        if op is _LIT:
            return bytes([av])
        if op is _NLIT:
            return bytes([_pick(set(range(256)) - {av}, self.variant)])
        if op is _ANY:
            return bytes([_pick(set(range(256)) - {10}, self.variant)])
        if op is _IN:
            return bytes([_pick(_charset(av, self.icase), self.variant)])
        if op is _BRANCH:
            alts = av[1]
            return self.run(alts[self.variant % len(alts)])
        if op is _SUB:
            text = self.run(av[-1])
            if av[0] is not None:
                self.groups[av[0]] = text
            return text
        if op in _REPEATS:
            lo, hi, sub = av
            n = lo if self.variant == 0 else min(hi, lo + 1)
            return b"".join(self.run(sub) for _ in range(n))
        if _ATOMIC is not None and op is _ATOMIC:
            return self.run(av)
        if op is _GROUPREF:
            return self.groups.get(av, b"")
        if op is _GROUPREF_EXISTS:
            return self.run(av[1])
        return b""  # AT, ASSERT, ASSERT_NOT and the rest add no characters


def _tree(line: MatchLine) -> Any:
    flags = (re.IGNORECASE if "i" in line.flags else 0) | (re.DOTALL if "s" in line.flags else 0)
    return _sre_parse.parse(translate(line.pattern).decode("latin-1"), flags)


def witnesses(line: MatchLine) -> list[bytes]:
    """Strings built from the line's pattern (not yet verified against it)."""
    try:
        tree = _tree(line)
    except Exception:
        return []
    out = []
    for variant in (0, 1):
        try:
            w = _Gen("i" in line.flags, variant).run(tree)
        except RecursionError:
            continue
        if w not in out:
            out.append(w)
    return out


# --------------------------------------------------------------------- checks
def _search(matcher: Any, line: MatchLine, data: bytes, budget: float) -> tuple[bool, bool]:
    """(matched, ran out of budget)."""
    pat = matcher.compiled(line)
    if pat is None:
        return False, False
    try:
        return pat.search(data, timeout=budget) is not None, False
    except TimeoutError:
        return False, True


def _shadowed(db: ProbeDB, report: LintReport, budget: float) -> None:
    matcher = db.matcher
    for probe in db.probes:
        for line in probe.matches:
            own = [w for w in witnesses(line) if _search(matcher, line, w, budget)[0]]
            if not own:
                continue
            report.checked_shadow += 1
            winners = []
            for w in own:
                ident = db.match(probe.name, w, probe.proto)
                src = ident.source if ident is not None else None
                if src is None or src.line == line.source.line or src.file != line.source.file:
                    break
                winners.append(src.line)
            else:
                shown = ", ".join(sorted({str(n) for n in winners}))
                report.findings.append(Finding(
                    "shadowed", str(line.source),
                    f"{'softmatch' if line.soft else 'match'} {line.service}: every string built "
                    f"from its pattern is taken by earlier line {shown}"))


def _nested_repeat(tree: Any, inside: bool = False) -> set[int] | None:
    """Characters of an inner repeat nested in an outer one, or None when there is none."""
    for op, av in tree:
        if op in _REPEATS:
            _lo, hi, sub = av
            if op is _POSSESSIVE:
                continue
            if hi > 1 and inside:
                return _first_chars(sub) or set(range(256))
            if hi > 1 and _variable_width(sub):  # (?:a|aa)+: one text, many ways to split it
                return _first_chars(sub) or set(range(256))
            found = _nested_repeat(sub, inside or hi > 1)
            if found is not None:
                return found
        elif op is _SUB:
            found = _nested_repeat(av[-1], inside)
            if found is not None:
                return found
        elif op is _BRANCH:
            for alt in av[1]:
                found = _nested_repeat(alt, inside)
                if found is not None:
                    return found
    return None


def _variable_width(tree: Any) -> bool:
    """A repeated body that can match texts of different lengths, without a repeat inside
    (those are found as nested repeats): alternatives of different widths."""
    try:
        lo, hi = tree.getwidth()
    except Exception:
        return False
    return lo != hi and not any(op in _REPEATS for op, _ in _walk(tree))


def _walk(tree: Any) -> Any:
    for op, av in tree:
        yield op, av
        if op is _SUB:
            yield from _walk(av[-1])
        elif op in _REPEATS:
            yield from _walk(av[2])
        elif op is _BRANCH:
            for alt in av[1]:
                yield from _walk(alt)


def _first_chars(tree: Any) -> set[int]:
    for op, av in tree:
        if op is _LIT:
            return {av}
        if op is _IN:
            return _charset(av, False)
        if op is _ANY:
            return set(range(256)) - {10}
        if op is _NLIT:
            return set(range(256)) - {av}
        if op is _SUB:
            return _first_chars(av[-1])
        if op in _REPEATS:
            return _first_chars(av[2])
        if op is _BRANCH:
            out: set[int] = set()
            for alt in av[1]:
                out |= _first_chars(alt)
            return out
    return set()


def _backtracking(db: ProbeDB, report: LintReport, budget: float) -> None:
    matcher = db.matcher
    for probe in db.probes:
        for line in probe.matches:
            try:
                inner = _nested_repeat(_tree(line))
            except Exception:
                continue
            if inner is None:
                continue
            report.risky_shapes += 1
            run_chars = bytes(sorted(inner)[:2]) or b"a"
            slow = None
            for w in witnesses(line) or [b""]:
                for n in _NEAR_MISS_RUNS:
                    pump = (run_chars * n)[:n]
                    for cut in range(0, len(w) + 1, max(1, len(w) // 8)):
                        near = w[:cut] + pump + b"\x00"
                        t0 = time.perf_counter()
                        _matched, out = _search(matcher, line, near, budget)
                        if out:
                            slow = (len(near), time.perf_counter() - t0)
                            break
                    if slow:
                        break
                if slow:
                    break
            if slow:
                report.findings.append(Finding(
                    "backtracking", str(line.source),
                    f"repeat that can split one text many ways: a {slow[0]}-byte near-miss input ran past the "
                    f"{budget * 1000:.0f} ms budget"))


def _spelling(db: ProbeDB, report: LintReport) -> None:
    seen: dict[str, dict[str, str]] = {}
    for probe in db.probes:
        for line in probe.matches:
            name = line.template.product
            if not name or "$" in name:
                continue
            key = re.sub(r"[^a-z0-9]", "", name.lower())
            seen.setdefault(key, {}).setdefault(name, line.source)
    for spellings in seen.values():
        if len(spellings) > 1:
            names = sorted(spellings, key=lambda n: spellings[n].line)
            rest = "; ".join(f"{n!r} at {spellings[n]}" for n in names[1:])
            report.findings.append(Finding(
                "spelling", str(spellings[names[0]]),
                f"product {names[0]!r} is also spelled {rest}"))


def cpe_problem(cpe: str) -> str | None:
    """Why a cpe: template is not a CPE 2.2 URI, or None when it is one."""
    if not cpe.startswith("cpe:/"):
        return "does not start with cpe:/"
    parts = cpe[5:].split(":")
    if parts[0] not in ("a", "h", "o"):
        return f"part {parts[0]!r} is not a, h or o"
    if len(parts) < 2 or not parts[1]:
        return "no vendor"
    if len(parts) > 7:
        return f"{len(parts) - 1} components (at most 6 after the part)"
    for comp in parts[1:]:
        if not _CPE_PART.fullmatch(comp):
            return f"component {comp!r} has characters a CPE URI does not allow"
    return None


def _cpes(db: ProbeDB, report: LintReport) -> None:
    for probe in db.probes:
        for line in probe.matches:
            for cpe in line.template.cpes:
                problem = cpe_problem(cpe)
                if problem:
                    report.findings.append(Finding("cpe", str(line.source), f"{cpe}: {problem}"))


def lint(db: ProbeDB, examples_dir: str | Path | None = None, *,
         budget: float = 0.05) -> LintReport:
    """Run every check on `db`; `budget` is the seconds one near-miss search may take."""
    if db.matcher is None:
        from servprobe.probes.matcher import Matcher

        db.matcher = Matcher(db)
    report = LintReport(db_path=db.path)
    report.lines = sum(len(p.matches) for p in db.probes)
    _shadowed(db, report, budget)
    if examples_dir is not None:
        from servprobe.probes import examples

        for missing in examples.check(db, examples_dir).missing:
            where, _, what = missing.partition(" ")
            report.findings.append(Finding("no-example", where, f"{what}: no example reaches it"))
    _backtracking(db, report, budget)
    _spelling(db, report)
    _cpes(db, report)
    report.findings.sort(key=lambda f: (f.kind, f.where))
    return report
