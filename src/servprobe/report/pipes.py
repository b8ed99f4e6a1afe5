"""A closed stdout/stderr ends the scan at once and quietly, the way nmap dies of SIGPIPE.

`servprobe -oJ - … | head -2`: once `head` has its lines it closes the pipe. nmap then dies
of SIGPIPE at its next write; Python ignores SIGPIPE, and a scan may not write to stdout for
minutes (normal output comes per host), so servprobe watches instead:

  - a standard stream that is a pipe is watched on the event loop: the kernel reports the
    write end of a pipe whose reader is gone as an error condition (EPOLLERR), which the
    loop delivers at once as "readable";
  - a write that fails with BrokenPipeError (reporters, --version-trace lines) counts too.

Either way the stream's descriptor is pointed at /dev/null right away (so no later write,
log line or interpreter shutdown flush can raise or print a traceback), and `on_broken`
stops the scan: the file outputs (-oX, -oJ FILE, the store) still get every finished result
and are closed well-formed. At the end `exit_like_sigpipe()` ends the process by SIGPIPE,
as nmap's end looks to a shell (status 141), without a word on the broken stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import stat
import sys
from collections.abc import Callable

STREAMS = (1, 2)  # stdout, stderr


def _is_pipe(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _reader_gone(fd: int) -> bool:
    """The pipe behind `fd` has no reader left (poll reports an error on its write end)."""
    try:
        p = select.poll()
        p.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))
    except (OSError, ValueError):
        return False


class PipeWatch:
    """Watches stdout/stderr pipes; `broken` lists the descriptors found closed."""

    def __init__(self, on_broken: Callable[[], None] | None = None) -> None:
        self.on_broken = on_broken
        self.broken: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: list[int] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        seen: set[tuple[int, int]] = set()
        for fd in STREAMS:
            if not _is_pipe(fd):
                continue
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in seen:  # 2>&1: one pipe, one watch
                continue
            seen.add((st.st_dev, st.st_ino))
            try:
                loop.add_reader(fd, self._check, fd)
            except (OSError, ValueError, NotImplementedError, RuntimeError):
                continue
            self._watched.append(fd)

    def stop(self) -> None:
        if self._loop is not None:
            for fd in self._watched:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
        self._watched = []

    def _check(self, fd: int) -> None:
        # a pipe's write end is never readable: this is the error condition of a gone reader
        self.closed(fd)

    def closed(self, fd: int | None = None) -> None:
        """A stream is gone (seen by the watch, or by a write that failed; None: find which):
        silence every standard stream sharing its pipe and stop the scan (once)."""
        fds = [fd] if fd is not None else [f for f in STREAMS if _is_pipe(f) and _reader_gone(f)]
        first = not self.broken
        for f in fds:
            for other in self._same_pipe(f):
                if other not in self.broken:
                    self.broken.append(other)
                    self._silence(other)
        if first and self.broken and self.on_broken is not None:
            self.on_broken()

    def _same_pipe(self, fd: int) -> list[int]:
        try:
            st = os.fstat(fd)
        except OSError:
            return [fd]
        out = []
        for f in STREAMS:
            with contextlib.suppress(OSError):
                o = os.fstat(f)
                if (o.st_dev, o.st_ino) == (st.st_dev, st.st_ino):
                    out.append(f)
        return out or [fd]

    def _silence(self, fd: int) -> None:
        if self._loop is not None and fd in self._watched:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(fd)
            self._watched.remove(fd)
        stream = sys.stdout if fd == 1 else sys.stderr
        with contextlib.suppress(Exception):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        # whatever Python still buffers for the stream now goes to /dev/null
        with contextlib.suppress(Exception):
            stream.flush()


def exit_like_sigpipe() -> None:
    """End the process by SIGPIPE (status 141 to a shell), as nmap ends on a closed pipe."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
