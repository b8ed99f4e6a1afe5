"""Outcome providers: where the outcome of step k of the walk comes from.

The walk (engine.state) consumes steps strictly in order and asks its provider two things:
`outcome(k, kind, now)`: step k's outcome if it is known, else None; and `run(k, kind, now)`:
the walk waits at step k, make sure it runs. `kind` is the step's place in nmap's algorithm:
"null" (listen on a fresh connection), "cheat" (send the probe on the NULL connection, keeping
NULL's bytes) or "fresh" (a new connection, probe sent at once). An outcome is the bytes read
(at most options.max_read) and the first line that matched them, plus how the read ended.

This module holds the attempt machinery (connections, reads, matching as data arrives, TLS
levels) and the *direct* provider: one step at a time, each read for its probe's full wait,
exactly as nmap runs it (`--sequential`). engine.speculate's provider runs later steps ahead
on their own connections and infers some outcomes earlier; the walk cannot tell them apart.

Reads end on: a hard match ("match"), the probe's totalwaitms ("timeout"), the read cap
("cap"), the server closing ("closed"; on NULL with zero bytes before tcpwrappedms this is
tcpwrapped), a failed connect ("connfail"), a TLS handshake that failed at every level
("tlsfail"). A provider may also infer an outcome without reading it to the end ("virtual",
engine.speculate). TLS: a step inside the tunnel that fails its handshake is retried once
with a permissive context (nmap #2528) while no handshake has worked yet for this service.
UDP (direct): every probe goes out on one socket, as nmap sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from servprobe.engine.events import (
    Close,
    Closed,
    Connect,
    Connected,
    ConnectFailed,
    Data,
    Send,
    Timeout,
    TlsFailed,
    Wake,
)

if TYPE_CHECKING:
    from servprobe.engine.budget import ConnBudget
    from servprobe.engine.events import Event
    from servprobe.engine.state import ServiceMachine
    from servprobe.probes.model import Identification, Probe

DEFAULT_WAIT_MS = 5000
DEFAULT_TCPWRAPPED_MS = 2000
MAX_TLS_LEVEL = 1  # 0: modern client defaults; 1: everything OpenSSL still accepts
TLS_HANDSHAKE_TIMEOUT = 3.0  # nmap: 5 s connect, 8 s with SSL
# A response is re-matched as it grows, but at most this often: a server dripping one byte
# per millisecond must not cost a full pass over thousands of patterns per byte. Pending bytes
# are matched when the interval ends and always before a step ends, so outcomes do not change.
MATCH_INTERVAL = 0.05
# timers may fire a little early (event loops round to their clock resolution): deadlines
# within this much count as reached
TIMER_SLACK = 0.001

Kind = Literal["null", "cheat", "fresh"]
End = Literal["match", "timeout", "cap", "closed", "connfail", "tlsfail", "virtual"]


@dataclass(slots=True)
class Outcome:
    ident: Identification | None
    data: bytes
    end: End
    wrapped: bool = False
    marks: list[int] | None = None  # lazy (engine.speculate): prefix lengths still to match


@dataclass(slots=True)
class Attempt:
    conn: int
    step: int
    probe: Probe
    kind: Kind
    tls_level: int | None
    budgeted: bool = False
    connected_at: float | None = None
    sent_at: float | None = None
    deadline: float | None = None
    first_data_at: float | None = None
    buf: bytearray = field(default_factory=bytearray)
    soft: Identification | None = None
    done: bool = False
    last_match: float | None = None
    rematch_at: float | None = None  # bytes arrived since the last match, match them then
    marks: list[int] | None = None  # None: matched as data arrives; else lazy (speculate)


class DirectProvider:
    """nmap's way: the step the walk waits at runs alone, for its probe's full wait."""

    speculative = False

    def __init__(self, walk: ServiceMachine, budget: ConnBudget | None, key: int) -> None:
        self.w = walk
        self.opts = walk.opts
        self.proto = walk.proto
        self.budget = budget
        self.key = key
        self._next_conn = 1
        self._attempts: dict[int, Attempt] = {}
        self.tls_ok_level: int | None = None  # a TLS level that worked once for this service
        self._udp_keep: tuple[int, float] | None = None  # sequential UDP socket between probes
        self.begin()

    # ------------------------------------------------------------ the walk's questions -------

    def begin(self) -> None:
        """A new sequence (the start, or the restart inside TLS): nothing of the old one counts."""
        for att in list(self._attempts.values()):
            self._close(att)
        self._null_out: Outcome | None = None
        self._cheat_out: Outcome | None = None
        self._fresh: dict[int, Outcome] = {}
        self._started: set[int] = set()
        self._null_att: Attempt | None = None
        self._cheat_started = False

    def outcome(self, k: int, kind: Kind, now: float) -> Outcome | None:
        if kind == "null":
            return self._null_out
        if kind == "cheat":
            return self._cheat_out
        return self._fresh.get(k)

    def run(self, k: int, kind: Kind, now: float) -> None:
        probe = self.w.order[k]
        if kind == "null":
            if self._null_att is None:
                self._null_att = self._connect(k, probe, "null", now)
        elif kind == "cheat":
            if not self._cheat_started:
                self._start_cheat(k, probe, now)
        elif k not in self._started:
            self._started.add(k)
            self._connect(k, probe, "fresh", now)

    def next_deadline(self) -> float | None:
        best: float | None = None
        for att in self._attempts.values():
            if att.done:
                continue
            for d in (att.deadline, att.rematch_at):
                if d is not None and (best is None or d < best):
                    best = d
        return best

    @property
    def tls_worked(self) -> bool:
        return self.tls_ok_level is not None

    @property
    def open_conns(self) -> int:
        return sum(1 for a in self._attempts.values() if not a.done)

    def conns(self) -> list[int]:
        return sorted({a.conn for a in self._attempts.values()} | (
            {self._udp_keep[0]} if self._udp_keep else set()))

    def close_all(self) -> None:
        if self.budget is not None:
            self.budget.forget(self.key)  # first: the slots given back below wake others
        for att in list(self._attempts.values()):
            self._close(att)
        self._attempts.clear()
        if self._udp_keep is not None:
            self.w.act(Close(self._udp_keep[0]))
            self._udp_keep = None

    # ------------------------------------------------------------ events ----------------------

    def handle(self, event: Event, now: float) -> None:
        if isinstance(event, Timeout):
            self._on_timeout(now + TIMER_SLACK)
            return
        att = self._attempts.get(event.conn)
        if att is None or att.done:
            return
        if isinstance(event, Data):
            self._on_data(att, event.data, now)
        elif isinstance(event, Connected):
            self._on_connected(att, now)
        elif isinstance(event, Closed):
            self._on_closed(att, now)
        elif isinstance(event, ConnectFailed):
            self._on_connect_failed(att, now)
        elif isinstance(event, TlsFailed):
            self._on_tls_failed(att, event.error, now)

    def _on_connected(self, att: Attempt, now: float) -> None:
        att.connected_at = now
        if att.tls_level is not None:
            self.tls_ok_level = att.tls_level
        self._send(att, now)

    def _take(self, att: Attempt, data: bytes) -> bool:
        """Keep the bytes (up to the cap); True when the cap is reached."""
        room = self.opts.max_read - len(att.buf)
        if room > 0:
            att.buf += data[:room]
        return len(att.buf) >= self.opts.max_read

    def _on_data(self, att: Attempt, data: bytes, now: float) -> None:
        if att.sent_at is None:
            return
        if att.first_data_at is None:
            att.first_data_at = now
        full = self._take(att, data)
        self._match_as_read(att, full, now)

    def _match_as_read(self, att: Attempt, full: bool, now: float) -> None:
        if not full and att.last_match is not None and now - att.last_match < MATCH_INTERVAL:
            att.rematch_at = att.last_match + MATCH_INTERVAL
            return
        if self._rematch(att, now):
            return
        if full:
            self._end(att, Outcome(att.soft, bytes(att.buf), "cap"), now)

    def _rematch(self, att: Attempt, now: float) -> bool:
        """Match the whole response so far; True when that ended the attempt (hard match)."""
        att.last_match = now
        att.rematch_at = None
        ident = self.w.match(att.probe, bytes(att.buf))
        if ident is not None and not ident.soft:
            self._end(att, Outcome(ident, bytes(att.buf), "match"), now)
            return True
        if ident is not None and att.soft is None:
            att.soft = ident
        return False

    def _on_timeout(self, now: float) -> None:
        for att in list(self._attempts.values()):
            if att.done:
                continue
            if att.marks is None and att.rematch_at is not None and (
                att.rematch_at <= now or (att.deadline is not None and att.deadline <= now)
            ):
                if self._rematch(att, now):
                    continue
            if att.deadline is not None and att.deadline <= now:
                self.w.note(
                    f"conn {att.conn} probe {att.probe.name}: READ TIMEOUT with {len(att.buf)} bytes"
                )
                self._end(att, Outcome(att.soft, bytes(att.buf), "timeout"), now)

    def _on_closed(self, att: Attempt, now: float) -> None:
        if att.marks is None and att.rematch_at is not None and self._rematch(att, now):
            return
        wrapped = False
        if att.kind == "null" and not att.buf and att.connected_at is not None:
            limit = (att.probe.tcpwrappedms or DEFAULT_TCPWRAPPED_MS) / 1000.0
            wrapped = now - att.connected_at < limit
        self._end(att, Outcome(att.soft, bytes(att.buf), "closed", wrapped), now, closed=True)

    def _on_connect_failed(self, att: Attempt, now: float) -> None:
        self.w.note(f"connect failed for {self.w.where()} (conn {att.conn})")
        self._end(att, Outcome(None, b"", "connfail"), now, closed=True)

    def _on_tls_failed(self, att: Attempt, error: str, now: float) -> None:
        self.w.note(f"TLS handshake failed at level {att.tls_level}: {error}")
        level = att.tls_level or 0
        if self.tls_ok_level is None and level < MAX_TLS_LEVEL:
            # retry the same step with a more permissive context (nmap issue #2528)
            att.done = True
            self._attempts.pop(att.conn, None)
            retry = Attempt(self._new_conn(), att.step, att.probe, att.kind, level + 1, att.budgeted)
            if att.marks is not None:
                retry.marks = []
            self._attempts[retry.conn] = retry
            if att.kind == "null":
                self._null_att = retry
            self.w.act(self._connect_action(retry.conn, level + 1, att.probe.source_port))
            return
        self._end(att, Outcome(None, b"", "tlsfail"), now, closed=True)

    # ------------------------------------------------------------ attempts --------------------

    def _end(self, att: Attempt, out: Outcome, now: float, closed: bool = False) -> None:
        att.done = True
        att.deadline = None
        att.rematch_at = None
        if att.kind == "null":
            self._null_out = out
            if closed or out.end not in ("timeout", "cap"):
                self._close(att)
            # else the connection stays open for the cheat step
        elif att.kind == "cheat":
            self._cheat_out = out
            self._close(att)
        else:
            self._fresh[att.step] = out
            if (self._keeps_udp_socket() and not closed and att.connected_at is not None
                    and att.probe.source_port is None):  # a socket bound for one probe only
                self._udp_keep = (att.conn, att.connected_at)  # the next probe reuses it
            else:
                self._close(att)
        if out.ident is not None and not out.ident.soft:
            self.w.note(
                f"probe {att.probe.name} on {self.w.where()} matched "
                f"{out.ident.service} (line {out.ident.source})"
            )

    def _keeps_udp_socket(self) -> bool:
        return self.proto == "udp"

    def _close(self, att: Attempt) -> None:
        att.done = True
        att.deadline = None
        if self._attempts.get(att.conn) is att:
            del self._attempts[att.conn]
            if not any(a.conn == att.conn for a in self._attempts.values()):
                self.w.act(Close(att.conn))
            if att.budgeted and self.budget is not None:
                woken = self.budget.release(exclude=self.key)
                if woken is not None:
                    self.w.act(Wake(woken))
        if self._null_att is att:
            self._null_att = None

    def _new_conn(self) -> int:
        conn = self._next_conn
        self._next_conn += 1
        return conn

    def _connect_action(self, conn: int, level: int | None, source_port: int | None = None) -> Connect:
        tls = TLS_HANDSHAKE_TIMEOUT if level is not None else 0.0
        return Connect(conn, self.proto, level, self.opts.connect_timeout, tls, source_port)

    def _connect(self, k: int, probe: Probe, kind: Kind, now: float) -> Attempt:
        reuse = self._udp_keep
        if reuse is not None and kind == "fresh" and probe.source_port is None:
            # sequential UDP: every probe goes out on the same socket, as nmap sends them
            self._udp_keep = None
            att = Attempt(reuse[0], k, probe, kind, None)
            att.connected_at = reuse[1]
            self._attempts[reuse[0]] = att
            self._send(att, now)
            return att
        level = None
        if self.w.tunnel:
            level = self.tls_ok_level if self.tls_ok_level is not None else 0
        att = Attempt(self._new_conn(), k, probe, kind, level)
        self._attempts[att.conn] = att
        self.w.act(self._connect_action(att.conn, level, probe.source_port))
        return att

    def _start_cheat(self, k: int, probe: Probe, now: float) -> None:
        null = self._null_att
        self._cheat_started = True
        if null is None or self._null_out is None:
            return
        att = Attempt(null.conn, k, probe, "cheat", null.tls_level)
        att.connected_at = null.connected_at
        att.buf = bytearray(self._null_out.data)
        att.budgeted = null.budgeted
        self._attempts[null.conn] = att
        self._null_att = att  # the connection now belongs to the cheat step
        self._send(att, now)

    def _send(self, att: Attempt, now: float) -> None:
        att.sent_at = now
        att.deadline = now + (att.probe.totalwaitms or DEFAULT_WAIT_MS) / 1000.0
        if att.probe.payload:
            self.w.act(Send(att.conn, att.probe.payload, att.probe.name))
        self.w.note(f"sending probe {att.probe.name} to {self.w.where()} (conn {att.conn})")
