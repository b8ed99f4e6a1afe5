"""The RPC grinder as a sans-IO state machine: which NULL calls to send, and what the replies mean.

Theory of operation
-------------------
A port that speaks SunRPC answers a call for a program it does not serve with PROG_UNAVAIL.
To learn which program a port serves without asking a portmapper, we call procedure 0 (NULL,
which every program has) of every program in the table until one is not refused.

Each call asks for an absurd version (a random number ≥ 0x10000000). A server that hosts the
program then answers PROG_MISMATCH with the lowest and highest version it supports, so one
round trip gives both the identity and the version range ("low-high", as nmap prints it).
A server that ignores versions answers SUCCESS instead: the program is known, its versions
are not. PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR also mean the call reached the program.

Calls go out in parallel, at most `window` outstanding. The first call is a *canary*: a
random program number from the user-defined range 0x20000000–0x3fffffff, which nothing
registered should serve. If the canary is accepted, the server accepts any program number
and grinding cannot tell what it is: the outcome is PROMISCUOUS and no identity is claimed
(reporting the first table entry that "answered" would be a lie; see docs in grinder.py).

Once a program is found, no new calls go out; the machine only waits for the canary and
for the outstanding calls that come *earlier* in the table, then reports the earliest hit.
So the answer does not depend on reply order, and a port serving two programs (nfs and
nfs_acl on 2049) reports the same one every time.

Transports: on a stream (TCP) nothing is retransmitted; a connection lost with calls in
flight puts them back in the queue (the driver reconnects, a bounded number of times); a
stream that stays silent for `reply_timeout` ends the grind. On datagrams (UDP) each call is
retransmitted with the same xid after an RTO (estimated from measured round trips, doubled
per try) up to `max_tries`; a reply to an old try is accepted and duplicates are ignored.

Quick give-ups: a reply that does not decode as an RPC REPLY, or carries an xid we never
used, ends the grind as NOT_RPC at once (on UDP after two such datagrams). If no call ever
gets a reply, the grind ends NO_RESPONSE as soon as the first calls have used all their tries
(UDP) or after reply_timeout (TCP) instead of pushing the whole table into silence. MSG_DENIED
/ AUTH_ERROR makes the machine switch to AUTH_SYS credentials once and start over; a second
denial, or RPC_MISMATCH, ends it as DENIED.

The driver's loop: `for msg in m.poll(now): send(msg)`; wait for a reply or until
`m.next_deadline()`; `m.receive(msg, now)`; repeat until `m.done`; then read `m.result`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .protocol import (
    AUTH_NONE,
    AUTH_SYS,
    AcceptStat,
    RejectStat,
    Reply,
    RpcError,
    auth_sys_body,
    decode_reply,
    encode_call,
)

CANARY_RANGE = (0x20000000, 0x3FFFFFFF)  # "defined by user" per RFC 5531 section 8.3
ABSURD_VERSION_RANGE = (0x10000000, 0x7FFFFFFE)  # stays positive if a server compares signed

# Replies that prove the call reached the program (versions unknown unless PROG_MISMATCH).
_REACHED = {
    AcceptStat.SUCCESS,
    AcceptStat.PROG_MISMATCH,
    AcceptStat.PROC_UNAVAIL,
    AcceptStat.GARBAGE_ARGS,
    AcceptStat.SYSTEM_ERR,
}


class Outcome(enum.Enum):
    FOUND = "found"
    PROMISCUOUS = "promiscuous"  # accepts any program number: identity unknowable by grinding
    EXHAUSTED = "exhausted"  # RPC, but no table program is served here
    NOT_RPC = "not-rpc"  # malformed or foreign replies
    NO_RESPONSE = "no-response"
    DENIED = "denied"  # MSG_DENIED that AUTH_SYS did not fix, or RPC version mismatch
    CLOSED = "closed"  # stream closed on us too often


@dataclass(slots=True)
class GrindResult:
    outcome: Outcome
    program: int | None = None
    lowver: int | None = None  # None: the server does not say (it ignores versions)
    highver: int | None = None
    accept: AcceptStat | None = None  # how the found program answered
    also: list[int] = field(default_factory=list)  # other programs seen answering here
    calls: int = 0  # datagrams / messages sent, retransmits included
    replies: int = 0
    detail: str = ""


@dataclass(slots=True)
class _Pending:
    index: int  # position in the table; -1 for the canary
    prog: int
    tries: int
    sent_at: float
    first_sent: float


class Grinder:
    """Sans-IO grinder for one port. See the module docstring for the rules."""

    def __init__(
        self,
        programs: Sequence[int],
        *,
        stream: bool,
        window: int = 32,
        max_tries: int = 4,
        rto: float = 0.3,
        min_rto: float = 0.1,
        max_rto: float = 2.0,
        reply_timeout: float = 3.0,
        max_reconnects: int = 3,
        canary: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self.rng = rng or random.Random()
        self.programs = list(programs)
        self.stream = stream
        self.window = max(1, window)
        self.max_tries = 1 if stream else max(1, max_tries)
        self.rto = rto
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.reply_timeout = reply_timeout
        self.max_reconnects = max_reconnects
        self.version = self.rng.randint(*ABSURD_VERSION_RANGE)
        self.canary_prog = self.rng.randint(*CANARY_RANGE) if canary else None
        self._xid = self.rng.getrandbits(32)
        self._queue: list[tuple[int, int]] = []  # (index, prog) to (re)send, in order
        if self.canary_prog is not None:
            self._queue.append((-1, self.canary_prog))
        self._next = 0  # next table index not yet queued
        self._pending: dict[int, _Pending] = {}
        self._used_xids: set[int] = set()
        self._canary_done = self.canary_prog is None
        self._hits: dict[int, tuple[int, Reply]] = {}  # index -> (prog, reply)
        self._cred = AUTH_NONE
        self._srtt: float | None = None
        self._bad = 0
        self._bad_limit = 1 if stream else 2
        self._reconnects = 0
        self._last_activity: float | None = None
        self.calls = 0
        self.replies = 0
        self.done = False
        self.result: GrindResult | None = None

    # -- helpers -------------------------------------------------------------------------
    def _finish(self, outcome: Outcome, detail: str = "") -> None:
        if self.done:
            return
        res = GrindResult(outcome, calls=self.calls, replies=self.replies, detail=detail)
        if outcome is Outcome.FOUND and self._hits:
            best = min(self._hits)
            prog, reply = self._hits[best]
            res.program = prog
            res.accept = reply.accept
            if reply.accept == AcceptStat.PROG_MISMATCH and reply.low is not None:
                lo, hi = sorted((reply.low, reply.high or reply.low))
                res.lowver, res.highver = lo, hi
            res.also = [p for i, (p, _r) in sorted(self._hits.items()) if i != best]
        self.result = res
        self.done = True
        self._pending.clear()
        self._queue.clear()

    def _limit(self) -> int:
        """No call for a table index above the earliest hit is worth sending."""
        return min(self._hits) if self._hits else len(self.programs)

    def _base_rto(self) -> float:
        if self._srtt is None:
            return self.rto
        return max(self.min_rto, min(self.max_rto, 4 * self._srtt))

    def _current_rto(self, tries: int, base: float | None = None) -> float:
        return (self._base_rto() if base is None else base) * (2 ** (tries - 1))

    def _encode(self, xid: int, prog: int) -> bytes:
        body = auth_sys_body(stamp=xid & 0xFFFF) if self._cred == AUTH_SYS else b""
        return encode_call(xid, prog, self.version, 0, cred_flavor=self._cred, cred_body=body)

    def _check_settled(self, now: float) -> None:
        if self.done:
            return
        if self._hits:
            best = min(self._hits)
            if (
                self._canary_done
                and not any(p.index < best and p.index >= 0 for p in self._pending.values())
                and not any(i < best for i, _ in self._queue if i >= 0)
            ):
                self._finish(Outcome.FOUND)
            return
        if self._next >= len(self.programs) and not self._pending and not self._queue:
            if self.replies == 0:
                self._finish(Outcome.NO_RESPONSE, "no reply to any call")
            else:
                self._finish(Outcome.EXHAUSTED, f"{len(self.programs)} programs refused")

    # -- driver interface -----------------------------------------------------------------
    def poll(self, now: float) -> list[bytes]:
        """Calls to send now: new ones up to the window, and due retransmits (UDP)."""
        if self.done:
            return []
        if self._last_activity is None:
            self._last_activity = now
        out: list[bytes] = []
        if not self.stream:
            base = self._base_rto()  # once per poll: the window may hold hundreds of calls
            for xid, p in list(self._pending.items()):
                if now >= p.sent_at + self._current_rto(p.tries, base):
                    if p.tries >= self.max_tries:
                        del self._pending[xid]
                        if p.index == -1:
                            self._canary_done = True
                        if self.replies == 0:
                            self._finish(Outcome.NO_RESPONSE, f"no reply after {p.tries} tries")
                            return []
                        continue
                    p.tries += 1
                    p.sent_at = now
                    self.calls += 1
                    out.append(self._encode(xid, p.prog))
        else:
            oldest = min((p.sent_at for p in self._pending.values()), default=None)
            if oldest is not None and now - max(oldest, self._last_activity) >= self.reply_timeout:
                if self._hits:
                    self._canary_done = True
                    self._pending.clear()
                    self._finish(Outcome.FOUND, "stream went silent")
                else:
                    self._finish(Outcome.NO_RESPONSE, f"no reply within {self.reply_timeout:g}s")
                return []
        self._check_settled(now)
        if self.done:
            return out
        limit = self._limit()
        while len(self._pending) < self.window:
            if self._queue:
                index, prog = self._queue.pop(0)
                if index >= limit:
                    continue
            elif self._next < limit:
                index, prog = self._next, self.programs[self._next]
                self._next += 1
            else:
                break
            xid = self._xid
            self._xid = (self._xid + 1) & 0xFFFFFFFF
            self._used_xids.add(xid)
            self._pending[xid] = _Pending(index, prog, 1, now, now)
            self.calls += 1
            out.append(self._encode(xid, prog))
        self._check_settled(now)
        return out

    def next_deadline(self) -> float | None:
        """When poll() must run again even if nothing arrives."""
        if self.done or not self._pending:
            return None
        if self.stream:
            oldest = min(p.sent_at for p in self._pending.values())
            return max(oldest, self._last_activity or oldest) + self.reply_timeout
        base = self._base_rto()
        return min(p.sent_at + self._current_rto(p.tries, base) for p in self._pending.values())

    def receive(self, msg: bytes, now: float) -> None:
        """One whole reply message (a datagram, or a reassembled TCP record)."""
        if self.done:
            return
        self._last_activity = now
        try:
            reply = decode_reply(msg)
        except RpcError as exc:
            self._bad += 1
            if self._bad >= self._bad_limit:
                self._finish_bad(f"malformed reply: {exc}")
            return
        pending = self._pending.pop(reply.xid, None)
        if pending is None:
            if reply.xid in self._used_xids:
                return  # a late answer to a retransmitted or abandoned call
            self._bad += 1
            if self._bad >= self._bad_limit:
                self._finish_bad(f"reply with unknown xid {reply.xid:#010x}")
            return
        self.replies += 1
        if pending.tries == 1:
            rtt = max(0.0, now - pending.sent_at)
            self._srtt = rtt if self._srtt is None else 0.875 * self._srtt + 0.125 * rtt
        if reply.reject is not None:
            self._denied(reply, pending)
            return
        reached = reply.accept in _REACHED
        if pending.index == -1:
            self._canary_done = True
            if reached:
                self._finish(
                    Outcome.PROMISCUOUS,
                    f"accepts unassigned program {pending.prog} ({reply.accept.name})",
                )
                return
        elif reached:
            self._hits[pending.index] = (pending.prog, reply)
        self._check_settled(now)

    def malformed(self, detail: str) -> None:
        """The transport saw bytes that cannot be RPC (e.g. a bad record mark)."""
        self._finish_bad(detail)

    def unreachable(self, detail: str) -> None:
        """The port refused us (ICMP port unreachable, connection refused)."""
        if self._hits and self._canary_done:
            self._finish(Outcome.FOUND, detail)
        else:
            self._finish(Outcome.CLOSED, detail)

    def _finish_bad(self, detail: str) -> None:
        if self._hits and self._canary_done:
            self._finish(Outcome.FOUND, detail)
        else:
            self._finish(Outcome.NOT_RPC, detail)

    def _denied(self, reply: Reply, pending: _Pending) -> None:
        if reply.reject == RejectStat.AUTH_ERROR and self._cred == AUTH_NONE:
            # Some servers refuse AUTH_NONE outright; ask again with AUTH_SYS, from the start.
            self._cred = AUTH_SYS
            self._queue.append((pending.index, pending.prog))
            self._requeue_all()
            return
        what = (
            f"RPC version mismatch ({reply.low}-{reply.high})"
            if reply.reject == RejectStat.RPC_MISMATCH
            else f"auth error {reply.auth_stat}"
        )
        self._finish(Outcome.DENIED, what)

    def _requeue_all(self) -> None:
        items = sorted((p.index, p.prog) for p in self._pending.values())
        self._pending.clear()
        self._queue = items + [q for q in self._queue if q not in items]
        self._queue.sort()

    def connection_lost(self, now: float) -> bool:
        """The stream closed. Returns True if the driver should reconnect and go on."""
        if self.done:
            return False
        self._reconnects += 1
        if self._reconnects > self.max_reconnects:
            if self._hits:
                self._canary_done = True
                self._pending.clear()
                self._finish(Outcome.FOUND, "connection closed")
            else:
                self._finish(Outcome.CLOSED, f"connection closed {self._reconnects} times")
            return False
        self._requeue_all()
        self._last_activity = now
        return True
