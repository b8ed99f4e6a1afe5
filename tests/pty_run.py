"""Run a command on a real pseudo-terminal and collect what it shows: for tests of what a
person at a terminal sees (escaped banners, the live progress line)."""

from __future__ import annotations

import os
import pty
import select
import time
from collections.abc import Mapping, Sequence


def run_on_pty(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[bytes, int]:
    """Run `argv` with stdout and stderr on a new pty; return (screen bytes, exit code).

    Reading stops at end of output or after `timeout` seconds; the child is always reaped.
    """
    pid, fd = pty.fork()
    if pid == 0:  # child: the command on a real terminal
        os.execvpe(argv[0], list(argv), dict(env))
    screen = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                screen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return screen, os.waitstatus_to_exitcode(status)
