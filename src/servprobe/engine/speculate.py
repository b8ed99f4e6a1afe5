"""The speculative outcome provider: later steps run ahead, on their own connections.

Theory of operation
===================

The walk (engine.state) consumes steps strictly in nmap's order and asks a provider for step
k's outcome. The direct provider (engine.provider) runs one step at a time with nmap's
waits. This one also starts *speculative attempts*: later steps run at once, each on its own
new connection, at most options.probe_parallelism per service and as many as the shared
`ConnBudget` (per host and global) allows. A speculative attempt of step k performs exactly
the interaction the sequential run would perform for step k (new connection, probe sent at
once, read for the probe's wait), only earlier. Assuming a server treats connections
independently of when they are opened, its outcome is the outcome the sequential run would
see, so it can stand in for step k. The walk still consumes outcomes in order, so a result
from step k is final only once every earlier step has resolved without a hard match;
softmatch filtering is applied by the walk when it reaches a step, and attempts of steps the
filter excludes are simply ignored.

Two steps cannot be run ahead that way, because they depend on the NULL connection: NULL
itself (listen without speaking) and the cheat step (probe after NULL's silence, on the same
connection). Waiting for them would cost NULL's full wait (6 s) on every request-first
service, which is most of nmap's scan time. The rule that lets us skip that wait:

  *Silence rule.* While NULL is pending on connection A (connected at tA, zero bytes, still
  open), if a speculative attempt F got its first bytes L seconds after its own connect, then
  once A has stayed silent until tA + L + grace (options.speculation_grace, default 0.5 s)
  the server is taken to be request-first: it answered a probe on F but said nothing
  unprompted on A over the same delay. Under that hypothesis NULL's outcome is "nothing"
  (an inferred, "virtual" outcome) and the cheat step's outcome equals its speculative
  outcome on a new connection (an idle request-first server answers a probe the same after
  6 s of silence as at once), so A is closed and the walk continues with speculative outcomes.

The silence rule never fires for banner-first services (A gets the banner at about the time F
gets data, so A is not silent), for late-banner services (F gets nothing before the banner,
which A gets too), for silent ports (no data anywhere) or for tcpwrapped ports (F is closed
too). Without it, NULL and the cheat step run exactly as nmap runs them and only steps after
the cheat step are sped up. Known limit: a server that answers requests at once *and* sends an
unsolicited message to idle clients more than `grace` later (e.g. an idle-timeout notice)
would be identified by its answer, where nmap would see the notice first.

Two more rules of the same kind let the walk pass steps whose own wait would otherwise stall
it while other steps already proved the server answers requests (the evidence: the slowest
first answer Lmax seen on any speculative attempt of this sequence):

  *Quiet-step rule.* Step k's attempt sent its probe at tk and has received nothing; once
  the walk is at k and tk + 2·Lmax + grace has passed, step k is resolved as silent (twice
  Lmax: over a jittery path one answer can take much longer than the others). A server
  that answers some probes within Lmax and ignores this one (nginx and redis ignore
  GenericLines' blank lines, DNS servers ignore most UDP probes) would give nmap the same
  silence after its full wait. It costs the answer only for a server that answers this very
  probe more slowly than 2·Lmax + grace while answering others faster.

  *Datagram rule (UDP).* A UDP answer arrives whole: after a datagram, the attempt waits only
  Lmax + grace for another one instead of the probe's full wait.

Launching: the window
---------------------
Speculation on TCP starts options.speculation_delay (0.2 s) after NULL connects, not at once:
banner-first services answer NULL within milliseconds and need no extra connections (a burst
of them would even make sshd drop connections, MaxStartups). Attempts are launched in order
(port-listed probes first), skipping probes a softmatch already excludes (also the softmatch
NULL's still-running read has so far: the walk will apply it unless NULL hard-matches later,
and a step skipped now still runs in order if needed). The *window* bounds
how many started steps may be ahead of the walk (finished ones count too, or a service that
answers fast would get every probe at once):

  * 4 at first (SPEC_FIRST_WINDOW);
  * after another speculation_delay, all of probe_parallelism if no attempt got an answer (a
    silent port: parallel waits are the whole point), else still 4 (request-first services are
    usually settled by the first few steps);
    *Workers.* A server may serve a fixed number of clients at a time and leave the rest in
    its listen backlog, unread (dnsmasq: 20 TCP clients, MAX_PROCS; inetd-style instance
    limits): an attempt queued behind silent ones reads nothing for its whole wait, and the
    client cannot tell it from a silent probe. So while the service has answered nothing,
    at most SILENT_OPEN_MAX of its connections (NULL's included) are open at once; the
    other started steps connect as those end, except probes with a longer wait than the
    default (SIPOptions, Help: 7.5 s), which go at once or a second round would outlast
    the walk. This costs little on a silent port: NULL's wait plus the cheat step's (11 s)
    outlast two rounds of default waits (about 10.9 s).
    Measured through 150 ± 100 ms, where no answer is back after speculation_delay
    (`python bench/bench_worker_limit.py`): with all 32 at once dnsmasq's TCP side lost
    DNSVersionBindReqTCP's answer in 7 of 48 runs (its connection reached dnsmasq behind
    twenty others: jitter reorders them), with the cap in none of 56. A server with fewer
    workers than the cap can still queue an attempt (the limit is the server's, unknown
    here); a silent port costs 11.0-11.2 s as before.
  * *Unmatched-banner ramp.* While the step the walk waits at is NULL or the cheat step and
    it has already received bytes that matched no line, the walk is bound to sit out that
    step's full wait (nmap's rule: an unrecognized banner is read to the end), and the
    service has shown that it answers on parallel connections. Each speculative attempt
    that then gets its first bytes widens the window by one, as an ACK does in TCP's slow
    start: the window doubles every round trip up to probe_parallelism. A chatty unknown
    service (banner plus an unmatched reply to every probe, connection kept open) thus costs
    NULL's wait plus the cheat step's wait (about 11 s) instead of one 5 s wait per four
    probes (about 50 s). Recognised banners hard-match before speculation starts, and
    request-first services never trigger it (NULL has no bytes), so neither gets more
    connections than before. Outcomes do not depend on the window, only the connection count.

Responses of speculative attempts ahead of the walk are not matched as they arrive: the
lengths at which they would have been matched are kept, and the prefixes are matched in order
when (if ever) the walk reaches that step, with the same result. A service that answers
every probe thus costs one regex pass per step the order really needs, not one per probe.

A refused speculative connection says more about bursts (listen backlog, connection-rate
limits) than about the service: the attempt is forgotten, speculation stops for this service
and the step runs in order later. All rules apply only while speculating; --sequential (the
direct provider) waits every wait, as nmap does.

Servers that cap connections per client (issue 17)
--------------------------------------------------
ngircd (MaxConnectionsIP), sshd (MaxStartups), vsftpd (max_per_ip), Postfix and others
answer connections past their cap with a refusal: a message or nothing, then a close,
whatever the probe. Parallel attempts break the premise above (connections independent of
each other), so the outcome of an attempt that overlapped others may be the cap's, not the
probe's. The server cannot be asked which; the rules below never need to know.

  *Overlap.* For every fresh TCP attempt we count the other connections of this service
  that overlapped it: open when it connected (NULL included), opened while it ran (with
  jitter a later connection can reach the server first), and those we closed less than a
  linger time before it connected (our close is still on its way to the server; linger =
  the slowest round trip seen on any attempt, first bytes or the server's close, plus 10 ms
  -- twice that while fewer than 8 were seen, as one sample may have missed the jitter's
  worst -- and speculation_grace before any).

  *Refusal rule.* An attempt the server closed (EOF or reset, with or without bytes, before
  its read ended otherwise) while it overlapped more than SAFE_OVERLAP = 1 other connection
  may have been refused by policy. Its outcome is discarded unseen: not matched against the
  database, not added to the fingerprint (its latency stays evidence for the silence and
  quiet-step rules: it shows how fast the server reacts, and those rules only judge
  connections the server kept open). The step runs again, and only in a quiet moment: at
  most one other connection counted when it connects and nothing else launched while it
  runs (when the walk waits at that step, attempts running ahead that have no byte yet are
  closed to make the moment; they run again when needed; those with bytes keep them, as a
  server may not answer twice). A cap of two or more connections never refuses such a re-run, so its outcome is
  the one nmap's one-connection-at-a-time walk would see, and it is final. (A cap of one
  connection per client is beyond this rule; nmap itself trips over it whenever its previous
  connection's close is still in flight. A cap that answers without closing, or by silence,
  is not detected either, nor a refusal message that hard-matches a line as it arrives on
  the attempt the walk waits at -- none of nmap's lines matches the refusals of ngircd,
  sshd or vsftpd.)

  *Verdict and AIMD window.* The re-run tells what the discarded outcome was: the same bytes
  (one a prefix of the other) closed or matched again -- the server simply closes after that
  answer (nginx, PostgreSQL, stunnel do), nothing changes; anything else -- it was a
  refusal. A confirmed refusal gives the service an AIMD window, as TCP's congestion
  window: the connections of the service open at once (NULL, the walk's own step and
  speculative attempts, lingering closes included) are bounded by `cwnd`, which starts at
  half the load the refusal saw, halves again on a refusal from a later round (attempts
  launched after the last cut; one cut per round, as TCP halves once per loss window), never
  falls below CWND_FLOOR = 2 (the step the walk waits at plus one: with one, NULL's six
  seconds would stall everything, and the refusal rule already makes a second connection
  safe), and grows by 1/cwnd for each attempt that ends without being discarded. Before
  any confirmed refusal there is no such bound: servers without a cap keep every rule above
  unchanged and pay only for the quiet re-runs of their own closes (on loopback a few
  milliseconds each). The host's ConnBudget hears of confirmed refusals too and narrows the
  host's speculative connections the same way once two services of the host refused
  (engine.budget); --max-conn-per-host N fixes the host's limit by hand instead.

  *Trust.* Quiet re-runs go one at a time, so a server that closes every probe's connection
  without a refusal (coturn's TCP side resets each probe's connection after 3 s) would pay
  one full wait per probe in a row: 30 probes, 90 s. Once TRUST_AFTER re-runs in a row gave
  the same answer uncrowded (and none proved a refusal), the server has shown that it does
  not refuse at the loads those discarded outcomes saw: a close at no more than the highest
  such load is kept as the probe's outcome, and steps discarded at such loads re-run at
  once within the window instead of alone. A later re-run that proves a refusal withdraws
  the trust for good.

Outcomes still do not depend on timing or windows: a discarded outcome is never used, and a
kept one was read either uncrowded or without the server closing on it.

Silent ports cost about one NULL wait plus one probe wait when probe_parallelism covers the
order (default 32: nmap's DB selects ~30 TCP probes at intensity 7), instead of one wait per
probe: NULL 6 s + cheat step 5 s, against about 150 s sequentially.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servprobe.engine.provider import (
    DEFAULT_WAIT_MS,
    MATCH_INTERVAL,
    TIMER_SLACK,
    Attempt,
    DirectProvider,
    Outcome,
)

if TYPE_CHECKING:
    from servprobe.engine.budget import ConnBudget
    from servprobe.engine.events import Event
    from servprobe.engine.provider import Kind
    from servprobe.engine.state import ServiceMachine
    from servprobe.probes.model import Identification, Probe

SPEC_FIRST_WINDOW = 4
# the refusal rule assumes a cap of at least two connections per client: an attempt that
# overlapped at most this many others cannot have been refused (module docstring)
SAFE_OVERLAP = 1
# same-answer re-runs (and no refusal) after which closes at the loads they saw are trusted
TRUST_AFTER = 2
# connections open at once while the service has answered nothing (module docstring:
# Workers): NULL's and 15 more, under dnsmasq's 20 TCP workers with room for the few
# long-wait probes, which are not held back; two rounds of 15 default waits (the default
# intensity's ~32 TCP probes) still end within NULL's and the cheat step's 11 s
SILENT_OPEN_MAX = 16
LINGER_SLACK = 0.01  # seconds added to the linger time (timer granularity)
LINGER_SAMPLES = 8  # round trips seen before the slowest one alone bounds a close's travel
# the AIMD window's floor: the step the walk waits at plus one (module docstring)
CWND_FLOOR = SAFE_OVERLAP + 1
SPEC_ANSWERING_WINDOW = 4


def choose_provider(walk: ServiceMachine, budget: ConnBudget | None, key: int) -> DirectProvider:
    """The speculative provider unless --sequential, no parallelism or a zero budget."""
    o = walk.opts
    speculate = (
        not o.sequential
        and o.probe_parallelism > 0
        and (budget is None or budget.limit is None or budget.limit > 0)
    )
    return (
        SpeculativeProvider(walk, budget, key) if speculate else DirectProvider(walk, budget, key)
    )


class SpeculativeProvider(DirectProvider):
    """Runs later steps ahead of the walk and infers some outcomes early (module docstring)."""

    speculative = True

    def __init__(self, walk: ServiceMachine, budget: ConnBudget | None, key: int) -> None:
        self.active = True  # False once a speculative connect was refused: direct from then on
        self.grace = float(walk.opts.speculation_grace)
        self.spec_delay = float(walk.opts.speculation_delay)
        # the refusal rule and the AIMD window (module docstring); per service, kept across
        # the TLS restart (the same server counts the connections)
        self.cwnd: float | None = None  # None: no refusal seen, the window rules alone
        self.refusals = 0  # outcomes discarded as possible refusals (benchmarks, tests)
        self.confirmed = 0  # of which a re-run proved the refusal (another answer alone)
        self.spurious = 0  # of which a re-run gave the same answer (the server just closes)
        self._trusted = 0  # closes at most this crowded are kept once trusted (docstring)
        self._silent_capped = False  # the last _may_launch said no for SILENT_OPEN_MAX only
        # step -> (bytes, launch number, connections then, host round) of its discarded outcome
        self._discarded: dict[int, tuple[bytes, int, int, int | None]] = {}
        self._rerun: int | None = None  # conn of the re-run in flight (kept uncrowded)
        self._launches = 0  # connections opened, numbered: a round = those before a cut
        self._cut_at = 0
        # conn -> [other connections overlapping it, its launch number, the host's round]
        self._crowd: dict[int, list] = {}
        self._lingering: list[float] = []  # when we closed connections the server may still count
        self._server_closed: set[int] = set()
        self._room_wake: float | None = None
        self._rtt_max: float | None = None  # slowest round trip seen (first bytes or close)
        self._rtt_samples = 0
        self._now = 0.0
        super().__init__(walk, budget, key)

    def begin(self) -> None:
        super().begin()
        self._silent_null = False  # the silence rule fired
        self._evidence: float | None = None  # fastest first answer on a speculative attempt
        self._evidence_max: float | None = None  # slowest first answer (quiet-step rule)
        self._spec_t0: float | None = None  # first speculative launch
        self._spec_wake: float | None = None  # when speculation wants to launch more
        self._ramp = 0  # window growth earned by the unmatched-banner ramp
        self._ramped: set[int] = set()  # conns that widened the window (the ramp)

    # ------------------------------------------------------------ the walk's questions -------

    def outcome(self, k: int, kind: Kind, now: float) -> Outcome | None:
        if kind == "null":
            if self._null_out is None and self._silence_rule(now):
                self.w.note(
                    "NULL probe: request-first service (silence rule), NULL resolved as silent"
                )
                self._silent_null = True
                if self._null_att is not None:
                    self._close(self._null_att)
                self._null_out = Outcome(None, b"", "virtual")
            return self._null_out
        if kind == "cheat" and not self._silent_null:
            return self._cheat_out
        probe = self.w.order[k]
        out = self._fresh.get(k)
        if out is not None and out.marks is not None:
            out = self._fresh[k] = self._resolve_lazy(probe, out)
        if out is None and self._activate(k, now):
            out = self._fresh.get(k)
        if out is None:
            att = self._quiet_attempt(k)
            if att is not None and now + TIMER_SLACK >= self._quiet_check_at(att):
                self.w.note(
                    f"probe {probe.name}: silent while other probes were answered (quiet-step rule)"
                )
                out = self._fresh[k] = Outcome(None, b"", "virtual")
                self._close(att)
        return out

    def run(self, k: int, kind: Kind, now: float) -> None:
        self._now = now
        if kind == "cheat" and self._silent_null:
            kind = "fresh"  # the silence rule: the cheat step's outcome is a fresh attempt's
        self._room_wake = None
        if (
            kind == "fresh"
            and k in self._discarded
            and k not in self._started
            and self._rerun is None
            and not self._trusts(self._discarded[k][2])
        ):
            self._clear_ahead(k)
        if kind != "fresh" or k in self._started or self._may_launch(k, now):
            super().run(k, kind, now)
        # else the step waits for room (the refusal rule, the AIMD window)
        if self.active:
            self._speculate(now)

    def next_deadline(self) -> float | None:
        best = super().next_deadline()
        cands = [self._silence_check_at(), self._spec_wake, self._room_wake]
        k = self.w.cursor
        if not self.w.finished and k < len(self.w.order):
            quiet = self._quiet_attempt(k)
            if quiet is not None:
                cands.append(self._quiet_check_at(quiet))
        for c in cands:
            if c is not None and (best is None or c < best):
                best = c
        return best

    # ------------------------------------------------------------ events ----------------------

    def handle(self, event: Event, now: float) -> None:
        self._now = now
        super().handle(event, now)

    def _on_data(self, att: Attempt, data: bytes, now: float) -> None:
        if att.sent_at is None:
            return
        if att.first_data_at is None:
            att.first_data_at = now
            if att.kind == "fresh" and att.connected_at is not None:
                lat = now - att.connected_at
                self._note_rtt(lat)
                if self._evidence is None or lat < self._evidence:
                    self._evidence = lat
                if self._evidence_max is None or lat > self._evidence_max:
                    self._evidence_max = lat
                if att.budgeted and self._blocked_on_unmatched_data():
                    self._ramp += 1  # unmatched-banner ramp (module docstring)
                    self._ramped.add(att.conn)
        full = self._take(att, data)
        if self.proto == "udp" and self.active and att.deadline is not None:
            # datagram rule: a UDP answer comes whole; a second datagram later than the
            # slowest first answer plus grace is not waited for
            att.deadline = min(att.deadline, now + (self._evidence_max or 0.0) + self.grace)
        if att.marks is not None:
            # An attempt ahead of the walk: its outcome may never be needed (an earlier step
            # may hard-match), so matching waits until the walk gets there; only the points
            # where it would have been matched are kept.
            if att.last_match is None or now - att.last_match >= MATCH_INTERVAL or full:
                att.marks.append(len(att.buf))
                att.last_match = now
            if full:
                self._end(att, Outcome(None, bytes(att.buf), "cap"), now)
            return
        self._match_as_read(att, full, now)

    def _on_connect_failed(self, att: Attempt, now: float) -> None:
        if att.kind == "fresh" and att.budgeted and att.step != self.w.cursor:
            # A refused speculative connection says more about bursts than about the
            # service: forget the attempt, stop speculating, run the step in order later.
            self.w.note(f"connect failed for {self.w.where()} (conn {att.conn}): speculation stops")
            self._close(att)
            self._started.discard(att.step)
            self.active = False
            return
        super()._on_connect_failed(att, now)

    def _keeps_udp_socket(self) -> bool:
        return self.proto == "udp" and not self.active

    def _note_rtt(self, rtt: float) -> None:
        self._rtt_samples += 1
        if self._rtt_max is None or rtt > self._rtt_max:
            self._rtt_max = rtt

    def _end(self, att: Attempt, out: Outcome, now: float, closed: bool = False) -> None:
        if closed:
            self._server_closed.add(att.conn)  # the server knows: no lingering count
            if att.kind == "fresh" and att.first_data_at is None and att.connected_at is not None:
                self._note_rtt(now - att.connected_at)
        if att.conn == self._rerun:
            self._rerun = None
        if att.kind == "fresh":
            crowd = self._crowd.pop(att.conn, None)
            if (
                out.end == "closed"
                and crowd is not None
                and crowd[0] > SAFE_OVERLAP
                and not self._trusts(crowd[0] + 1)
            ):
                self._refused(att, crowd, now)
                return
            if att.step in self._discarded:
                self._verdict(att, out)
            if self.cwnd is not None:  # additive increase
                self.cwnd = min(self._cwnd_max(), self.cwnd + 1.0 / self.cwnd)
            if att.budgeted and self.budget is not None and self._adapt_host():
                self.budget.healthy()
        if att.marks is not None and out.ident is None and out.marks is None:
            marks = att.marks
            if att.buf and (not marks or marks[-1] != len(att.buf)):
                marks.append(len(att.buf))
            out.marks = marks
        super()._end(att, out, now, closed)

    def _connect(self, k: int, probe: Probe, kind: Kind, now: float) -> Attempt:
        crowd = self._load(now) if self.proto == "tcp" else 0
        att = super()._connect(k, probe, kind, now)
        if kind == "fresh" and k != self.w.cursor and att.sent_at is None:
            att.marks = []
        if self.proto == "tcp":
            # a later connection may reach the server first (jitter): it crowds the open ones
            for c in self._crowd.values():
                c[0] += 1
            if kind == "fresh":
                self._launches += 1
                host_round = self.budget.acquired if self.budget is not None else None
                self._crowd[att.conn] = [crowd, self._launches, host_round]
                if k in self._discarded and not self._trusts(self._discarded[k][2]):
                    self._rerun = att.conn
        return att

    def _close(self, att: Attempt) -> None:
        conn = att.conn
        ours = self._attempts.get(conn) is att and conn not in self._server_closed
        super()._close(att)
        if conn == self._rerun:
            self._rerun = None
        self._server_closed.discard(conn)
        self._crowd.pop(conn, None)
        if ours and self.proto == "tcp":
            self._lingering.append(self._now)  # the server may count it a while longer

    # ------------------------------------------------------------ the refusal rule -----------

    def _trusts(self, load: int) -> bool:
        """Is a close seen with `load` connections counted the probe's own (docstring: Trust)?"""
        return self.confirmed == 0 and self.spurious >= TRUST_AFTER and load <= self._trusted

    def _adapt_host(self) -> bool:
        """The host's window adapts unless --max-conn-per-host fixed it by hand."""
        return self.opts.per_host_connections is None

    def _cwnd_max(self) -> float:
        return float(self.opts.probe_parallelism + 1)

    def _linger(self) -> float:
        """How long a connection we closed may still count at the server: its close takes one
        one-way delay to get there (and the server a moment to act on it), which the slowest
        round trip seen on any attempt (first bytes or the server's close) bounds once there
        are LINGER_SAMPLES of them; with fewer, twice that (jitter); grace before any."""
        if self._rtt_max is None:
            return self.grace
        factor = 1 if self._rtt_samples >= LINGER_SAMPLES else 2
        return factor * self._rtt_max + LINGER_SLACK

    def _clear_ahead(self, k: int) -> None:
        """The walk waits at discarded step k: its re-run needs a quiet moment, which the
        attempts running ahead would hold off for up to their whole wait. Close those still
        without a byte (nmap would not have run them yet; they run again when needed)."""
        for att in list(self._attempts.values()):
            # one that got bytes keeps them: a server may not say it twice (a portmapper that
            # answers once), so it runs to its end and only delays the quiet moment
            if att.kind == "fresh" and att.step > k and not att.done and not att.buf:
                self._close(att)
                self._started.discard(att.step)

    def _load(self, now: float) -> int:
        """Connections of this service the server may be counting now: ours that are open,
        and ours closed less than `_linger()` ago (a room wake-up may fire TIMER_SLACK early:
        without the slack here it would find the same load and re-arm, forever)."""
        cutoff = now + TIMER_SLACK - self._linger()
        self._lingering = [t for t in self._lingering if t > cutoff]
        return len({a.conn for a in self._attempts.values()}) + len(self._lingering)

    def _may_launch(self, k: int, now: float) -> bool:
        """May step k open a connection now? A discarded step only in a quiet moment (at most
        SAFE_OVERLAP others counted), and nothing while its re-run is in flight; any other
        step while the AIMD window has room. Else wake when a closed connection stops
        counting (other wake-ups come with the events that end attempts)."""
        self._silent_capped = False
        if self.proto != "tcp":
            return True
        if self._rerun is not None:
            return False
        load = self._load(now)
        if k in self._discarded and not self._trusts(self._discarded[k][2]):
            ok = load <= SAFE_OVERLAP
        else:
            window = None if self.cwnd is None else max(CWND_FLOOR, int(self.cwnd))
            cap = window
            long_wait = (self.w.order[k].totalwaitms or DEFAULT_WAIT_MS) > DEFAULT_WAIT_MS
            if self._evidence is None and not self._ramp and not long_wait:  # Workers
                cap = SILENT_OPEN_MAX if cap is None else min(cap, SILENT_OPEN_MAX)
            ok = cap is None or load < cap
            self._silent_capped = not ok and (window is None or load < window)
        if not ok and self._lingering:
            wake = min(self._lingering) + self._linger()
            if self._room_wake is None or wake < self._room_wake:
                self._room_wake = wake
        return ok

    def _refused(self, att: Attempt, crowd: list, now: float) -> None:
        """A crowded attempt the server closed: maybe a per-client cap's refusal (docstring).
        Its outcome is dropped unseen (no match, no fingerprint, no evidence) and the step
        runs again later, when the window has room; the window halves once per round."""
        others, launch, host_round = crowd
        self.refusals += 1
        self.w.note(
            f"probe {att.probe.name}: connection closed by the server with {len(att.buf)} bytes while "
            f"{others} other connection(s) overlapped it: possible per-client limit, outcome discarded, "
            "step runs again (refusal rule)"
        )
        # its latency stays evidence: it shows how fast the server reacts on a connection
        # (the silence and quiet-step rules judge only connections the server kept open)
        if att.conn in self._ramped:
            self._ramped.discard(att.conn)
            self._ramp -= 1
        entry = (bytes(att.buf), launch, others + 1, host_round if att.budgeted else None)
        old = self._discarded.get(att.step)
        if old is not None:
            # discarded again (a trusted re-run that met more connections than trusted): keep
            # the first outcome, raise its load, so the next re-run waits for a quiet moment
            # instead of going crowded again and again (seen on git daemon: a livelock)
            entry = (old[0], old[1], max(old[2], others + 1), old[3])
        self._discarded[att.step] = entry
        self._started.discard(att.step)
        self._close(att)

    def _verdict(self, att: Attempt, out: Outcome) -> None:
        """A discarded step's re-run ended uncrowded: was the discarded outcome a refusal?
        Not if the re-run got the same bytes (one a prefix of the other: a read may end at a
        match) and the server closed or matched again: it just closes after that answer.
        Else it was: the window halves (once per round, as TCP halves once per loss window)
        and the host's budget hears of it."""
        data, launch, load, host_round = self._discarded.pop(att.step)
        got = bytes(att.buf)
        if out.end in ("closed", "match") and (got.startswith(data) or data.startswith(got)):
            self.spurious += 1
            self._trusted = max(self._trusted, load)
            self.w.note(
                f"probe {att.probe.name}: same answer uncrowded, the server closes after it (no refusal)"
            )
            return
        self.confirmed += 1  # withdraws the trust for good (_trusts)
        if launch > self._cut_at:
            base = self.cwnd if self.cwnd is not None else float(load)
            self.cwnd = max(float(CWND_FLOOR), float(int(base / 2)))
            self._cut_at = self._launches
        self.w.note(
            f"probe {att.probe.name}: another answer uncrowded, the discarded one was a refusal: "
            f"{self.w.where()} speculates with at most {int(self.cwnd or 0)} connections (AIMD window)"
        )
        if host_round is not None and self.budget is not None and self._adapt_host():
            self.budget.refused(self.key, host_round)

    # ------------------------------------------------------------ lazy matching --------------

    def _resolve_lazy(self, probe: Probe, out: Outcome) -> Outcome:
        """Match a lazily kept response the way it would have been matched as it arrived."""
        soft: Identification | None = None
        for mark in out.marks or ():
            ident = self.w.match(probe, out.data[:mark])
            if ident is not None and not ident.soft:
                self.w.note(
                    f"probe {probe.name} on {self.w.where()} matched {ident.service} (line {ident.source})"
                )
                return Outcome(ident, out.data[:mark], "match")
            if ident is not None and soft is None:
                soft = ident
        return Outcome(soft, out.data, out.end, out.wrapped)

    def _activate(self, k: int, now: float) -> bool:
        """The walk reached step k while its attempt still runs: match what it has so far and
        match as data arrives from now on. True when that produced its outcome."""
        for att in list(self._attempts.values()):
            if att.kind == "fresh" and att.step == k and not att.done and att.marks is not None:
                if att.buf and (not att.marks or att.marks[-1] != len(att.buf)):
                    att.marks.append(len(att.buf))
                lazy = self._resolve_lazy(
                    att.probe, Outcome(None, bytes(att.buf), "timeout", marks=att.marks)
                )
                att.marks = None
                if lazy.end == "match":
                    self._end(att, lazy, now)
                    return True
                att.soft = lazy.ident
                att.last_match = now
                return False
        return False

    # ------------------------------------------------------------ silence & quiet rules ------

    def _silence_check_at(self) -> float | None:
        att = self._null_att
        if (
            not self.active
            or att is None
            or att.kind != "null"
            or att.done
            or att.connected_at is None
            or att.buf
            or self._evidence is None
        ):
            return None
        return att.connected_at + self._evidence + self.grace

    def _silence_rule(self, now: float) -> bool:
        when = self._silence_check_at()
        return when is not None and now + TIMER_SLACK >= when

    def _quiet_attempt(self, k: int) -> Attempt | None:
        """The running attempt of step k, if the quiet-step rule may judge it: a speculative
        service that answered some probe, and step k's own connection still without a byte."""
        if not self.active or self._evidence_max is None:
            return None
        if self.w.order[k].is_null or (self.w.at_cheat_step() and not self._silent_null):
            return None
        for att in self._attempts.values():
            if att.kind == "fresh" and att.step == k and not att.done:
                if att.sent_at is None or att.buf:
                    return None
                return att
        return None

    def _quiet_check_at(self, att: Attempt) -> float:
        assert att.sent_at is not None and self._evidence_max is not None
        # twice the slowest answer: over a jittery path this probe's own answer may take
        # longer than any seen so far (measured: 150 +- 100 ms per direction)
        return att.sent_at + 2 * self._evidence_max + self.grace

    # ------------------------------------------------------------ launching ------------------

    def _blocked_on_unmatched_data(self) -> bool:
        """The walk waits at NULL or the cheat step, which holds bytes no line hard-matched."""
        att = self._null_att
        return att is not None and not att.done and bool(att.buf) and att.kind in ("null", "cheat")

    def _spec_start_at(self) -> float | None:
        """When speculation may begin: a short while after NULL connects (TCP)."""
        if self.proto != "tcp" or self.w.cursor > 0:
            return None
        null = self._null_att
        if null is None or null.connected_at is None:
            return float("inf")
        return null.connected_at + self.spec_delay

    def _window(self, now: float) -> int:
        """Speculative attempts allowed ahead of the walk now (see the module docstring)."""
        full = self.opts.probe_parallelism
        if self._spec_t0 is None:
            return min(full, SPEC_FIRST_WINDOW + self._ramp)
        grow_at = self._spec_t0 + self.spec_delay
        if now + TIMER_SLACK < grow_at:
            self._spec_wake = grow_at
            return min(full, SPEC_FIRST_WINDOW + self._ramp)
        if self._evidence is not None:
            return min(full, SPEC_ANSWERING_WINDOW + self._ramp)
        return full

    def _speculate(self, now: float) -> None:
        self._spec_wake = None
        start = self._spec_start_at()
        if start is not None and now + TIMER_SLACK < start:
            if start != float("inf"):
                self._spec_wake = start
            return
        cursor = self.w.cursor
        ahead = sum(1 for k in self._started if k >= cursor)
        limit = self._window(now)
        if self._spec_t0 is None:
            self._spec_t0 = now
        order = self.w.order
        # NULL's (or the cheat step's) running softmatch will filter the walk once that step
        # ends without a hard match: steps it excludes are not worth a connection now
        pending = self._null_att.soft if self._null_att is not None else None
        for k in range(cursor, len(order)):
            if ahead >= limit:
                return
            probe = order[k]
            if probe.is_null or k in self._started or not self.w.allowed(probe, pending):
                continue
            if not self._may_launch(k, now):
                if k in self._discarded and k != cursor and self._rerun is None:
                    continue  # its re-run waits for a quiet moment; later steps may go now
                if self._silent_capped:
                    continue  # later long-wait probes are not held back (Workers)
                return
            if self.budget is not None and not self.budget.try_acquire(self.key):
                return
            self._started.add(k)
            att = self._connect(k, probe, "fresh", now)
            att.budgeted = True
            ahead += 1
