"""The sans-IO state machine that identifies one service (one port of one host).

Theory of operation
===================

A `ServiceMachine` knows nothing about sockets, asyncio or clocks. The driver
(`servprobe.net.driver`) feeds it events and carries out the actions it returns:

    events in:   Connected(conn)  Data(conn, bytes)  Closed(conn, reset)
                 ConnectFailed(conn)  TlsFailed(conn)  Timeout()      (+ `now` on every call)
    actions out: Connect(conn, tls_level)  Send(conn, bytes)  Close(conn)
                 Wait(deadline)  Report(ServiceResult)  Note(text)

`conn` is a small integer the machine allocates; one conn is one TCP connection, one TLS
connection or one connected UDP socket. `Wait(deadline)` says when the machine next wants a
`Timeout()` event if nothing else happens (a later Wait replaces an earlier one; None means
no timer). `Report` comes exactly once and is the last action of a machine.

The sequence nmap would run (the *order*)
-----------------------------------------
`engine.plan.Planner.order()` gives the steps: NULL first (TCP only: connect and listen for
the probe's totalwaitms), then the probes whose `ports` (inside TLS: `sslports`) list the
port, in file order, then the other probes with rarity <= intensity, in file order.
Each step ends with an *outcome*: the bytes received (capped at options.max_read) and the
first line that matched them (via ProbeDB.match: the probe's lines, its fallbacks, NULL).
Steps are consumed strictly in order by `_advance()`:

* a hard match ends the service (`ssl` restarts everything inside TLS, once; a line naming
  `ssl/x` reports x with tunnel ssl without TLS);
* a softmatch records the service (only the first one counts) and from then on a step runs
  only if its probe has a line for that service (except at intensity 9);
* data without a hard match is added to the SF- fingerprint;
* NULL closed/reset with zero bytes before tcpwrappedms -> tcpwrapped (conf 8);
* steps run out -> the softmatched service, or the port-table name (method table, conf 3);
* a failed connect ends the service as not identified (nmap's "incomplete").

The NULL cheat: when NULL ends by timeout (or by the read cap) without a hard match, the next
step that may run is the *cheat step*: its probe is sent on the NULL connection and its
response is the NULL data plus what follows. Every other step opens a new connection.

Fidelity notes (checked against nmap 7.93's behaviour and source)
------------------------------------------------------------------
* A probe without a `rarity` line counts as rarity 5 (nmap's default), not as always eligible.
* The softmatch filter applies to port-listed and rarity-selected probes alike, except at
  intensity 9 (the documented rule; nmap's source filters only the rarity-selected ones).
* NULL closed or reset with zero bytes before tcpwrappedms -> tcpwrapped; nmap's source also
  calls a reset after some bytes tcpwrapped, we treat that as an ordinary end of response.
* A connect failure ends the service unidentified (nmap: "incomplete"), with the softmatched
  name if there was one, method table.
* When NULL ends by EOF (not timeout) the next probe opens a new connection and NULL's data is
  dropped, as in nmap.
* Fingerprints: a response is added when its step ends without a hard match (timeout, EOF,
  read cap); tested byte for byte against nmap -sV in tests/test_net_nmap_fingerprint.py.
* UDP: one socket for every probe in sequential mode, as nmap does (a late answer to probe k
  is then read as the answer to probe k+1, as in nmap); speculative probes use their own.

Speculation (issue 6)
---------------------
With options.sequential the machine runs exactly one step at a time, as above. Otherwise it
also starts *speculative attempts*: later steps run at once, each on its own new connection,
at most options.probe_parallelism per service and as many as the shared `ConnBudget` (per
host and global) allows. A speculative attempt of step k performs exactly the interaction the
sequential run would perform for step k (new connection, probe sent at once, read for the
probe's wait), only earlier. Assuming a server treats connections independently of when they
are opened, its outcome is the outcome the sequential run would see, so it can stand in for
step k. Outcomes are still consumed in order, so a result from step k is final only once every
earlier step has resolved without a hard match; softmatch filtering is applied when the
walk reaches a step, and attempts of steps the filter excludes are simply ignored.

Two steps cannot be run ahead that way, because they depend on the NULL connection: NULL
itself (listen without speaking) and the cheat step (probe after NULL's silence, on the same
connection). Waiting for them would cost NULL's full wait (6 s) on every request-first
service, which is most of nmap's scan time. The rule that lets us skip that wait:

  *Silence rule.* While NULL is pending on connection A (connected at tA, zero bytes, still
  open), if a speculative attempt F got its first bytes L seconds after its own connect, then
  once A has stayed silent until tA + L + grace (options.speculation_grace, default 0.5 s)
  the server is taken to be request-first: it answered a probe on F but said nothing
  unprompted on A over the same delay. Under that hypothesis NULL's outcome is "nothing" and
  the cheat step's outcome equals its speculative outcome on a new connection (an idle
  request-first server answers a probe the same after 6 s of silence as at once), so NULL is
  resolved as silent, A is closed, and the walk continues with speculative outcomes.

The silence rule never fires for banner-first services (A gets the banner at about the time F
gets data, so A is not silent), for late-banner services (F gets nothing before the banner,
which A gets too), for silent ports (no data anywhere) or for tcpwrapped ports (F is closed
too). Without it, NULL and the cheat step run exactly as nmap runs them and only steps after
the cheat step are sped up. Known limit: a server that answers requests at once *and* sends an
unsolicited message to idle clients more than `grace` later (e.g. an idle-timeout notice)
would be identified by its answer, where nmap would see the notice first.

Speculation on TCP starts options.speculation_delay (0.2 s) after NULL connects, not at once:
banner-first services answer NULL within milliseconds and need no extra connections (a burst
of them would even make sshd drop connections, MaxStartups). Attempts are launched in order
(port-listed probes first), skipping probes a softmatch already excludes, with a slow start:
4 at first; after another speculation_delay, still 4 if some attempt got an answer (request-first
services are usually settled by the first few steps) or all of probe_parallelism if none did
(a silent port, where parallel waits are the whole point).

Responses of speculative attempts ahead of the walk are not matched as they arrive: the
lengths at which they would have been matched are kept, and the prefixes are matched in order
when (if ever) the walk reaches that step, with the same result. A service that answers
every probe thus costs one regex pass per step the order really needs, not one per probe.

Two more rules of the same kind let the walk pass steps whose own wait would otherwise
stall it while other steps already proved the server answers requests (the evidence: the
slowest first answer Lmax seen on any speculative attempt of this sequence):

  *Quiet-step rule.* Step k's attempt sent its probe at tk and has received nothing; once
  the walk is at k and tk + Lmax + grace has passed, step k is resolved as silent. A server
  that answers some probes within Lmax and ignores this one (nginx and redis ignore
  GenericLines' blank lines, DNS servers ignore most UDP probes) would give nmap the same
  silence after its full wait. It costs the answer only for a server that answers this very
  probe more slowly than Lmax + grace while answering others faster.

  *Datagram rule (UDP).* A UDP answer arrives whole: after a datagram, the attempt waits only
  Lmax + grace for another one instead of the probe's full wait.

Both rules apply only with speculation; --sequential waits every wait, as nmap does.

Silent ports cost about one NULL wait plus one probe wait when probe_parallelism covers the
order (default 32: nmap's DB selects ~30 TCP probes at intensity 7), instead of one wait per
probe: NULL 6 s + cheat step 5 s, against about 150 s sequentially.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from servprobe.engine.fingerprint import FingerprintBuilder
from servprobe.escape import printable_bytes
from servprobe.result import ServiceResult
from servprobe.scan.services import service_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.engine.plan import Planner
    from servprobe.probes.model import Identification, Probe, ProbeDB

DEFAULT_WAIT_MS = 5000
DEFAULT_TCPWRAPPED_MS = 2000
MAX_TLS_LEVEL = 1  # 0: modern client defaults; 1: everything OpenSSL still accepts
# A response is re-matched as it grows, but at most this often: a server dripping one byte
# per millisecond must not cost a full pass over thousands of patterns per byte. Pending bytes
# are matched when the interval ends and always before a step ends, so outcomes do not change.
MATCH_INTERVAL = 0.05
# Speculation's slow start: a few attempts first; all of probe_parallelism only if none of
# them answered within speculation_delay (a silent port), a middle window if some did.
TIMER_SLACK = 0.001
SPEC_FIRST_WINDOW = 4
SPEC_ANSWERING_WINDOW = 4


# ---------------------------------------------------------------- events ---------------------


@dataclass(frozen=True, slots=True)
class Connected:
    conn: int


@dataclass(frozen=True, slots=True)
class Data:
    conn: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    conn: int
    reset: bool = False


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    conn: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class TlsFailed:
    conn: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Timeout:
    pass


Event = Connected | Data | Closed | ConnectFailed | TlsFailed | Timeout

# ---------------------------------------------------------------- actions --------------------


@dataclass(frozen=True, slots=True)
class Connect:
    conn: int
    proto: Literal["tcp", "udp"]
    tls_level: int | None = None  # None: plain; else a TLS context level (net.tls)
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Send:
    conn: int
    data: bytes
    probe: str = ""


@dataclass(frozen=True, slots=True)
class Close:
    conn: int


@dataclass(frozen=True, slots=True)
class Wait:
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Report:
    result: ServiceResult


@dataclass(frozen=True, slots=True)
class Note:
    text: str


Action = Connect | Send | Close | Wait | Report | Note


class ConnBudget:
    """Counts speculative connections; shared by the machines of one host, chained to a global one.

    A machine refused a connection leaves a waker (a callable its driver provides); a release
    calls the oldest waker so that machine gets to try again without waiting for its own
    next deadline.
    """

    __slots__ = ("limit", "parent", "used", "waiting")

    def __init__(self, limit: int | None, parent: ConnBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        self.waiting: dict[int, Callable[[], None]] = {}  # insertion-ordered, one per machine

    def wait(self, key: int, waker: Callable[[], None]) -> None:
        self.waiting.setdefault(key, waker)
        if self.parent is not None:
            self.parent.wait(key, waker)

    def _wake(self) -> None:
        if self.waiting:
            key = next(iter(self.waiting))
            self.waiting.pop(key)()

    def try_acquire(self) -> bool:
        if self.limit is not None and self.used >= self.limit:
            return False
        if self.parent is not None and not self.parent.try_acquire():
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used -= 1
        if self.parent is not None:
            self.parent.release()
        self._wake()


# ---------------------------------------------------------------- internals ------------------

Kind = Literal["null", "cheat", "fresh"]
End = Literal["match", "timeout", "cap", "closed", "connfail", "tlsfail", "virtual"]


@dataclass(slots=True)
class Outcome:
    ident: Identification | None
    data: bytes
    end: End
    wrapped: bool = False
    marks: list[int] | None = None  # lazy: prefix lengths still to be matched, in order


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
    marks: list[int] | None = None  # None: matched as data arrives; else lazy (see _on_data)


class ServiceMachine:
    """Identifies one service. See the module docstring for the rules."""

    def __init__(
        self,
        target: ServiceTarget,
        db: ProbeDB,
        planner: Planner,
        options: EngineOptions,
        budget: ConnBudget | None = None,
    ) -> None:
        self.target = target
        self.db = db
        self.planner = planner
        self.opts = options
        self.budget = budget
        self.proto = target.proto
        self.speculate = (
            not options.sequential
            and options.probe_parallelism > 0
            and (budget is None or budget.limit is None or budget.limit > 0)
        )
        self.grace = float(getattr(options, "speculation_grace", 0.5))
        self.spec_delay = float(getattr(options, "speculation_delay", 0.2))
        self.finished = False
        self.waker: Callable[[], None] | None = None  # set by a driver: poke me (budget freed)
        self.matches = 0  # matcher calls, for tests and benchmarks
        self.result: ServiceResult | None = None
        self._next_conn = 1
        self._actions: list[Action] = []
        self._attempts: dict[int, Attempt] = {}
        self._tls_ok_level: int | None = None  # level that worked once
        self._ssl_ident: Identification | None = None
        self._answered = False  # any step in the order got bytes (UDP open vs open|filtered)
        self._connect_ok = False
        self._last_deadline: float | None = -1.0
        self._udp_keep: tuple[int, float] | None = None  # sequential UDP socket between probes
        self._reset_sequence(tunnel=False)

    # ------------------------------------------------------------ public API -----------------

    def start(self, now: float) -> list[Action]:
        if self.planner.excluded(self.proto, self.target.port) and not self.opts.allports:
            self._note("port excluded from version scan by the probe file")
            self._finish_table(now, probed=False)
            return self._flush()
        if not self.order:
            self._finish_table(now, probed=False)
            return self._flush()
        self._advance(now)
        return self._flush()

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.finished:
            return []
        if isinstance(event, Timeout):
            # timers may fire a little early (event loops round to their clock resolution):
            # count deadlines within a millisecond as reached, and always re-arm afterwards
            self._last_deadline = -1.0
            self._on_timeout(now + TIMER_SLACK)
        else:
            att = self._attempts.get(event.conn)
            if att is None or att.done:
                return self._flush()
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
        if not self.finished:
            self._advance(now)
        return self._flush()

    def abort(self, now: float, why: str = "host timeout") -> list[Action]:
        """Stop now (host timeout, Ctrl-C): report what is known, as not identified."""
        if not self.finished:
            self._note(f"aborted: {why}")
            self._finish_table(now, probed=False)
        return self._flush()

    def next_deadline(self) -> float | None:
        best: float | None = None
        for att in self._attempts.values():
            if att.done:
                continue
            for d in (att.deadline, att.rematch_at):
                if d is not None and (best is None or d < best):
                    best = d
        h = self._silence_check_at()
        if h is not None and (best is None or h < best):
            best = h
        if not self.finished and self.cursor < len(self.order):
            quiet = self._quiet_attempt(self.cursor)
            if quiet is not None:
                q = self._quiet_check_at(quiet)
                if best is None or q < best:
                    best = q
        if self._spec_wake is not None and (best is None or self._spec_wake < best):
            best = self._spec_wake
        return best

    @property
    def open_conns(self) -> int:
        return sum(1 for a in self._attempts.values() if not a.done)

    # ------------------------------------------------------------ sequence -------------------

    def _reset_sequence(self, tunnel: bool) -> None:
        self.tunnel = tunnel
        self.order: tuple[Probe, ...] = self.planner.order(
            self.proto, self.target.port, tunnel, self.opts.intensity
        )
        self.cursor = 0
        self.soft: Identification | None = None
        self.fp = FingerprintBuilder(
            self.target.port, self.proto, self.opts.intensity, tls=tunnel
        )
        self._null_out: Outcome | None = None
        self._cheat_out: Outcome | None = None
        self._fresh: dict[int, Outcome] = {}
        self._fresh_started: set[int] = set()
        self._null_att: Attempt | None = None
        self._cheat_pending = False  # the next step the walk visits is the cheat step
        self._cheat_started = False
        self._silent_null = False  # the silence rule fired
        self._evidence: float | None = None  # fastest first answer on a speculative attempt
        self._evidence_max: float | None = None  # slowest first answer (quiet-step rule)
        self._spec_t0: float | None = None  # first speculative launch
        self._spec_wake: float | None = None  # when speculation wants to launch more
        self._restarted = True

    def _allowed(self, probe: Probe) -> bool:
        return self.planner.allowed(
            probe, self.soft.service if self.soft else None, self.opts.intensity
        )

    def _outcome_for(self, k: int, now: float) -> Outcome | None:
        probe = self.order[k]
        if probe.is_null:
            if self._null_out is None and self._silence_rule(now):
                return Outcome(None, b"", "virtual")
            return self._null_out
        if self._cheat_pending and not self._silent_null:
            return self._cheat_out
        out = self._fresh.get(k)
        if out is not None and out.marks is not None:
            out = self._fresh[k] = self._resolve_lazy(probe, out)
        if out is None:
            att = self._quiet_attempt(k)
            if att is not None and now + TIMER_SLACK >= self._quiet_check_at(att):
                self._note(f"probe {probe.name}: silent while other probes were answered (quiet-step rule)")
                out = self._fresh[k] = Outcome(None, b"", "virtual")
                self._close(att)
        return out

    def _resolve_lazy(self, probe: Probe, out: Outcome) -> Outcome:
        """Match a lazily kept response the way it would have been matched as it arrived."""
        soft: Identification | None = None
        for mark in out.marks or ():
            ident = self._match_bytes(probe, out.data[:mark])
            if ident is not None and not ident.soft:
                self._note(f"probe {probe.name} on {self._where()} matched {ident.service} (line {ident.source})")
                return Outcome(ident, out.data[:mark], "match")
            if ident is not None and soft is None:
                soft = ident
        return Outcome(soft, out.data, out.end, out.wrapped)

    def _activate(self, k: int, now: float) -> bool:
        """The walk reached step k while its speculative attempt still runs: match what it has
        so far and match as data arrives from now on. True when that produced its outcome."""
        for att in list(self._attempts.values()):
            if att.kind == "fresh" and att.step == k and not att.done and att.marks is not None:
                if att.buf and (not att.marks or att.marks[-1] != len(att.buf)):
                    att.marks.append(len(att.buf))
                lazy = self._resolve_lazy(att.probe, Outcome(None, bytes(att.buf), "timeout", marks=att.marks))
                att.marks = None
                if lazy.end == "match":
                    self._end(att, lazy, now)
                    return True
                att.soft = lazy.ident
                att.last_match = now
                return False
        return False

    def _advance(self, now: float) -> None:
        while not self.finished:
            if self.cursor >= len(self.order):
                self._finish_exhausted(now)
                return
            probe = self.order[self.cursor]
            if not self._allowed(probe):
                self.cursor += 1
                continue
            out = self._outcome_for(self.cursor, now)
            if out is None:
                if self._activate(self.cursor, now):
                    continue
                break
            self._restarted = False
            self._apply(self.cursor, probe, out, now)
            if self.finished:
                return
            if not self._restarted:
                self.cursor += 1
        if not self.finished:
            self._schedule(now)

    def _apply(self, k: int, probe: Probe, out: Outcome, now: float) -> None:
        was_cheat = self._cheat_pending
        self._cheat_pending = False
        if out.data:
            self._answered = True
        if probe.is_null:
            if out.wrapped:
                self._finish_wrapped(now)
                return
            if out.end == "virtual":
                self._silent_null = True
                self._note("NULL probe: request-first service (silence rule), NULL resolved as silent")
                if self._null_att is not None:
                    self._close(self._null_att)
            self._cheat_pending = out.end in ("timeout", "cap", "virtual")
        if out.end == "connfail":
            self._finish_table(now, probed=False)
            return
        ident = out.ident
        if ident is not None and not ident.soft:
            self._hard(ident, now)
            return
        if out.data:
            self.fp.add(probe.name, out.data)
        if ident is not None and ident.soft:
            if self.soft is None:
                self.soft = ident
                self._note(f"soft match: {self._where()} is {ident.service} (probe {probe.name})")
            elif ident.service != self.soft.service:
                self._note(
                    f"already soft-matched {self.soft.service}, ignoring soft match {ident.service}"
                )
        if was_cheat and self._null_att is not None:
            self._close(self._null_att)

    def _hard(self, ident: Identification, now: float) -> None:
        svc = ident.service
        if svc.startswith("ssl/"):
            self._finish_match(ident, svc[4:], "ssl", now)
            return
        if svc == "ssl" and not self.tunnel and self.proto == "tcp" and _tls_available():
            self._note(f"hard match ssl at {self._where()}: restarting probes inside TLS")
            self._ssl_ident = ident
            for att in list(self._attempts.values()):
                self._close(att)
            self._reset_sequence(tunnel=True)
            return  # _advance continues with cursor 0 of the new order
        self._finish_match(ident, svc, "ssl" if self.tunnel else None, now)

    # ------------------------------------------------------------ scheduling -----------------

    def _schedule(self, now: float) -> None:
        k = self.cursor
        probe = self.order[k]
        if probe.is_null:
            if self._null_att is None:
                self._null_att = self._connect(k, probe, "null", now)
        elif self._cheat_pending and not self._silent_null:
            if not self._cheat_started:
                self._start_cheat(k, probe, now)
        elif k not in self._fresh_started:
            self._fresh_started.add(k)
            self._connect(k, probe, "fresh", now)
        if self.speculate:
            self._speculate(now)

    def _spec_start_at(self) -> float | None:
        """When speculation may begin: a short while after NULL connects (TCP), so banner-first
        services (most of them answer within milliseconds) are not hit by a burst of extra
        connections they do not need (sshd's MaxStartups would even drop some)."""
        if self.proto != "tcp" or self.cursor > 0:
            return None
        null = self._null_att
        if null is None or null.connected_at is None:
            return float("inf")
        return null.connected_at + self.spec_delay

    def _window(self, now: float) -> int:
        """Speculative attempts allowed in flight now (slow start, see the module docstring)."""
        full = self.opts.probe_parallelism
        if self._spec_t0 is None:
            return min(full, SPEC_FIRST_WINDOW)
        grow_at = self._spec_t0 + self.spec_delay
        if now + TIMER_SLACK < grow_at:
            self._spec_wake = grow_at
            return min(full, SPEC_FIRST_WINDOW)
        if self._evidence is not None:
            return min(full, SPEC_ANSWERING_WINDOW)
        return full

    def _speculate(self, now: float) -> None:
        self._spec_wake = None
        start = self._spec_start_at()
        if start is not None and now + TIMER_SLACK < start:
            if start != float("inf"):
                self._spec_wake = start
            return
        # the window bounds how far ahead of the walk attempts are started (finished ones
        # count too, or a fast-answering service would get every probe at once)
        ahead = sum(1 for k in self._fresh_started if k >= self.cursor)
        limit = self._window(now)
        if self._spec_t0 is None:
            self._spec_t0 = now
        soft = self.soft.service if self.soft else None
        for k in range(self.cursor, len(self.order)):
            if ahead >= limit:
                return
            probe = self.order[k]
            if probe.is_null or k in self._fresh_started:
                continue
            if not self.planner.allowed(probe, soft, self.opts.intensity):
                continue
            if self.budget is not None and not self.budget.try_acquire():
                if self.waker is not None:
                    self.budget.wait(id(self), self.waker)
                return
            self._fresh_started.add(k)
            att = self._connect(k, probe, "fresh", now)
            att.budgeted = True
            ahead += 1

    def _connect(self, k: int, probe: Probe, kind: Kind, now: float) -> Attempt:
        reuse = self._udp_keep
        if reuse is not None and kind == "fresh" and not self.speculate:
            # sequential UDP: every probe goes out on the same socket, as nmap sends them
            self._udp_keep = None
            att = Attempt(reuse[0], k, probe, kind, None)
            att.connected_at = reuse[1]
            self._attempts[reuse[0]] = att
            self._send(att, now)
            return att
        conn = self._next_conn
        self._next_conn += 1
        level = None
        if self.tunnel:
            level = self._tls_ok_level if self._tls_ok_level is not None else 0
        att = Attempt(conn, k, probe, kind, level)
        if kind == "fresh" and k != self.cursor:
            att.marks = []
        self._attempts[conn] = att
        timeout = self.opts.connect_timeout + (3.0 if self.tunnel else 0.0)
        self._actions.append(Connect(conn, self.proto, level, timeout))
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
            self._actions.append(Send(att.conn, att.probe.payload, att.probe.name))
        self._note(f"sending probe {att.probe.name} to {self._where()} (conn {att.conn})")

    # ------------------------------------------------------------ event handlers -------------

    def _on_connected(self, att: Attempt, now: float) -> None:
        att.connected_at = now
        self._connect_ok = True
        if att.tls_level is not None:
            self._tls_ok_level = att.tls_level
        self._send(att, now)

    def _on_data(self, att: Attempt, data: bytes, now: float) -> None:
        if att.sent_at is None:
            return
        if att.first_data_at is None:
            att.first_data_at = now
            if att.kind == "fresh" and att.connected_at is not None:
                lat = now - att.connected_at
                if self._evidence is None or lat < self._evidence:
                    self._evidence = lat
                if self._evidence_max is None or lat > self._evidence_max:
                    self._evidence_max = lat
        room = self.opts.max_read - len(att.buf)
        if room > 0:
            att.buf += data[:room]
        if self.proto == "udp" and self.speculate and att.deadline is not None:
            # datagram rule: a UDP answer comes whole; a second datagram later than the
            # slowest first answer plus grace is not waited for (see the module docstring)
            att.deadline = min(att.deadline, now + (self._evidence_max or 0.0) + self.grace)
        full = len(att.buf) >= self.opts.max_read
        if att.marks is not None:
            # A speculative attempt ahead of the walk: its outcome may never be needed (an
            # earlier step may hard-match), so matching waits until the walk gets there;
            # only the points where it would have been matched are kept.
            if att.last_match is None or now - att.last_match >= MATCH_INTERVAL or full:
                att.marks.append(len(att.buf))
                att.last_match = now
            if full:
                self._end(att, Outcome(None, bytes(att.buf), "cap"), now)
            return
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
        ident = self._match(att)
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
                self._note(
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
        out = Outcome(att.soft, bytes(att.buf), "closed", wrapped)
        self._end(att, out, now, closed=True)

    def _on_connect_failed(self, att: Attempt, now: float) -> None:
        self._note(f"connect failed for {self._where()} (conn {att.conn})")
        if att.kind == "fresh" and att.budgeted and att.step != self.cursor:
            # A refused speculative connection says more about bursts (listen backlog,
            # connection-rate limits) than about the service: forget the attempt, stop
            # speculating on this service and let the step run in order later.
            self._close(att)
            self._fresh_started.discard(att.step)
            self.speculate = False
            return
        self._end(att, Outcome(None, b"", "connfail"), now, closed=True)

    def _on_tls_failed(self, att: Attempt, error: str, now: float) -> None:
        self._note(f"TLS handshake failed at level {att.tls_level}: {error}")
        level = att.tls_level or 0
        if self._tls_ok_level is None and level < MAX_TLS_LEVEL:
            # retry the same step with a more permissive context (nmap issue #2528)
            att.done = True
            self._attempts.pop(att.conn, None)
            conn = self._next_conn
            self._next_conn += 1
            retry = Attempt(conn, att.step, att.probe, att.kind, level + 1, att.budgeted)
            if att.marks is not None:
                retry.marks = []
            self._attempts[conn] = retry
            if att.kind == "null":
                self._null_att = retry
            self._actions.append(Connect(conn, self.proto, level + 1, self.opts.connect_timeout + 3))
            return
        if self._tls_ok_level is None and self._ssl_ident is not None:
            # TLS never worked: report what was seen in the clear
            self._note("TLS impossible with every setting; reporting the ssl match")
            ident = self._ssl_ident
            self.tunnel = False
            self._finish_match(ident, ident.service, None, now)
            return
        self._end(att, Outcome(None, b"", "tlsfail"), now, closed=True)

    def _end(self, att: Attempt, out: Outcome, now: float, closed: bool = False) -> None:
        att.done = True
        att.deadline = None
        att.rematch_at = None
        if att.marks is not None and out.ident is None and out.marks is None:
            marks = att.marks
            if att.buf and (not marks or marks[-1] != len(att.buf)):
                marks.append(len(att.buf))
            out.marks = marks
        if att.kind == "null":
            self._null_out = out
            keep = out.end in ("timeout", "cap") and not closed
            if not keep:
                self._close(att)
            else:
                att.done = True  # the connection stays open for the cheat step
        elif att.kind == "cheat":
            self._cheat_out = out
            self._close(att)
        else:
            self._fresh[att.step] = out
            if self.proto == "udp" and not self.speculate and not closed and att.connected_at is not None:
                self._udp_keep = (att.conn, att.connected_at)  # the next probe reuses it
            else:
                self._close(att)
        if out.ident is not None and not out.ident.soft:
            self._note(
                f"probe {att.probe.name} on {self._where()} matched "
                f"{out.ident.service} (line {out.ident.source})"
            )

    def _close(self, att: Attempt) -> None:
        att.done = True
        att.deadline = None
        if self._attempts.get(att.conn) is att:
            del self._attempts[att.conn]
            still = any(a.conn == att.conn for a in self._attempts.values())
            if not still:
                self._actions.append(Close(att.conn))
            if att.budgeted and self.budget is not None:
                self.budget.release()
        if self._null_att is att:
            self._null_att = None

    # ------------------------------------------------------------ silence rule ---------------

    def _null_silent_so_far(self) -> Attempt | None:
        att = self._null_att
        if (
            not self.speculate
            or att is None
            or att.kind != "null"
            or att.done
            or att.connected_at is None
            or att.buf
        ):
            return None
        return att

    def _silence_check_at(self) -> float | None:
        att = self._null_silent_so_far()
        if att is None:
            return None
        lat = self._evidence
        if lat is None:
            return None
        assert att.connected_at is not None
        return att.connected_at + lat + self.grace

    def _silence_rule(self, now: float) -> bool:
        when = self._silence_check_at()
        return when is not None and now + TIMER_SLACK >= when

    def _quiet_attempt(self, k: int) -> Attempt | None:
        """The running attempt of step k, if the quiet-step rule may judge it: a speculative
        service that answered some probe, and step k's own connection still without a byte."""
        if not self.speculate or self._evidence_max is None:
            return None
        if self.order[k].is_null or (self._cheat_pending and not self._silent_null):
            return None
        for att in self._attempts.values():
            if att.kind == "fresh" and att.step == k and not att.done:
                if att.sent_at is None or att.buf:
                    return None
                return att
        return None

    def _quiet_check_at(self, att: Attempt) -> float:
        assert att.sent_at is not None and self._evidence_max is not None
        return att.sent_at + self._evidence_max + self.grace

    # ------------------------------------------------------------ matching & results ---------

    def _match(self, att: Attempt) -> Identification | None:
        return self._match_bytes(att.probe, bytes(att.buf))

    def _match_bytes(self, probe: Probe, data: bytes) -> Identification | None:
        self.matches += 1
        try:
            return self.db.match(probe.name, data, self.proto)
        except Exception as exc:  # a broken pattern must not kill the scan
            self._note(f"matcher error on probe {probe.name}: {exc!r}")
            return None

    def _where(self) -> str:
        addr = self.target.address
        if ":" in addr:
            addr = f"[{addr}]"
        return f"{addr}:{self.target.port}/{self.proto}"

    def _note(self, text: str) -> None:
        if self.opts.version_trace:
            self._actions.append(Note(text))

    def _base(self) -> ServiceResult:
        t = self.target
        res = ServiceResult(address=t.address, port=t.port, proto=t.proto)
        if t.hostname:
            res.hostnames = [t.hostname]
        if t.proto == "udp":
            res.state = "open" if self._answered else "open|filtered"
            res.reason = "udp-response" if self._answered else "no-response"
        return res

    def _fingerprint(self) -> str | None:
        if not self.opts.fingerprints or self.opts.intensity < 7:
            return None
        return self.fp.text()

    def _finish_match(
        self, ident: Identification, service: str, tunnel: str | None, now: float, soft: bool = False
    ) -> None:
        res = self._base()
        res.service = service
        res.product = ident.product
        res.version = ident.version
        res.extrainfo = ident.info
        res.hostname = ident.hostname
        res.ostype = ident.ostype
        res.devicetype = ident.devicetype
        res.cpes = list(ident.cpes)
        res.tunnel = "ssl" if tunnel else None
        res.method = "probed"
        res.conf = 10
        res.matched = str(ident.source) if ident.source else None
        res.probe = ident.probe
        res.soft = soft
        if soft:
            res.fingerprint = self._fingerprint()
        if self.opts.version_trace:
            self._actions.append(
                Note(
                    f"Service scan {'soft match' if soft else 'match'}: {self._where()} is {res.display_service()}. "
                    f"Version: |{res.product or ''}|{res.version or ''}|{res.extrainfo or ''}|"
                    f" (line {res.matched}, probe {res.probe})"
                )
            )
        self._report(res, now)

    def _finish_wrapped(self, now: float) -> None:
        res = self._base()
        res.service = "tcpwrapped"
        res.method = "probed"
        res.conf = 8
        self._note(f"{self._where()} is tcpwrapped")
        self._report(res, now)

    def _finish_exhausted(self, now: float) -> None:
        if self.soft is not None:
            ident = self.soft
            svc, tunnel = ident.service, "ssl" if self.tunnel else None
            if svc.startswith("ssl/"):
                svc, tunnel = svc[4:], "ssl"
            self._note(f"probes exhausted: {self._where()} soft-matched {ident.service}")
            # a softmatch line may carry p/ v/ i/ o/ and cpe:, which nmap reports as they are
            self._finish_match(ident, svc, tunnel, now, soft=True)
            return
        self._note(f"probes exhausted: no match for {self._where()}")
        self._finish_table(now, probed=True)

    def _finish_table(self, now: float, probed: bool) -> None:
        res = self._base()
        res.service = service_name(self.target.port, self.proto)
        if self.soft is not None:
            res.service = self.soft.service
        res.method = "table"
        res.conf = 3
        res.tunnel = "ssl" if self.tunnel else None
        if probed:
            res.fingerprint = self._fingerprint()
        self._report(res, now)

    def _report(self, res: ServiceResult, now: float) -> None:
        for att in list(self._attempts.values()):
            self._close(att)
        self._attempts.clear()
        if self._udp_keep is not None:
            self._actions.append(Close(self._udp_keep[0]))
            self._udp_keep = None
        res.finished = time.time()
        self.finished = True
        self.result = res
        self._actions.append(Report(res))

    def _flush(self) -> list[Action]:
        if not self.finished:
            d = self.next_deadline()
            if d != self._last_deadline:
                self._last_deadline = d
                self._actions.append(Wait(d))
        out = self._actions
        self._actions = []
        return out


_TLS: bool | None = None


def _tls_available() -> bool:
    global _TLS
    if _TLS is None:
        try:
            import ssl  # noqa: F401

            _TLS = True
        except ImportError:  # Python built without OpenSSL: report plain "ssl" like nmap
            _TLS = False
    return _TLS


def describe(data: bytes, limit: int = 200) -> str:
    """Bytes for trace lines: escaped, shortened."""
    text = printable_bytes(data[:limit])
    return text + ("..." if len(data) > limit else "")
