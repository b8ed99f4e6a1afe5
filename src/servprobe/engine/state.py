"""The walk: nmap's version-detection algorithm for one service, as an explicit state machine.

Theory of operation
===================

A `ServiceMachine` identifies one service (one port of one host). It is sans-IO: it knows
nothing about sockets, asyncio, clocks, the platform or the port table. A driver
(`servprobe.net.driver`, `engine.sim`) feeds it events and carries out the actions it returns
(engine.events):

    events in:   Connected(conn)  Data(conn, bytes)  Closed(conn, reset)
                 ConnectFailed(conn)  TlsFailed(conn)  Timeout()      (+ `now` on every call)
    actions out: Connect(conn, tls_level)  Send(conn, bytes)  Close(conn)  Wait(deadline)
                 Report(ServiceResult)  Note(text)  Wake(key)  Fault(error)

`Wait(deadline)` says when the machine next wants a `Timeout()` if nothing else happens (a
later Wait replaces an earlier one). `Report` comes exactly once and is the last action.
What the machine must know about the world comes in its ServiceTarget (port-table name,
port-scan state) and EngineOptions (TLS availability, platform, wall-clock offset).

The order
---------
`engine.plan.Planner.order()` gives the steps: NULL first (TCP only: connect and listen for
the probe's totalwaitms), then the probes whose `ports` (inside TLS: `sslports`) list the
port, in file order, then the other probes with rarity <= intensity, in file order.

The phases
----------
The walk visits the steps strictly in order; its phase says where it is:

    NULL ──► CHEAT ──► LISTED ──► RARITY ──► FINISHED
      │        (each phase may be empty or end the walk at once)
      └─ a hard match of `ssl` in any phase ──► TLS_RESTART ──► NULL (inside TLS, once)

* NULL: listen on a fresh connection. Closed or reset with zero bytes before tcpwrappedms:
  tcpwrapped (conf 8). Ended by its wait (or the read cap) without a hard match: the next
  step that may run is the cheat step. Ended by the server closing: no cheat step.
* CHEAT: the first step that may run after NULL's wait: its probe goes on the NULL
  connection and its response is NULL's bytes plus what follows.
* LISTED, RARITY: every other step, each on a new connection.
* Every step ends with an *outcome* (bytes read, the first line that matched them, how the
  read ended). A hard match ends the walk (`ssl/x` reports x with tunnel ssl; `ssl` goes to
  TLS_RESTART); a softmatch records the service (only the first counts) and from then on a
  step runs only if its probe has a line for that service (except at intensity 9); bytes
  without a hard match go into the SF- fingerprint; a failed connect ends the walk
  unidentified (nmap's "incomplete"); a TLS handshake failing at every level before any
  worked reports what the clear-text `ssl` match said.
* FINISHED: steps ran out (the softmatch, or the port-table name: method table, conf 3),
  or a rule above ended the walk.

Where outcomes come from
------------------------
The walk asks its *outcome provider* for step k's outcome (`outcome(k, kind, now)`) and,
while it has none, tells it that it waits at k (`run(k, kind, now)`). The direct provider
(engine.provider, `--sequential`) runs exactly that one step with nmap's waits; the
speculative one (engine.speculate) runs later steps ahead and infers some outcomes early.
The walk cannot tell which it has: the rules above are the whole of nmap's algorithm here.

Fidelity notes (checked against nmap 7.93's behaviour and source)
------------------------------------------------------------------
* A probe without a `rarity` line counts as rarity 5 (nmap's default).
* The softmatch filter applies to port-listed and rarity-selected probes alike, except at
  intensity 9 (the documented rule; nmap's source filters only the rarity-selected ones).
* NULL closed or reset with zero bytes before tcpwrappedms -> tcpwrapped; nmap's source also
  calls a reset after some bytes tcpwrapped, we treat that as an ordinary end of response.
* When NULL ends by EOF (not timeout) the next probe opens a new connection and NULL's data
  is dropped, as in nmap.
* Fingerprints: a response is added when its step ends without a hard match; the SF- line is
  reported at every intensity whenever some step got data and nothing hard-matched (nmap
  7.93 prints one at --version-intensity 0 and 2: tests/data/nmap-sequences.json).
* UDP: a port the port scan saw answer stays `open` even if no probe is answered.
* An internal error ends only this service: reported unidentified, with a Fault action.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from servprobe.engine.budget import ConnBudget, new_key
from servprobe.engine.events import (
    Action,
    Close,
    Closed,
    Connect,
    Connected,
    ConnectFailed,
    Data,
    Event,
    Fault,
    Note,
    Report,
    Send,
    Timeout,
    TlsFailed,
    Wait,
    Wake,
)
from servprobe.engine.fingerprint import FingerprintBuilder
from servprobe.engine.speculate import choose_provider
from servprobe.escape import printable_bytes
from servprobe.result import ServiceResult

if TYPE_CHECKING:
    from servprobe.engine.options import EngineOptions, ServiceTarget
    from servprobe.engine.plan import Planner
    from servprobe.engine.provider import Kind, Outcome
    from servprobe.probes.model import Identification, Probe, ProbeDB

__all__ = [
    "Action",
    "Close",
    "Closed",
    "ConnBudget",
    "Connect",
    "ConnectFailed",
    "Connected",
    "Data",
    "Event",
    "Fault",
    "Note",
    "Phase",
    "Report",
    "Send",
    "ServiceMachine",
    "Timeout",
    "TlsFailed",
    "Wait",
    "Wake",
    "describe",
]


class Phase(enum.Enum):
    NULL = "null"
    CHEAT = "cheat"
    LISTED = "listed"
    RARITY = "rarity"
    TLS_RESTART = "tls-restart"
    FINISHED = "finished"


class ServiceMachine:
    """Identifies one service: nmap's walk (module docstring) over an outcome provider."""

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
        self.proto = target.proto
        self.key = new_key()  # names this machine in Wake actions
        self.matches = 0  # matcher calls, for tests and benchmarks
        self.result: ServiceResult | None = None
        self.phase = Phase.NULL
        self._actions: list[Action] = []
        self._last_deadline: float | None = -1.0
        self._ssl_ident: Identification | None = None  # the clear-text ssl match, inside TLS
        self._answered = False  # some step got bytes (UDP open vs open|filtered)
        self._cheat_next = False  # NULL's wait ended: the next step that runs is the cheat step
        self._begin(tunnel=False)
        self.provider = choose_provider(self, budget, self.key)

    # ------------------------------------------------------------ public API -----------------

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    def start(self, now: float) -> list[Action]:
        try:
            if self.planner.excluded(self.proto, self.target.port) and not self.opts.allports:
                self.note("port excluded from version scan by the probe file")
                self._finish_table(now, probed=False)
            elif not self.order:
                self._finish_table(now, probed=False)
            else:
                self._advance(now)
        except Exception as exc:  # one broken service must not end the scan
            self._fault(exc, now)
        return self._flush()

    def handle(self, event: Event, now: float) -> list[Action]:
        if self.finished:
            return []
        try:
            if isinstance(event, Timeout):
                self._last_deadline = -1.0  # always re-arm after a timer
            self.provider.handle(event, now)
            if not self.finished:
                self._advance(now)
        except Exception as exc:
            self._fault(exc, now)
        return self._flush()

    def abort(self, now: float, why: str = "host timeout") -> list[Action]:
        """Stop now (host timeout, Ctrl-C): report what is known, as not identified."""
        if not self.finished:
            try:
                self.note(f"aborted: {why}")
                self._finish_table(now, probed=False)
            except Exception as exc:
                self._fault(exc, now)
        return self._flush()

    def next_deadline(self) -> float | None:
        return None if self.finished else self.provider.next_deadline()

    @property
    def open_conns(self) -> int:
        return self.provider.open_conns

    # ------------------------------------------------------------ what providers may ask -----

    def allowed(self, probe: Probe, soft: Identification | None = None) -> bool:
        """May this probe still run (the softmatch filter; `soft`: as if that had matched)?"""
        soft = self.soft or soft
        return self.planner.allowed(probe, soft.service if soft else None, self.opts.intensity)

    def at_cheat_step(self) -> bool:
        return self._cheat_next

    def match(self, probe: Probe, data: bytes) -> Identification | None:
        self.matches += 1
        try:
            return self.db.match(probe.name, data, self.proto)
        except Exception as exc:  # a broken pattern must not kill the scan
            self.note(f"matcher error on probe {probe.name}: {exc!r}")
            return None

    def act(self, action: Action) -> None:
        self._actions.append(action)

    def note(self, text: str) -> None:
        if self.opts.version_trace:
            self._actions.append(Note(text))

    def where(self) -> str:
        addr = self.target.address
        if ":" in addr:
            addr = f"[{addr}]"
        return f"{addr}:{self.target.port}/{self.proto}"

    # ------------------------------------------------------------ the walk -------------------

    def _begin(self, tunnel: bool) -> None:
        """Start the order (again: inside TLS after a hard ssl match)."""
        self.tunnel = tunnel
        self.order: tuple[Probe, ...] = self.planner.order(
            self.proto, self.target.port, tunnel, self.opts.intensity
        )
        self._listed_end = self.planner.listed_end(self.proto, self.target.port, tunnel, self.opts.intensity)
        self.cursor = 0
        self.soft: Identification | None = None
        self._cheat_next = False
        self.fp = FingerprintBuilder(
            self.target.port, self.proto, self.opts.intensity, tls=tunnel, platform=self.opts.platform
        )

    def _kind(self) -> Kind:
        """The current step's kind, from the phase."""
        if self.phase is Phase.NULL:
            return "null"
        return "cheat" if self.phase is Phase.CHEAT else "fresh"

    def _enter(self, k: int) -> None:
        """Set the phase for step k (the walk arrived there)."""
        if self.order[k].is_null:
            self.phase = Phase.NULL
        elif self._cheat_next:
            self.phase = Phase.CHEAT
        elif k < self._listed_end:
            self.phase = Phase.LISTED
        else:
            self.phase = Phase.RARITY

    def _advance(self, now: float) -> None:
        while not self.finished:
            if self.cursor >= len(self.order):
                self._finish_exhausted(now)
                return
            probe = self.order[self.cursor]
            if not self.allowed(probe):
                self.cursor += 1
                continue
            self._enter(self.cursor)
            kind = self._kind()
            out = self.provider.outcome(self.cursor, kind, now)
            if out is None:
                self.provider.run(self.cursor, kind, now)
                return
            self._apply(probe, out, now)
            if self.phase is Phase.TLS_RESTART:
                self.provider.begin()
                self.phase = Phase.NULL  # cursor 0 of the order inside TLS
            elif not self.finished:
                self.cursor += 1

    def _apply(self, probe: Probe, out: Outcome, now: float) -> None:
        self._cheat_next = False
        if out.data:
            self._answered = True
        if probe.is_null:
            if out.wrapped:
                self._finish_wrapped(now)
                return
            self._cheat_next = out.end in ("timeout", "cap", "virtual")
        if out.end == "connfail":
            self._finish_table(now, probed=False)
            return
        if out.end == "tlsfail" and self._ssl_ident is not None and not self.provider.tls_worked:
            # TLS never worked: report what was seen in the clear (nmap #2528's other half)
            self.note("TLS impossible with every setting; reporting the ssl match")
            self.tunnel = False
            self._finish_match(self._ssl_ident, self._ssl_ident.service, None, now)
            return
        ident = out.ident
        if ident is not None and not ident.soft:
            self._hard(ident, now)
            return
        if out.data:
            self.fp.add(probe.name, out.data, self._wall(now))
        if ident is not None:
            if self.soft is None:
                self.soft = ident
                self.note(f"soft match: {self.where()} is {ident.service} (probe {probe.name})")
            elif ident.service != self.soft.service:
                self.note(f"already soft-matched {self.soft.service}, ignoring soft match {ident.service}")

    def _hard(self, ident: Identification, now: float) -> None:
        svc = ident.service
        if svc.startswith("ssl/"):
            self._finish_match(ident, svc[4:], "ssl", now)
            return
        if svc == "ssl" and not self.tunnel and self.proto == "tcp" and self.opts.tls:
            self.note(f"hard match ssl at {self.where()}: restarting probes inside TLS")
            self._ssl_ident = ident
            self.phase = Phase.TLS_RESTART
            self._begin(tunnel=True)
            return
        self._finish_match(ident, svc, "ssl" if self.tunnel else None, now)

    # ------------------------------------------------------------ results --------------------

    def _wall(self, now: float) -> float | None:
        """Wall-clock time of `now` (the driver's clock) for reports, if the driver said how."""
        off = self.opts.clock_offset
        return None if off is None else now + off

    def _base(self) -> ServiceResult:
        t = self.target
        res = ServiceResult(address=t.address, port=t.port, proto=t.proto)
        if t.hostname:
            res.hostnames = [t.hostname]
        if t.proto == "udp":
            seen = self._answered or t.state == "open"  # the port scan saw it answer
            res.state = "open" if seen else "open|filtered"
            res.reason = "udp-response" if seen else "no-response"
        return res

    def _fingerprint(self) -> str | None:
        return self.fp.text() if self.opts.fingerprints else None

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
                    f"Service scan {'soft match' if soft else 'match'}: {self.where()} is {res.display_service()}. "
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
        self.note(f"{self.where()} is tcpwrapped")
        self._report(res, now)

    def _finish_exhausted(self, now: float) -> None:
        if self.soft is not None:
            ident = self.soft
            svc, tunnel = ident.service, "ssl" if self.tunnel else None
            if svc.startswith("ssl/"):
                svc, tunnel = svc[4:], "ssl"
            self.note(f"probes exhausted: {self.where()} soft-matched {ident.service}")
            # a softmatch line may carry p/ v/ i/ o/ and cpe:, which nmap reports as they are
            self._finish_match(ident, svc, tunnel, now, soft=True)
            return
        self.note(f"probes exhausted: no match for {self.where()}")
        self._finish_table(now, probed=True)

    def _finish_table(self, now: float, probed: bool) -> None:
        res = self._base()
        res.service = self.soft.service if self.soft is not None else self.target.table_name
        res.method = "table"
        res.conf = 3
        res.tunnel = "ssl" if self.tunnel else None
        if probed:
            res.fingerprint = self._fingerprint()
        self._report(res, now)

    def _report(self, res: ServiceResult, now: float) -> None:
        self.provider.close_all()
        res.finished = self._wall(now)
        self.phase = Phase.FINISHED
        self.result = res
        self._actions.append(Report(res))

    def _fault(self, exc: Exception, now: float) -> None:
        """An internal error: end this service only, unidentified; say why in a Fault."""
        if self.finished:
            return
        error = f"internal error identifying {self.where()}: {exc!r}"
        # keep only what releases resources; the rest of this step's actions is void
        self._actions = [a for a in self._actions if isinstance(a, (Close, Wake))]
        conns: list[int] = []
        try:
            conns = self.provider.conns()
        except Exception:
            pass
        self._actions.extend(Close(c) for c in conns)
        self._actions.append(Fault(error))
        res = self._base()
        res.service = self.target.table_name
        res.error = error  # counted in the scan summary (bug 8)
        res.finished = self._wall(now)
        self.phase = Phase.FINISHED
        self.result = res
        try:
            if self.provider.budget is not None:
                self.provider.budget.forget(self.key)
        except Exception:
            pass
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


# kept for drivers that import them from here
_ = (Close, Closed, Connect, Connected, ConnectFailed, Data, Send, TlsFailed, Wake)


def describe(data: bytes, limit: int = 200) -> str:
    """Bytes for trace lines: escaped, shortened."""
    text = printable_bytes(data[:limit])
    return text + ("..." if len(data) > limit else "")
