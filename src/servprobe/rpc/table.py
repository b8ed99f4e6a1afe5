"""The RPC program table: numbers, names and aliases the grinder tries and reports.

Our own file (src/servprobe/data/rpc-programs, every entry with its public source) comes
first; the machine's /etc/rpc and nmap's nmap-rpc, when present, are read at run time and add
the programs we do not list (our names win where both know a number). All three use the
/etc/rpc format: `name number [alias ...] [# comment]`. Parse errors carry FILE:LINE.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

SYSTEM_RPC = "/etc/rpc"
NMAP_RPC_PATHS = ("/usr/share/nmap/nmap-rpc", "/usr/local/share/nmap/nmap-rpc")
BUNDLED = "rpc-programs"


class RpcTableError(ValueError):
    """A malformed line in an RPC table file; the message starts with FILE:LINE."""


@dataclass(frozen=True, slots=True)
class RpcProgram:
    number: int
    name: str
    aliases: tuple[str, ...] = ()
    source: str = ""  # where the entry came from: the comment of our file, or FILE:LINE


@dataclass(slots=True)
class RpcTable:
    programs: dict[int, RpcProgram] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.programs)

    def __contains__(self, number: object) -> bool:
        return number in self.programs

    def __iter__(self) -> Iterator[RpcProgram]:
        return iter(self.programs.values())

    def name(self, number: int) -> str:
        """Name to report; a program we have no name for is shown as rpc-NUMBER."""
        prog = self.programs.get(number)
        return prog.name if prog else f"rpc-{number}"

    def numbers(self) -> list[int]:
        """Grinding order: the order the table was built in (ours first, ascending)."""
        return list(self.programs)

    def add(self, programs: Iterable[RpcProgram]) -> int:
        added = 0
        for prog in programs:
            if prog.number not in self.programs:
                self.programs[prog.number] = prog
                added += 1
        return added

    def lookup(self, name_or_number: str) -> RpcProgram | None:
        """By number, name or alias (case-insensitive)."""
        text = name_or_number.strip()
        if text.isdigit():
            return self.programs.get(int(text))
        low = text.lower()
        for prog in self.programs.values():
            if prog.name.lower() == low or low in (a.lower() for a in prog.aliases):
                return prog
        return None


def parse_table(text: str, filename: str, *, strict: bool = True) -> list[RpcProgram]:
    """Parse /etc/rpc-format text. strict=False skips bad lines instead of raising
    (used for the machine's own files, which are not ours to reject)."""
    out: list[RpcProgram] = []
    seen: dict[int, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line, _, comment = raw.partition("#")
        fields = line.split()
        if not fields:
            continue
        where = f"{filename}:{lineno}"
        try:
            if len(fields) < 2:
                raise RpcTableError(f"{where}: expected 'name number [aliases]': {raw.strip()!r}")
            name, num_text, *aliases = fields
            try:
                number = int(num_text, 0)
            except ValueError:
                raise RpcTableError(f"{where}: bad program number {num_text!r}") from None
            if not 0 < number <= 0xFFFFFFFF:
                raise RpcTableError(f"{where}: program number {number} out of range")
            if strict and number in seen:
                raise RpcTableError(
                    f"{where}: program {number} already listed at line {seen[number]}"
                )
        except RpcTableError:
            if strict:
                raise
            continue
        seen.setdefault(number, lineno)
        source = comment.strip() if strict else where
        out.append(RpcProgram(number, name, tuple(aliases), source or where))
    return out


def read_table_file(path: str | os.PathLike[str], *, strict: bool = True) -> list[RpcProgram]:
    p = Path(path)
    return parse_table(p.read_text(encoding="utf-8", errors="replace"), str(p), strict=strict)


def bundled_text() -> tuple[str, str]:
    ref = resources.files("servprobe") / "data" / BUNDLED
    return ref.read_text(encoding="utf-8"), str(ref)


def load_table(
    extra_files: Iterable[str] | None = None,
    *,
    system: bool = True,
) -> RpcTable:
    """Bundled table, then extra_files, then (system=True) /etc/rpc and nmap-rpc if present."""
    table = RpcTable()
    text, name = bundled_text()
    ours = sorted(parse_table(text, name), key=lambda p: p.number)
    table.add(ours)
    table.files.append(name)
    paths = list(extra_files or [])
    if system:
        paths.append(SYSTEM_RPC)
        paths.extend(
            NMAP_RPC_PATHS[:1] if os.path.exists(NMAP_RPC_PATHS[0]) else NMAP_RPC_PATHS[1:]
        )
    extra_programs: list[RpcProgram] = []
    for path in paths:
        if not os.path.exists(path):
            continue
        try:
            progs = read_table_file(path, strict=path in (extra_files or []))
        except OSError:
            continue
        extra_programs.extend(progs)
        table.files.append(path)
    # Programs only the other files know go after ours, ascending, so the grind order is stable.
    fresh: dict[int, RpcProgram] = {}
    for prog in extra_programs:
        if prog.number not in table.programs:
            fresh.setdefault(prog.number, prog)
    table.add(sorted(fresh.values(), key=lambda p: p.number))
    return table


@functools.lru_cache(maxsize=4)
def default_table(system: bool = True) -> RpcTable:
    return load_table(system=system)
