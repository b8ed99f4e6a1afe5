"""Connection budgets for speculation: per host, chained to a global one.

Pure bookkeeping, no callbacks: a machine refused a connection is queued under its key (an
integer handed out by `new_key()`, never reused, unlike `id()`); a release returns the key of
the oldest waiter, which the releasing machine turns into a `Wake(key)` action for its driver.
A key leaves the queue when its machine gets a connection or finishes (`forget(key)`), so no
finished machine stays queued and a release always names a machine that still exists.

A budget can also narrow itself when its host limits connections per client (issue 17):
`refused(key, round_)` reports that a speculative attempt of machine `key` looked refused by
policy (engine.speculate's refusal rule), `healthy()` that one ended normally. Once refusals
come from two different services of the host, the cap is taken to be the host's rather than
one service's, and the budget gets an AIMD window like TCP's congestion window: halved once
per round of connections (attempts acquired after the last cut), never below one, and grown
by 1/window per healthy attempt back towards its fixed limit. A single capped service only
narrows its own window (engine.speculate), so it does not slow the host's other services.
"""

from __future__ import annotations

import itertools

_keys = itertools.count(1)

# refusals from this many different services make the cap the host's (module docstring)
HOST_REFUSERS = 2


def new_key() -> int:
    return next(_keys)


class ConnBudget:
    """Counts speculative connections; shared by the machines of one host, chained to a parent."""

    __slots__ = (
        "acquired",
        "cut_round",
        "limit",
        "parent",
        "refusers",
        "used",
        "waiting",
        "window",
    )

    def __init__(self, limit: int | None, parent: ConnBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        self.waiting: dict[int, None] = {}  # keys of refused machines, oldest first
        self.acquired = 0  # connections ever given out: numbers the rounds of the AIMD window
        self.window: float | None = None  # AIMD window, once the host refused (docstring)
        self.cut_round = 0  # `acquired` at the last cut: one cut per round
        self.refusers: set[int] = set()  # keys of machines that saw refusals

    def cap(self) -> int | None:
        """How many connections may be in use now: the fixed limit, narrowed by the window."""
        if self.window is None:
            return self.limit
        w = max(1, int(self.window))
        return w if self.limit is None else min(self.limit, w)

    def try_acquire(self, key: int | None = None) -> bool:
        """Take one connection; when refused, queue `key` (if given) at the level that refused."""
        cap = self.cap()
        if cap is not None and self.used >= cap:
            if key is not None:
                self.waiting.setdefault(key, None)
            return False
        if self.parent is not None and not self.parent.try_acquire(key):
            return False
        self.used += 1
        self.acquired += 1
        if key is not None:
            self.waiting.pop(key, None)  # served here (the parent did the same)
        return True

    def release(self, exclude: int | None = None) -> int | None:
        """Give one connection back; the key of a machine to wake, if one waits for it.

        The woken key stays queued (moved to the back) until that machine gets a connection
        or finishes: a caller that ignores the answer (servprobe.post) loses no wake-up, and
        a machine woken for a slot it cannot use (another level is full) keeps its turn."""
        self.used -= 1
        woken = self.parent.release(exclude) if self.parent is not None else None
        if woken is None:
            for key in self.waiting:
                if key != exclude:
                    woken = key
                    break
            if woken is not None:
                del self.waiting[woken]
                self.waiting[woken] = None
        return woken

    def forget(self, key: int) -> None:
        """A machine finished: drop its queued wake-ups at every level."""
        self.waiting.pop(key, None)
        if self.parent is not None:
            self.parent.forget(key)

    def refused(self, key: int, round_: int) -> None:
        """Machine `key`'s attempt, acquired when `acquired` was `round_`, looked refused."""
        self.refusers.add(key)
        if len(self.refusers) < HOST_REFUSERS or round_ <= self.cut_round:
            return  # one service's cap, or a round already cut
        base = self.window if self.window is not None else float(max(1, self.used))
        self.window = max(1.0, base / 2)
        self.cut_round = self.acquired

    def healthy(self) -> None:
        """A speculative attempt ended normally: additive increase of the window."""
        if self.window is not None:
            self.window += 1.0 / self.window
            if self.limit is not None and self.window >= self.limit:
                self.window = None  # back to the fixed limit
