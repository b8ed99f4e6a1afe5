"""One scan spread over a Dask distributed cluster (`--cluster`, issue 14).

    servprobe --cluster tcp://sched:8786 -p- 10.0.0.0/16   # an existing `dask scheduler`
    servprobe --cluster local:4 -p- 10.0.0.0/16            # 4 local worker processes

This package owns the cluster URL rules (here), the sharding of the target × port space
(shards.py), the task a worker runs on one shard (worker.py) and the client loop that hands
shards out and streams their results to the reporters and the store (client.py). Dask does
the scheduling, the transport and the rescheduling of work lost with a dead worker; nothing
here coordinates machines by itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEMES = ("tcp", "tls")


class ClusterError(RuntimeError):
    """The cluster cannot be used (not installed, unreachable, no workers)."""


class ClusterUrlError(ValueError):
    """A --cluster value that is not tcp://HOST:PORT, tls://HOST:PORT or local:N."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where the scan runs: an existing scheduler (`address`) or `local` worker processes."""

    address: str | None = None  # tcp://host:port or tls://host:port
    local: int = 0  # local:N → N worker processes on this machine

    def __str__(self) -> str:
        return self.address or f"local:{self.local}"


def parse_cluster_url(text: str) -> ClusterSpec:
    """`tcp://HOST:PORT`, `tls://HOST:PORT` or `local:N`; anything else raises ClusterUrlError.

    Only TCP and TLS are accepted: Dask's other transports (inproc, ucx, ws) either cannot
    leave the process or are not what a user scanning across machines means to open.
    """
    t = (text or "").strip()
    m = re.fullmatch(r"local:(\d{1,4})", t)
    if m:
        n = int(m.group(1))
        if not 1 <= n <= 1024:
            raise ClusterUrlError(f"local:N needs 1 <= N <= 1024: {text!r}")
        return ClusterSpec(local=n)
    m = re.fullmatch(r"([a-z0-9+.-]+)://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?", t)
    if not m:
        raise ClusterUrlError(
            f"bad cluster address {text!r} (use tcp://HOST:PORT, tls://HOST:PORT or local:N)"
        )
    scheme, host, port = m.groups()
    if scheme not in SCHEMES:
        raise ClusterUrlError(
            f"cluster address {text!r}: only tcp:// and tls:// schedulers are accepted"
        )
    if port is not None and not 1 <= int(port) <= 65535:
        raise ClusterUrlError(f"cluster address {text!r}: port out of range")
    return ClusterSpec(address=f"{scheme}://{host}:{port or 8786}")


def take_resume_override(argv: list[str]) -> tuple[list[str], str | None]:
    """`--resume FILE --cluster X`: take X out (the resumed scan's own argv is in FILE).

    X replaces the stored run's --cluster: resume on another cluster, `local:N`, or `none`
    to finish locally. Without --resume, argv is returned as is (--cluster is a scan flag).
    """
    from servprobe.store.cli_hooks import _take_option

    if not any(a == "--resume" or a.startswith("--resume=") for a in argv):
        return argv, None
    rest, values = _take_option(list(argv), "--cluster", value=True)
    if not values:
        return argv, None
    return rest, values[-1] or ""


def with_cluster(argv: list[str], value: str) -> list[str]:
    """argv with its --cluster replaced by `value` (`none`: removed)."""
    from servprobe.store.cli_hooks import _take_option

    rest, _ = _take_option(list(argv), "--cluster", value=True)
    return rest if value == "none" else [*rest, "--cluster", value]
