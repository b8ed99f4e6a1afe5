"""Connection budgets for speculation: per host, chained to a global one.

Pure bookkeeping, no callbacks: a machine refused a connection is queued under its key (an
integer handed out by `new_key()`, never reused, unlike `id()`); a release returns the key of
the oldest waiter, which the releasing machine turns into a `Wake(key)` action for its driver.
A machine that finishes calls `forget(key)`, so no finished machine stays queued and a
release always wakes a machine that still exists.
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
        return True

    def release(self) -> int | None:
        """Give one connection back; the key of a machine to wake, if one waits for it."""
        self.used -= 1
        woken = self.parent.release() if self.parent is not None else None
        if woken is None and self.waiting:
            woken = next(iter(self.waiting))
            del self.waiting[woken]
        return woken

    def forget(self, key: int) -> None:
        """A machine finished: drop its queued wake-ups at every level."""
        self.waiting.pop(key, None)
        if self.parent is not None:
            self.parent.forget(key)
