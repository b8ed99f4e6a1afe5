"""`servprobe diff OLD NEW`: what changed between two scans.

Inputs are servprobe scan stores (SQLite, `--store`) or XML files (`-oX`, ours or nmap's),
in any mix. A port is compared by (address, proto, port); changes are:
  opened   open (or open|filtered) now, not before
  closed   open before, not now (closed, filtered, or no longer listed)
  changed  open in both, but service, product, version, extrainfo or tunnel differ
A port counts as opened or closed only if both scans covered it: a port open now that the
older scan's port list did not include is "not scanned before" (kind `unscanned-before`),
one open before that the newer scan left out is "not rescanned" (kind `unscanned`). Those
are listed apart and do not count as changes.

Exit status like diff(1) and ndiff: 0 nothing changed that both scans saw, 1 something did
(a port opened, closed or changed, a host came up or went down), 2 error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servprobe.escape import terminal_safe
from servprobe.result import ServiceResult

OPEN_STATES = frozenset({"open", "open|filtered"})
COMPARED = ("service", "product", "version", "extrainfo", "tunnel")

USAGE_EXAMPLES = """\
examples:
  servprobe diff monday.sqlite tuesday.sqlite
  servprobe diff old.xml new.xml --json
  servprobe diff scans.sqlite scans.sqlite --old-scan 3 --new-scan 5
  servprobe diff nmap-baseline.xml today.sqlite

exit status: 0 no change both scans saw (ports only one scan covered are listed apart,
  as "not scanned before" / "not rescanned"), 1 changes found, 2 error
"""


class DiffInputError(Exception):
    """An input that cannot be read; the message names the file."""


@dataclass(slots=True)
class Snapshot:
    """One scan, reduced to what diff compares."""

    label: str
    ports: dict[tuple[str, str, int], ServiceResult] = field(default_factory=dict)
    hosts_up: set[str] = field(default_factory=set)
    scanned: dict[str, set[int]] | None = None  # proto → ports asked for, when known
    start: float | None = None

    def was_scanned(self, proto: str, port: int) -> bool:
        if self.scanned is None or proto not in self.scanned:
            return True  # unknown: assume it was
        return port in self.scanned[proto]


@dataclass(slots=True)
class Change:
    kind: str  # opened | closed | changed | unscanned (not rescanned) | unscanned-before
    address: str
    proto: str
    port: int
    old: ServiceResult | None
    new: ServiceResult | None
    fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "change": self.kind,
            "address": self.address,
            "proto": self.proto,
            "port": self.port,
            "fields": self.fields,
            "old": _brief(self.old),
            "new": _brief(self.new),
        }


def _brief(r: ServiceResult | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "state": r.state,
        "service": r.service,
        "product": r.product,
        "version": r.version,
        "extrainfo": r.extrainfo,
        "tunnel": r.tunnel,
        "cpes": list(r.cpes),
    }


# -- reading inputs -------------------------------------------------------------------------


def _ports_from_spec(spec: dict[str, str]) -> dict[str, set[int]] | None:
    from servprobe.portspec import PortSpecError, parse_portspec

    out: dict[str, set[int]] = {}
    for proto, text in spec.items():
        if proto not in ("tcp", "udp") or not text:
            continue
        try:
            out[proto] = parse_portspec(text, default_protos=(proto,)).get(proto)
        except PortSpecError:
            return None
    return out or None


def load_store(path: Path, scan_id: int | None, which: str) -> Snapshot:
    from servprobe.store import Store, StoreError

    try:
        store = Store.open(path, create=False)
    except StoreError as exc:
        raise DiffInputError(str(exc)) from None
    try:
        if scan_id is None and which == "old-of-same":
            scans = store.scans()
            if len(scans) < 2:
                raise DiffInputError(f"{path}: holds one scan only; name two files or --old-scan")
            scan_id = scans[-2].id
        run = store.scan_run(scan_id)
        info = store.scan(scan_id)
    except StoreError as exc:
        raise DiffInputError(str(exc)) from None
    finally:
        store.close()
    snap = Snapshot(label=f"{path} (scan #{info.id}, {info.status})", start=run.start)
    for host in run.hosts:
        if host.status == "up" or host.ports:
            snap.hosts_up.add(host.address)
        for r in host.ports:
            snap.ports[r.key] = r
    if run.ports_spec:
        snap.scanned = _ports_from_spec(run.ports_spec)
    return snap


def load_xml(path: Path) -> Snapshot:
    from servprobe.commands.convert import ConvertError, read_xml

    try:
        run = read_xml(path)
    except ConvertError as exc:
        raise DiffInputError(str(exc)) from None
    snap = Snapshot(label=str(path), start=run.start or None)
    if run.ports_spec:
        snap.scanned = _ports_from_spec(run.ports_spec)
    for host in run.hosts:
        if host.status == "up":
            snap.hosts_up.add(host.address)
        for r in host.ports:
            snap.ports[r.key] = r
    return snap


def load(path_text: str, scan_id: int | None, which: str = "latest") -> Snapshot:
    from servprobe.commands.convert import ConvertError, kind_of

    path = Path(path_text)
    try:
        kind = kind_of(path)
    except ConvertError as exc:
        raise DiffInputError(str(exc)) from None
    if kind == "store":
        return load_store(path, scan_id, which)
    if scan_id is not None:
        raise DiffInputError(f"{path}: --old-scan/--new-scan only apply to stores")
    return load_xml(path)


# -- comparing ------------------------------------------------------------------------------


def _is_open(r: ServiceResult | None) -> bool:
    return r is not None and r.state in OPEN_STATES


def compare(old: Snapshot, new: Snapshot) -> list[Change]:
    changes: list[Change] = []
    for key in sorted(set(old.ports) | set(new.ports), key=_key_order):
        a, b = old.ports.get(key), new.ports.get(key)
        address, proto, port = key
        if _is_open(a) and _is_open(b):
            assert a is not None and b is not None
            diff = [f for f in COMPARED if (getattr(a, f) or None) != (getattr(b, f) or None)]
            if diff:
                changes.append(Change("changed", address, proto, port, a, b, diff))
        elif _is_open(b):
            if a is None and not old.was_scanned(proto, port):
                changes.append(Change("unscanned-before", address, proto, port, None, b))
            else:
                changes.append(Change("opened", address, proto, port, a, b))
        elif _is_open(a):
            if b is None and not new.was_scanned(proto, port):
                changes.append(Change("unscanned", address, proto, port, a, None))
            else:
                changes.append(Change("closed", address, proto, port, a, b))
    return changes


def _key_order(key: tuple[str, str, int]) -> tuple[Any, ...]:
    import ipaddress

    address, proto, port = key
    try:
        ip = ipaddress.ip_address(address)
        akey: tuple[Any, ...] = (ip.version, int(ip))
    except ValueError:
        akey = (9, address)
    return (*akey, proto, port)


# -- output ---------------------------------------------------------------------------------

_MARK = {"opened": "+", "closed": "-", "changed": "~", "unscanned": "?", "unscanned-before": "?"}
# kinds that mean "something changed that both scans saw" (the exit status)
SEEN_BY_BOTH = frozenset({"opened", "closed", "changed"})


def _describe(r: ServiceResult | None) -> str:
    if r is None:
        return "not listed"
    text = r.state
    if r.state in OPEN_STATES:
        svc = r.display_service() if r.service else "unknown"
        ver = r.display_version()
        text = f"{r.state} {svc}" + (f" {ver}" if ver else "")
    return text


def render_text(old: Snapshot, new: Snapshot, changes: list[Change]) -> str:
    lines = [f"--- {old.label}", f"+++ {new.label}"]
    appeared = sorted(new.hosts_up - old.hosts_up)
    gone = sorted(old.hosts_up - new.hosts_up)
    for h in appeared:
        lines.append(f"host {h}: up (was not up)")
    for h in gone:
        lines.append(f"host {h}: not up any more")
    current = None
    for c in changes:
        if c.address != current:
            current = c.address
            lines.append(f"{c.address}:")
        where = f"{c.port}/{c.proto}"
        if c.kind == "changed":
            lines.append(
                f"  ~ {where:<11} {_describe(c.old)}  ->  {_describe(c.new)}"
                f"  [{', '.join(c.fields)}]"
            )
        elif c.kind == "opened":
            lines.append(f"  + {where:<11} {_describe(c.new)}  (was {_describe(c.old)})")
        elif c.kind == "closed":
            lines.append(f"  - {where:<11} {_describe(c.new)}  (was {_describe(c.old)})")
        elif c.kind == "unscanned-before":
            lines.append(f"  ? {where:<11} {_describe(c.new)}  (not scanned before)")
        else:
            lines.append(f"  ? {where:<11} not rescanned  (was {_describe(c.old)})")
    counts = {k: sum(1 for c in changes if c.kind == k) for k in _MARK}
    names = {"unscanned": "not rescanned", "unscanned-before": "not scanned before"}
    summary = ", ".join(f"{n} {names.get(k, k)}" for k, n in counts.items() if n) or "no changes"
    lines.append(f"# {summary}")
    # service text came from the network: never let it drive the terminal
    return "\n".join(terminal_safe(line) for line in lines) + "\n"


def render_json(old: Snapshot, new: Snapshot, changes: list[Change]) -> str:
    doc = {
        "old": {"source": old.label, "start": old.start},
        "new": {"source": new.label, "start": new.start},
        "hosts_appeared": sorted(new.hosts_up - old.hosts_up),
        "hosts_gone": sorted(old.hosts_up - new.hosts_up),
        "changes": [c.to_dict() for c in changes],
    }
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="servprobe diff",
        description="Show what changed between two scans (stores or -oX files).",
        epilog=USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("old", metavar="OLD", help="earlier scan: a servprobe store or an XML file")
    p.add_argument("new", metavar="NEW", help="later scan: a servprobe store or an XML file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--old-scan", type=int, metavar="ID", help="scan id inside the OLD store")
    p.add_argument("--new-scan", type=int, metavar="ID", help="scan id inside the NEW store")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE")
    return p


def main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        opts = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    same = Path(opts.old).resolve() == Path(opts.new).resolve()
    try:
        old = load(opts.old, opts.old_scan, "old-of-same" if same and opts.old_scan is None else "latest")
        new = load(opts.new, opts.new_scan)
    except DiffInputError as exc:
        print(f"servprobe diff: {exc}", file=sys.stderr)
        return 2
    changes = compare(old, new)
    text = render_json(old, new, changes) if opts.json else render_text(old, new, changes)
    if opts.output:
        try:
            Path(opts.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"servprobe diff: {opts.output}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    differs = any(c.kind in SEEN_BY_BOTH for c in changes) or old.hosts_up != new.hosts_up
    return 1 if differs else 0
