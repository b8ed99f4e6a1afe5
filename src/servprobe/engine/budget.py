"""Connection budgets for speculation: per host, chained to a global one.

Pure bookkeeping, no callbacks: a machine refused a connection is queued under its key (an
integer handed out by `new_key()`, never reused, unlike `id()`); a release returns the key of
the oldest waiter, which the releasing machine turns into a `Wake(key)` action for its driver.
A key leaves the queue when its machine gets a connection or finishes (`forget(key)`), so no
finished machine stays queued and a release always names a machine that still exists.
"""

from __future__ import annotations

import itertools

_keys = itertools.count(1)


def new_key() -> int:
    return next(_keys)


class ConnBudget:
    """Counts speculative connections; shared by the machines of one host, chained to a parent."""

    __slots__ = ("limit", "parent", "used", "waiting")

    def __init__(self, limit: int | None, parent: ConnBudget | None = None) -> None:
        self.limit = limit
        self.parent = parent
        self.used = 0
        self.waiting: dict[int, None] = {}  # keys of refused machines, oldest first

    def try_acquire(self, key: int | None = None) -> bool:
        """Take one connection; when refused, queue `key` (if given) at the level that refused."""
        if self.limit is not None and self.used >= self.limit:
            if key is not None:
                self.waiting.setdefault(key, None)
            return False
        if self.parent is not None and not self.parent.try_acquire(key):
            return False
        self.used += 1
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
