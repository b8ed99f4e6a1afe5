"""Live progress on a terminal (stderr, via rich): hosts, ports, services done / in flight, ETA.

Shown only when stderr is a terminal (never in pipes, files or CI logs). When stdout is the
same terminal, rich routes stdout through itself so host reports print above the live lines
instead of tearing them.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Protocol


class StatsLike(Protocol):
    hosts_total: int
    hosts_done: int
    hosts_up: int
    ports_total: int
    ports_done: int
    services_total: int
    services_done: int
    started: float


def wanted(disabled: bool = False) -> bool:
    return not disabled and sys.stderr.isatty()


# below this, an estimate made while services are in flight is not worth showing: a service
# still waiting on its probes ends when its waits expire (up to its probes' totalwaitms), which
# no fraction of work done predicts — "ETA 00:00:00" for 15 s was the result
HONEST_FLOOR = 2.0


def eta_seconds(stats: StatsLike, now: float | None = None) -> float | None:
    """Remaining time from the port-scan and service-scan fractions done so far; None when
    unknown (too early, or only services in flight whose waits decide the end)."""
    now = time.monotonic() if now is None else now
    elapsed = now - stats.started
    parts = []
    if stats.ports_total:
        parts.append(min(1.0, stats.ports_done / stats.ports_total))
    if stats.services_total:
        parts.append(stats.services_done / stats.services_total)
    if not parts or elapsed < 1:
        return None
    frac = sum(parts) / len(parts)
    if frac <= 0.0:
        return None
    eta = max(0.0, elapsed / frac - elapsed)
    if eta < HONEST_FLOOR and stats.services_total > stats.services_done:
        return None
    return eta


def status_line(stats: StatsLike, now: float | None = None) -> str:
    eta = eta_seconds(stats, now)
    inflight = stats.services_total - stats.services_done
    if eta is not None:
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta))
    elif inflight and stats.ports_done >= stats.ports_total:
        eta_s = f"--:-- (waiting on {inflight} service{'s' if inflight != 1 else ''})"
    else:
        eta_s = "--:--"
    return (
        f"hosts {stats.hosts_done}/{stats.hosts_total} ({stats.hosts_up} up)  "
        f"ports {stats.ports_done}/{stats.ports_total}  "
        f"services {stats.services_done} done, {inflight} in flight  ETA {eta_s}"
    )


class ProgressDisplay:
    """A rich Live line refreshed from the runner's counters while the scan runs."""

    def __init__(self, stats: StatsLike) -> None:
        self.stats = stats
        self._task: asyncio.Task[None] | None = None
        self._live = None

    def start(self) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        console = Console(stderr=True)
        self._text = Text
        self._live = Live(
            Text(status_line(self.stats)),
            console=console,
            transient=True,
            refresh_per_second=4,
            redirect_stdout=sys.stdout.isatty(),
            redirect_stderr=False,
        )
        self._live.start(refresh=True)  # shown at once, not after the first tick
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self._live is not None:
                self._live.update(self._text(status_line(self.stats)))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._live is not None:
            self._live.stop()
            self._live = None
