"""The durable scan store: every finished result goes to SQLite the moment it arrives.

Why SQLite in WAL mode with `synchronous=NORMAL` and one commit per result: a commit then
appends to the write-ahead log without an fsync, so it costs microseconds, yet a process
killed with SIGKILL loses nothing that was committed (the WAL lives in the OS page cache and
is replayed on the next open). Only a power cut may drop the last few commits. So a crash
loses at most the services still in flight, which is exactly what `--resume` redoes.

Schema (version in `PRAGMA user_version`):
  scans     one row per run: argv, what was asked (targets/ports spec), start/end, probe db,
            status running | done | interrupted | failed
  hosts     per (scan, address): up/down, hostnames, times, extraports counts, whether
            its port scan finished, and whether the whole host is complete (then its
            HostResult is kept as JSON and a resume replays it without scanning it again)
  ports     per (scan, address, proto, port) the port scan found worth a service scan
            (open, open|filtered): the work list a resume still has to finish
  results   per (scan, address, proto, port): one finished ServiceResult as JSON (every
            field, rpc and cpes included) plus the key columns for queries

Several processes may read a store while a scan writes it (WAL); one scan writes at a time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servprobe.result import HostResult, RpcInfo, ScanRun, ScriptResult, ServiceResult

SCHEMA_VERSION = 1
STATUSES = ("running", "done", "interrupted", "failed")
Key = tuple[str, str, int]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id        INTEGER PRIMARY KEY,
    args      TEXT NOT NULL,            -- JSON list: argv as given (without the program)
    spec      TEXT NOT NULL,            -- JSON object: targets, ports, anything the CLI adds
    db_path   TEXT NOT NULL DEFAULT '',
    version   TEXT NOT NULL DEFAULT '',
    start     REAL NOT NULL,
    end       REAL,
    status    TEXT NOT NULL DEFAULT 'running',
    resumed   INTEGER NOT NULL DEFAULT 0  -- how many times --resume continued it
);
CREATE TABLE IF NOT EXISTS hosts (
    scan_id      INTEGER NOT NULL REFERENCES scans(id),
    address      TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'unknown',
    reason       TEXT NOT NULL DEFAULT '',
    hostnames    TEXT NOT NULL DEFAULT '[]',
    extraports   TEXT NOT NULL DEFAULT '{}',  -- JSON {"tcp": {"closed": 995}, "udp": {...}}
    portscan     TEXT NOT NULL DEFAULT '[]',  -- JSON list of protos whose port scan finished
    starttime    REAL,
    endtime      REAL,
    complete     INTEGER NOT NULL DEFAULT 0,  -- the whole host is final (resume skips it)
    data         TEXT,                        -- JSON HostResult without ports, when complete
    PRIMARY KEY (scan_id, address)
);
CREATE TABLE IF NOT EXISTS ports (
    scan_id  INTEGER NOT NULL REFERENCES scans(id),
    address  TEXT NOT NULL,
    proto    TEXT NOT NULL,
    port     INTEGER NOT NULL,
    state    TEXT NOT NULL,
    reason   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (scan_id, address, proto, port)
);
CREATE TABLE IF NOT EXISTS results (
    scan_id   INTEGER NOT NULL REFERENCES scans(id),
    address   TEXT NOT NULL,
    proto     TEXT NOT NULL,
    port      INTEGER NOT NULL,
    state     TEXT NOT NULL,
    service   TEXT,
    product   TEXT,
    version   TEXT,
    finished  REAL NOT NULL,
    data      TEXT NOT NULL,             -- JSON of every ServiceResult field
    PRIMARY KEY (scan_id, address, proto, port)
);
"""


class StoreError(Exception):
    """A store that cannot be opened, read or resumed; the message names the file."""


def result_to_json(result: ServiceResult) -> str:
    """Every field of a ServiceResult, as JSON (rpc as an object, cpes as a list)."""
    # ASCII JSON: a lone surrogate or any odd code point survives the UTF-8 round trip
    return json.dumps(dataclasses.asdict(result), ensure_ascii=True, separators=(",", ":"))


def _column(text: str | None) -> str | None:
    """A text field for the query columns (JSON keeps the exact value): valid UTF-8 only."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def host_to_json(host: HostResult) -> str:
    """A HostResult without its ports (they live in the results table), as JSON."""
    d = dataclasses.asdict(host)
    d.pop("ports", None)
    return json.dumps(d, ensure_ascii=True, separators=(",", ":"))


def host_from_json(text: str) -> HostResult:
    raw = json.loads(text)
    names = {f.name for f in dataclasses.fields(HostResult)}
    kwargs = {k: v for k, v in raw.items() if k in names and k != "ports"}
    if "extra" in kwargs:
        from servprobe.result import ExtraPorts

        extra_names = {f.name for f in dataclasses.fields(ExtraPorts)}
        kwargs["extra"] = [
            ExtraPorts(**{k: v for k, v in e.items() if k in extra_names}) for e in kwargs["extra"]
        ]
    return HostResult(**kwargs)


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(ServiceResult))
_RPC_FIELDS = frozenset(f.name for f in dataclasses.fields(RpcInfo))
_SCRIPT_FIELDS = frozenset(f.name for f in dataclasses.fields(ScriptResult))


def result_from_json(text: str) -> ServiceResult:
    """Inverse of result_to_json; fields unknown to this version are ignored (forward compat)."""
    raw = json.loads(text)
    kwargs = {k: v for k, v in raw.items() if k in _RESULT_FIELDS}
    rpc = kwargs.get("rpc")
    if isinstance(rpc, dict):
        kwargs["rpc"] = RpcInfo(**{k: v for k, v in rpc.items() if k in _RPC_FIELDS})
    scripts = kwargs.get("scripts")
    if isinstance(scripts, list):
        kwargs["scripts"] = [
            ScriptResult(**{k: v for k, v in sc.items() if k in _SCRIPT_FIELDS})
            for sc in scripts
            if isinstance(sc, dict)
        ]
    for listed in ("cpes", "hostnames", "scripts"):
        if listed in kwargs and kwargs[listed] is None:
            kwargs[listed] = []
    return ServiceResult(**kwargs)


@dataclass(slots=True)
class ScanInfo:
    """One row of the scans table."""

    id: int
    args: list[str]
    spec: dict[str, Any]
    db_path: str
    version: str
    start: float
    end: float | None
    status: str
    resumed: int


@dataclass(slots=True)
class PortScanState:
    """What the port scan of one host already established (for resume)."""

    address: str
    protos: set[str] = field(default_factory=set)  # protos whose port scan finished
    open_ports: list[tuple[str, int, str, str]] = field(default_factory=list)  # proto, port, state, reason
    extraports: dict[str, dict[str, int]] = field(default_factory=dict)
    status: str = "unknown"
    reason: str = ""
    hostnames: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ResumeState:
    """Everything `--resume` needs: the stored run and the work already done."""

    path: str
    scan: ScanInfo
    results: list[ServiceResult]
    portscans: dict[str, PortScanState]
    complete_hosts: list[HostResult] = field(default_factory=list)

    @property
    def args(self) -> list[str]:
        return self.scan.args

    @property
    def finished(self) -> set[Key]:
        return {r.key for r in self.results}


class Store:
    """A scan store file. Thread-safe; every write is committed before the call returns."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = True) -> Store:
        """Open (or create) a store. Raises StoreError with the path on any failure."""
        p = Path(path)
        if not create and not p.exists():
            raise StoreError(f"{p}: no such store file")
        try:
            if create:
                p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(p), timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{p}: cannot open store: {exc}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{p}: cannot switch the store to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{p}: store written by a newer servprobe (schema {version} > {SCHEMA_VERSION})"
                )
            if version == 0:
                if not create and not _has_table(conn, "scans"):
                    raise StoreError(f"{p}: not a servprobe store")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{p}: not a servprobe store ({exc})") from None
        except StoreError:
            conn.close()
            raise
        return cls(conn, str(p))

    def close(self) -> None:
        with self._lock:
            try:
                # fold the WAL back into the main file so a copied .sqlite is complete alone
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, tuple(params))

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- scans ----------------------------------------------------------------------------

    def begin_scan(
        self,
        args: list[str],
        spec: Mapping[str, Any] | None = None,
        *,
        db_path: str = "",
        version: str = "",
        start: float | None = None,
    ) -> int:
        """Record a new run (status running) and return its id."""
        if not version:
            from servprobe import __version__ as version
        cur = self._write(
            "INSERT INTO scans (args, spec, db_path, version, start, status) "
            "VALUES (?, ?, ?, ?, ?, 'running')",
            (
                json.dumps(list(args)),
                json.dumps(dict(spec or {}), default=_jsonable),
                db_path,
                version,
                time.time() if start is None else start,
            ),
        )
        return int(cur.lastrowid or 0)

    def mark_resumed(self, scan_id: int) -> None:
        """A resumed run writes into the same scan id: running again, end cleared."""
        self._write(
            "UPDATE scans SET status='running', end=NULL, resumed=resumed+1 WHERE id=?",
            (scan_id,),
        )

    def end_scan(self, scan_id: int, status: str = "done", *, end: float | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown scan status {status!r}")
        self._write(
            "UPDATE scans SET status=?, end=? WHERE id=?",
            (status, time.time() if end is None else end, scan_id),
        )

    def update_spec(self, scan_id: int, **items: Any) -> None:
        """Add facts to the scan's spec (e.g. the resolved targets, the db path)."""
        info = self.scan(scan_id)
        spec = dict(info.spec)
        spec.update(items)
        self._write(
            "UPDATE scans SET spec=? WHERE id=?", (json.dumps(spec, default=_jsonable), scan_id)
        )

    def set_db_path(self, scan_id: int, db_path: str) -> None:
        self._write("UPDATE scans SET db_path=? WHERE id=?", (db_path, scan_id))

    def scans(self) -> list[ScanInfo]:
        rows = self._read(
            "SELECT id, args, spec, db_path, version, start, end, status, resumed "
            "FROM scans ORDER BY id"
        )
        return [_scan_info(r) for r in rows]

    def scan(self, scan_id: int | None = None) -> ScanInfo:
        """One scan by id; the latest one when scan_id is None."""
        if scan_id is None:
            rows = self._read(
                "SELECT id, args, spec, db_path, version, start, end, status, resumed "
                "FROM scans ORDER BY id DESC LIMIT 1"
            )
        else:
            rows = self._read(
                "SELECT id, args, spec, db_path, version, start, end, status, resumed "
                "FROM scans WHERE id=?",
                (scan_id,),
            )
        if not rows:
            what = "no scan" if scan_id is None else f"no scan #{scan_id}"
            raise StoreError(f"{self.path}: {what} in this store")
        return _scan_info(rows[0])

    # -- results --------------------------------------------------------------------------

    def record(self, scan_id: int, result: ServiceResult) -> None:
        """Store one finished result; committed (durable against a crash) on return."""
        finished = result.finished if result.finished is not None else time.time()
        self._write(
            "INSERT OR REPLACE INTO results "
            "(scan_id, address, proto, port, state, service, product, version, finished, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                scan_id,
                result.address,
                result.proto,
                result.port,
                result.state,
                _column(result.service),
                _column(result.product),
                _column(result.version),
                finished,
                result_to_json(result),
            ),
        )

    def record_many(self, scan_id: int, results: Iterable[ServiceResult]) -> None:
        """Several results in one transaction (for batch imports; scans use record())."""
        rows = [
            (
                scan_id, r.address, r.proto, r.port, r.state,
                _column(r.service), _column(r.product), _column(r.version),
                r.finished if r.finished is not None else time.time(), result_to_json(r),
            )
            for r in results
        ]
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO results (scan_id, address, proto, port, state, "
                    "service, product, version, finished, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    rows,
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def finished(self, scan_id: int) -> set[Key]:
        """Keys (address, proto, port) whose service scan is final."""
        return {
            (a, p, int(n))
            for a, p, n in self._read(
                "SELECT address, proto, port FROM results WHERE scan_id=?", (scan_id,)
            )
        }

    def results(self, scan_id: int) -> list[ServiceResult]:
        """Every finished result of a scan, ordered by address, proto, port."""
        rows = self._read(
            "SELECT data FROM results WHERE scan_id=? ORDER BY address, proto, port", (scan_id,)
        )
        return [result_from_json(r[0]) for r in rows]

    def iter_results(self, scan_id: int) -> Iterator[ServiceResult]:
        yield from self.results(scan_id)

    # -- hosts and port scan ----------------------------------------------------------------

    def record_host(
        self,
        scan_id: int,
        address: str,
        *,
        status: str | None = None,
        reason: str | None = None,
        hostnames: list[str] | None = None,
        starttime: float | None = None,
        endtime: float | None = None,
    ) -> None:
        """Create or update a host row; None leaves a field as it was."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_host(scan_id, address)
                sets: list[str] = []
                vals: list[Any] = []
                for col, val in (
                    ("status", status),
                    ("reason", reason),
                    ("hostnames", None if hostnames is None else json.dumps(hostnames)),
                    ("starttime", starttime),
                    ("endtime", endtime),
                ):
                    if val is not None:
                        sets.append(f"{col}=?")
                        vals.append(val)
                if sets:
                    self._conn.execute(
                        f"UPDATE hosts SET {', '.join(sets)} WHERE scan_id=? AND address=?",
                        (*vals, scan_id, address),
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def record_portscan(
        self,
        scan_id: int,
        address: str,
        proto: str,
        open_ports: Iterable[tuple[int, str, str] | ServiceResult],
        extraports: Mapping[str, int] | None = None,
    ) -> None:
        """The finished port scan of one host and protocol, in one transaction.

        `open_ports`: what still needs a service scan, as (port, state, reason) or
        ServiceResult; `extraports`: counts of ports not listed, e.g. {"closed": 995}.
        """
        rows = []
        for item in open_ports:
            if isinstance(item, ServiceResult):
                rows.append((scan_id, address, proto, item.port, item.state, item.reason))
            else:
                port, state, reason = item
                rows.append((scan_id, address, proto, int(port), state, reason))
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_host(scan_id, address)
                self._conn.executemany(
                    "INSERT OR REPLACE INTO ports (scan_id, address, proto, port, state, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                cur = self._conn.execute(
                    "SELECT extraports, portscan FROM hosts WHERE scan_id=? AND address=?",
                    (scan_id, address),
                ).fetchone()
                extra = json.loads(cur[0])
                extra[proto] = dict(extraports or {})
                done = set(json.loads(cur[1]))
                done.add(proto)
                self._conn.execute(
                    "UPDATE hosts SET extraports=?, portscan=? WHERE scan_id=? AND address=?",
                    (json.dumps(extra), json.dumps(sorted(done)), scan_id, address),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def record_complete_host(self, scan_id: int, host: HostResult) -> None:
        """A host whose every port is final: keep it whole, so a resume just replays it."""
        ports = [r for r in host.ports if r.state in ("open", "open|filtered")]
        by_proto: dict[str, dict[str, int]] = {}
        for e in host.extra:
            by_proto.setdefault(e.proto, {})[e.state] = e.count
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_host(scan_id, host.address)
                self._conn.executemany(
                    "INSERT OR REPLACE INTO results (scan_id, address, proto, port, state, "
                    "service, product, version, finished, data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            scan_id, r.address, r.proto, r.port, r.state, _column(r.service),
                            _column(r.product), _column(r.version),
                            r.finished if r.finished is not None else time.time(),
                            result_to_json(r),
                        )
                        for r in host.ports
                    ],
                )
                self._conn.executemany(
                    "INSERT OR REPLACE INTO ports (scan_id, address, proto, port, state, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(scan_id, host.address, r.proto, r.port, r.state, r.reason) for r in ports],
                )
                self._conn.execute(
                    "UPDATE hosts SET status=?, reason=?, hostnames=?, extraports=?, portscan=?, "
                    "starttime=?, endtime=?, complete=1, data=? WHERE scan_id=? AND address=?",
                    (
                        host.status, host.reason, json.dumps(host.hostnames),
                        json.dumps(by_proto),
                        json.dumps(sorted({r.proto for r in host.ports} | set(by_proto))),
                        host.starttime, host.endtime, host_to_json(host), scan_id, host.address,
                    ),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def complete_hosts(self, scan_id: int) -> list[HostResult]:
        """Hosts recorded complete, each with its ports (from the results table)."""
        hosts = [
            host_from_json(data)
            for (data,) in self._read(
                "SELECT data FROM hosts WHERE scan_id=? AND complete=1 AND data IS NOT NULL",
                (scan_id,),
            )
        ]
        if hosts:
            by_addr: dict[str, list[ServiceResult]] = {}
            for r in self.results(scan_id):
                by_addr.setdefault(r.address, []).append(r)
            for h in hosts:
                h.ports = sorted(by_addr.get(h.address, []), key=lambda r: (r.proto != "tcp", r.port))
        return hosts

    def _ensure_host(self, scan_id: int, address: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO hosts (scan_id, address) VALUES (?, ?)", (scan_id, address)
        )

    def portscans(self, scan_id: int) -> dict[str, PortScanState]:
        """Per host: which protos' port scans finished, the open ports, the extraports."""
        out: dict[str, PortScanState] = {}
        for address, status, reason, hostnames, extra, done in self._read(
            "SELECT address, status, reason, hostnames, extraports, portscan FROM hosts "
            "WHERE scan_id=?",
            (scan_id,),
        ):
            out[address] = PortScanState(
                address=address,
                protos=set(json.loads(done)),
                extraports=json.loads(extra),
                status=status,
                reason=reason,
                hostnames=json.loads(hostnames),
            )
        for address, proto, port, state, reason in self._read(
            "SELECT address, proto, port, state, reason FROM ports WHERE scan_id=? "
            "ORDER BY address, proto, port",
            (scan_id,),
        ):
            out.setdefault(address, PortScanState(address=address)).open_ports.append(
                (proto, int(port), state, reason)
            )
        return out

    def pending(self, scan_id: int) -> list[tuple[str, str, int]]:
        """Ports the port scan found that have no final result yet."""
        return [
            (a, p, int(n))
            for a, p, n in self._read(
                "SELECT address, proto, port FROM ports WHERE scan_id=? AND NOT EXISTS ("
                "SELECT 1 FROM results r WHERE r.scan_id=ports.scan_id AND "
                "r.address=ports.address AND r.proto=ports.proto AND r.port=ports.port) "
                "ORDER BY address, proto, port",
                (scan_id,),
            )
        ]

    # -- whole runs -------------------------------------------------------------------------

    def scan_run(self, scan_id: int | None = None) -> ScanRun:
        """Rebuild a ScanRun (hosts, ports, extraports) for the reporters."""
        info = self.scan(scan_id)
        states = self.portscans(info.id)
        hosts: dict[str, HostResult] = {}
        for st in states.values():
            extraports: dict[str, int] = {}
            for counts in st.extraports.values():
                for state, n in counts.items():
                    extraports[state] = extraports.get(state, 0) + int(n)
            hosts[st.address] = HostResult(
                address=st.address,
                hostnames=list(st.hostnames),
                status=st.status if st.status in ("up", "down") else "unknown",  # type: ignore[arg-type]
                reason=st.reason,
                extraports=extraports,
            )
        for (data,) in self._read(
            "SELECT data FROM hosts WHERE scan_id=? AND complete=1 AND data IS NOT NULL",
            (info.id,),
        ):
            full = host_from_json(data)
            hosts[full.address] = full
        for r in self.results(info.id):
            host = hosts.get(r.address)
            if host is None:
                host = hosts[r.address] = HostResult(address=r.address, status="up")
            host.ports.append(r)
        for host in hosts.values():
            host.ports.sort(key=lambda r: (r.proto != "tcp", r.port))
            if host.ports and host.status == "unknown":
                host.status = "up"
        spec = info.spec
        return ScanRun(
            args=info.args,
            start=info.start,
            db_path=info.db_path,
            scan_types=list(spec.get("scan_types", [])),
            ports_spec=dict(spec.get("ports_spec", {})),
            hosts=[hosts[a] for a in sorted(hosts, key=_address_sort_key)],
            end=info.end,
            interrupted=info.status == "interrupted",
            version=info.version or "0.1.0",
        )

    @classmethod
    def resume(cls, path: str | os.PathLike[str], scan_id: int | None = None) -> tuple[Store, ResumeState]:
        """Open an existing store for `--resume`: its latest (or given) scan and finished work.

        Raises StoreError when the file is missing, not a store, or holds no scan.
        """
        store = cls.open(path, create=False)
        try:
            info = store.scan(scan_id)
            state = ResumeState(
                path=store.path,
                scan=info,
                results=store.results(info.id),
                portscans=store.portscans(info.id),
                complete_hosts=store.complete_hosts(info.id),
            )
        except BaseException:
            store.close()
            raise
        return store, state


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        is not None
    )


def _scan_info(row: tuple[Any, ...]) -> ScanInfo:
    sid, args, spec, db_path, version, start, end, status, resumed = row
    return ScanInfo(
        id=int(sid),
        args=list(json.loads(args)),
        spec=dict(json.loads(spec)),
        db_path=db_path,
        version=version,
        start=float(start),
        end=None if end is None else float(end),
        status=status,
        resumed=int(resumed),
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


def _address_sort_key(address: str) -> tuple[int, Any]:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (2, address)
    return (ip.version, int(ip))
