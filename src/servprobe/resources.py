"""What the machine can give a scan: file descriptors (RLIMIT_NOFILE), checked before scanning.

Every service in progress holds up to two sockets, the port scanner its own, and the
process needs a few more (outputs, the store, the probe database, DNS). The engine raises
the soft limit to the hard one and sizes its parallelism from what it gets; this module
says so to the user instead of failing later with EMFILE, or running slowly in silence:

  - below MIN_FDS descriptors no scan can run: a clear error (exit 1), with the fix;
  - when the limit caps the parallelism asked for (--max-parallelism or the timing
    template's default), a one-line note says by how much and how to raise it.
"""

from __future__ import annotations

import contextlib
import resource

from servprobe.timing import timing

MIN_FDS = 24  # measured: a one-host scan with -oA, -oJ and the store needs about 20
RESERVE = 128  # the engine keeps this many descriptors for everything but probe sockets


class ResourceError(Exception):
    """The machine cannot run a scan at all; the message says what to change."""


def nofile_limit() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE after raising the soft limit to the hard one if allowed.

    The one RLIMIT_NOFILE raiser: the port scanner, the service driver and the preflight
    all call it (raising is idempotent)."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 1024, 1024
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return soft, hard


def services_possible(soft: int) -> int:
    """How many services the engine can probe at once with `soft` descriptors."""
    return max(1, (max(16, soft - RESERVE)) // 2)


def _option(argv: list[str], name: str) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


def _timing(argv: list[str]) -> int:
    value = 3
    for i, a in enumerate(argv):
        text = None
        if a == "-T" and i + 1 < len(argv):
            text = argv[i + 1]
        elif a.startswith("-T") and len(a) > 2:
            text = a[2:]
        if text is not None:
            words = {"paranoid": 0, "sneaky": 1, "polite": 2, "normal": 3, "aggressive": 4,
                     "insane": 5}
            if text.isdigit() and int(text) <= 5:
                value = int(text)
            elif text.lower() in words:
                value = words[text.lower()]
    return value


def preflight(argv: list[str]) -> list[str]:
    """Check descriptors for the scan `argv` asks for; return notes for stderr.

    Raises ResourceError when no scan can run.
    """
    soft, hard = nofile_limit()
    if soft < MIN_FDS:
        raise ResourceError(
            f"only {soft} file descriptors are allowed (ulimit -n; hard limit {hard}); a scan "
            f"needs at least {MIN_FDS}. Raise the limit, e.g. `ulimit -n 4096`, and retry."
        )
    asked_text = _option(argv, "--max-parallelism")
    asked = int(asked_text) if asked_text and asked_text.isdigit() else None
    wanted = asked or timing(_timing(argv)).services
    possible = services_possible(soft)
    if wanted > possible and (asked is not None or possible < 64):
        what = f"--max-parallelism {asked}" if asked is not None else "the timing template"
        return [
            f"note: {what} asks for {wanted} services at once, but the file descriptor "
            f"limit ({soft}, ulimit -n) allows {possible}; raise it (ulimit -n "
            f"{min(2 * wanted + RESERVE, max(hard, 2 * wanted + RESERVE))}) for full speed"
        ]
    return []
