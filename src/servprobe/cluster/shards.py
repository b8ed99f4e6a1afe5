"""Cutting a scan's target × port space into shards, lazily and shuffled.

A shard is a few hosts × a slice of the port list: bounded work (`work` ≈ hosts × ports,
default 8192 connect attempts), so each task lasts seconds, not hours, and a lost worker
costs one shard. The target list is read a window at a time (never materialised: a /8 costs
one window of addresses), and inside a window both the hosts and the shards are shuffled, so
consecutive shards — and the hosts of one shard — come from all over the window instead of
one subnet.

Every host of a scan gets the same slices of the port list (`Plan.chunks`): the client knows a
host is complete when `len(chunks)` shards naming it have returned.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from servprobe.scan.ports import PortSelection
from servprobe.scan.targets import HostTarget

DEFAULT_WORK = 8192
MIN_WORK = 1
WINDOW_SHARDS = 256  # shards generated (and shuffled) together
WINDOW_HOSTS = 65_536  # most addresses held by one window


@dataclass(frozen=True, slots=True)
class Shard:
    """One task's work: `hosts` × the ports of chunk `chunk` (index into Plan.chunks)."""

    id: int
    hosts: tuple[HostTarget, ...]
    ports: dict[str, list[int]]
    chunk: int
    chunks: int  # how many chunks every host is cut into

    @property
    def work(self) -> int:
        return len(self.hosts) * max(1, sum(len(v) for v in self.ports.values()))

    def describe(self) -> str:
        """Which targets, for a message: `10.0.0.1, 10.0.0.7 (+3) ports tcp:1-4096`."""
        from servprobe.scan.ports import compress

        names = ", ".join(h.address for h in self.hosts[:3])
        if len(self.hosts) > 3:
            names += f" (+{len(self.hosts) - 3})"
        ports = " ".join(f"{proto}:{compress(p)}" for proto, p in self.ports.items() if p)
        return f"{names} ports {ports or '-'}"


def port_chunks(ports: PortSelection, work: int) -> list[dict[str, list[int]]]:
    """The port list cut into slices of at most `work` ports (one empty slice for -sn/-sL)."""
    chunks: list[dict[str, list[int]]] = []
    current: dict[str, list[int]] = {}
    size = 0
    for proto, plist in ports.ports.items():
        for port in plist:
            current.setdefault(proto, []).append(port)
            size += 1
            if size >= work:
                chunks.append(current)
                current, size = {}, 0
    if current or not chunks:
        chunks.append(current)
    return chunks


@dataclass
class Plan:
    """How one scan is sharded; iterate `shards(targets)` to get them lazily."""

    chunks: list[dict[str, list[int]]]
    hosts_per_shard: int
    seed: int | None = None

    @classmethod
    def make(cls, ports: PortSelection, work: int = DEFAULT_WORK, seed: int | None = None) -> Plan:
        work = max(MIN_WORK, work)
        chunks = port_chunks(ports, work)
        per_host = max(1, max(sum(len(v) for v in c.values()) for c in chunks))
        return cls(chunks, max(1, work // per_host), seed)

    def window_hosts(self) -> int:
        per_window = WINDOW_SHARDS * self.hosts_per_shard // len(self.chunks)
        return max(self.hosts_per_shard, min(WINDOW_HOSTS, per_window))

    def windows(self, targets: Iterable[HostTarget]) -> Iterator[list[HostTarget]]:
        """The target list a window at a time (iterating resolves names: may block)."""
        it = iter(targets)
        size = self.window_hosts()
        while window := list(itertools.islice(it, size)):
            yield window

    def cut(self, window: list[HostTarget], first_id: int) -> list[Shard]:
        """One window's shards, hosts and shards shuffled."""
        rng = random.Random(None if self.seed is None else self.seed + first_id)
        hosts = list(window)
        rng.shuffle(hosts)
        shards: list[Shard] = []
        n = len(self.chunks)
        for i in range(0, len(hosts), self.hosts_per_shard):
            group = tuple(hosts[i : i + self.hosts_per_shard])
            for c, ports in enumerate(self.chunks):
                shards.append(Shard(first_id + len(shards), group, ports, c, n))
        rng.shuffle(shards)
        return shards

    def shards(self, targets: Iterable[HostTarget]) -> Iterator[Shard]:
        next_id = 0
        for window in self.windows(targets):
            batch = self.cut(window, next_id)
            next_id += len(batch)
            yield from batch
