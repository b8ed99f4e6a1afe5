"""Small ONC RPC test servers for behaviour real daemons do not show (loopback only).

RpcTestServer serves NULL calls for a set of programs over UDP or TCP on 127.0.0.1, and can
misbehave on purpose:
  drop_first=N        UDP: silently drop the first N datagrams (packet loss)
  mode="promiscuous"  answer SUCCESS to every program number
  mode="garbage"      answer every call with bytes that are not RPC
  mode="wrong-xid"    answer with well-formed replies carrying xids nobody sent
  mode="rpc-v3"       MSG_DENIED / RPC_MISMATCH (speaks RPC, not version 2)
  mode="auth-sys"     MSG_DENIED / AUTH_ERROR unless the call carries AUTH_SYS credentials
  fragment_size=K     TCP: split every reply into record fragments of K bytes
  close_after=N       TCP: close the connection after N replies on it
  ignore_versions     answer SUCCESS to any version of a served program
The server counts the calls it saw (`calls`), so tests can assert a grinder gave up early.
It runs in a background thread; use it as a context manager so it always stops.

Also here: netns(), rpcbind(ns) and statd(ns), context managers that run the real Debian
daemons hermetically (a network namespace the test creates, a private /run) for the
integration tests and always stop what they started.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import daemons  # tests/ is on sys.path (conftest); its process-group start/stop
from servprobe.rpc.protocol import (
    AUTH_SYS,
    AcceptStat,
    RecordReader,
    RpcError,
    decode_call,
    encode_reply,
    record_mark,
)


def _denied(xid: int, reject: int, a: int = 0, b: int = 0) -> bytes:
    head = struct.pack(">IIII", xid, 1, 1, reject)
    return head + (struct.pack(">II", a, b) if reject == 0 else struct.pack(">I", a))


@dataclass
class RpcTestServer:
    programs: dict[int, tuple[int, int]] = field(default_factory=dict)  # prog -> (low, high)
    proto: str = "udp"
    mode: str = "normal"
    drop_first: int = 0
    fragment_size: int = 0
    close_after: int = 0
    ignore_versions: bool = False
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.calls = 0
        self.dropped = 0
        self.connections = 0
        self.programs_seen: list[int] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        kind = socket.SOCK_DGRAM if self.proto == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        if self.proto == "tcp":
            self.sock.listen(64)  # before start(): a client may connect at once

    # -- the RPC logic ---------------------------------------------------------------------
    def answer(self, msg: bytes) -> bytes | None:
        try:
            call = decode_call(msg)
        except RpcError:
            return None
        with self._lock:
            self.calls += 1
            self.programs_seen.append(call.prog)
        if self.mode == "garbage":
            return b"HTTP/1.0 400 Bad Request\r\nServer: not-rpc\r\n\r\n"
        if self.mode == "wrong-xid":
            return encode_reply(call.xid ^ 0x5A5A5A5A, AcceptStat.PROG_UNAVAIL)
        if self.mode == "rpc-v3":
            return _denied(call.xid, 0, 3, 3)
        if self.mode == "auth-sys":
            flavor = struct.unpack_from(">I", msg, 24)[0]
            if flavor != AUTH_SYS:
                return _denied(call.xid, 1, 5)  # AUTH_TOOWEAK
        if self.mode == "promiscuous":
            return encode_reply(call.xid, AcceptStat.SUCCESS)
        if call.prog not in self.programs:
            return encode_reply(call.xid, AcceptStat.PROG_UNAVAIL)
        low, high = self.programs[call.prog]
        if not self.ignore_versions and not low <= call.vers <= high:
            return encode_reply(call.xid, AcceptStat.PROG_MISMATCH, low=low, high=high)
        if call.proc != 0:
            return encode_reply(call.xid, AcceptStat.PROC_UNAVAIL)
        return encode_reply(call.xid, AcceptStat.SUCCESS)

    # -- transports ------------------------------------------------------------------------
    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            if self.dropped < self.drop_first:
                self.dropped += 1
                continue
            out = self.answer(data)
            if out is not None:
                self.sock.sendto(out, peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._conn, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _conn(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        reader = RecordReader(1 << 16)
        replies = 0
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                try:
                    records = reader.feed(data)
                except RpcError:
                    return
                for rec in records:
                    out = self.answer(rec)
                    if out is None:
                        continue
                    if self.mode == "garbage":
                        conn.sendall(out)
                    else:
                        conn.sendall(record_mark(out, self.fragment_size))
                    replies += 1
                    if self.close_after and replies >= self.close_after:
                        return
        except OSError:
            return
        finally:
            conn.close()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> RpcTestServer:
        target = self._serve_udp if self.proto == "udp" else self._serve_tcp
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()

    def __enter__(self) -> RpcTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- real daemons: rpcbind (port 111) and rpc.statd, hermetic ---------------------------
#
# rpcbind always binds port 111 and keeps its lock, socket and state under /run
# (/run/rpcbind.sock, /run/rpcbind.lock, /run/rpcbind/, fixed at build time: Debian 12's
# rpcbind 1.2.6 has no option to move them); rpc.statd refuses to start while
# /run/rpc.statd.pid is locked ("Statd service already running!"), and libtirpc registers
# through /run/rpcbind.sock. So on a host that runs its own rpcbind/statd (any machine using
# nfs-common) both would collide. Each daemon therefore runs inside a network namespace the
# test creates (its own loopback, its own port 111) and inside a private mount namespace in
# which a temporary directory of ours is bind-mounted on /run. The scan runs in the same
# network namespace: `Netns.entered()` switches the calling thread (and so every socket and
# subprocess it creates) into it.

RPCBIND = shutil.which("rpcbind") or "/usr/sbin/rpcbind"
STATD = shutil.which("rpc.statd") or "/usr/sbin/rpc.statd"
RPCINFO = shutil.which("rpcinfo") or "/usr/sbin/rpcinfo"
IP = shutil.which("ip") or "/usr/sbin/ip"
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
HOST = "127.0.0.1"
CLONE_NEWNET = 0x40000000


def _require(path: str, package: str = "rpcbind and nfs-common") -> None:
    if not Path(path).exists():
        pytest.fail(f"{path} missing: install {package} (Makefile APT_PACKAGES)")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


@dataclass
class Netns:
    """A network namespace made by `netns()`, with its private /run directory."""

    name: str
    run_dir: Path

    def argv(self, cmd: list[str]) -> list[str]:
        """`cmd` run inside this namespace with our directory mounted on /run (every exec
        keeps the PID, so the Popen's pid is the daemon's)."""
        return [IP, "netns", "exec", self.name, UNSHARE, "--mount", "--propagation", "private",
                "sh", "-c", 'mount --bind "$0" /run && exec "$@"', str(self.run_dir), *cmd]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the calling thread inside this namespace (sockets, threads and subprocesses
        it creates meanwhile belong to it), and switch back on exit."""
        with open(f"/run/netns/{self.name}") as target, open("/proc/thread-self/ns/net") as home:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())


@contextlib.contextmanager
def netns() -> Iterator[Netns]:
    """A fresh network namespace with loopback up, deleted on exit."""
    _require(IP, "iproute2")
    _require(UNSHARE, "util-linux")
    name = f"servprobe-{os.getpid()}-{secrets.token_hex(3)}"
    made = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"ip netns add {name} failed (these tests need root): {made.stderr.strip()}")
    try:
        subprocess.run([IP, "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        with tempfile.TemporaryDirectory(prefix="servprobe-rpc-run-") as run_dir:
            yield Netns(name, Path(run_dir))
    finally:
        subprocess.run([IP, "netns", "delete", name], capture_output=True)


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def _rpcinfo(ns: Netns) -> str:
    out = subprocess.run(ns.argv([RPCINFO, "-p", HOST]), capture_output=True, text=True,
                         timeout=10)
    return out.stdout


def _wait(proc: subprocess.Popen[bytes], ready: Callable[[], bool], what: str, log: Path,
          timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}: {daemons.read_log(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout:.0f} s: {daemons.read_log(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def rpcbind(ns: Netns) -> Iterator[subprocess.Popen[bytes]]:
    """Debian's rpcbind on port 111 of `ns`, stopped (by its PID) on exit."""
    _require(RPCBIND)
    log = ns.run_dir / "rpcbind.log"
    with daemons._running(ns.argv([RPCBIND, "-f", "-w"]), log) as proc:
        def ready() -> bool:
            with ns.entered():
                return _tcp_open(111)

        _wait(proc, ready, "rpcbind", log, 10)
        yield proc


@dataclass
class Statd:
    proc: subprocess.Popen[bytes]
    port: int


@contextlib.contextmanager
def statd(ns: Netns, registered: bool = True) -> Iterator[Statd]:
    """rpc.statd (no kernel NFS, --no-notify) on a free port of `ns`, its state in a temp dir."""
    _require(STATD)
    with ns.entered():  # free on TCP and UDP (statd serves the same number on both)
        port = daemons.free_port(udp_too=True)
    with tempfile.TemporaryDirectory(prefix="servprobe-statd-") as state:
        Path(state, "sm").mkdir()
        Path(state, "sm.bak").mkdir()
        log = Path(state, "statd.log")
        argv = [STATD, "--no-notify", "-F", "-d", "-p", str(port), "-P", state]
        with daemons._running(ns.argv(argv), log) as proc:
            def ready() -> bool:
                with ns.entered():
                    if not _tcp_open(port):
                        return False
                return not registered or any(
                    line.split()[:1] == ["100024"] and line.split()[3] == str(port)
                    for line in _rpcinfo(ns).splitlines()
                    if len(line.split()) >= 4
                )

            _wait(proc, ready, "rpc.statd", log, 15)
            yield Statd(proc, port)


# -- stand-alone mode (the benchmark runs servers in their own process, away from its GIL) --


def main(argv: list[str] | None = None) -> None:
    """`python tests/rpcservers.py --proto udp --program 100024:1:1` prints the port and
    serves until stdin closes."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto", choices=("tcp", "udp"), default="udp")
    ap.add_argument("--program", action="append", default=[], help="NUMBER:LOW:HIGH")
    ap.add_argument("--mode", default="normal")
    ap.add_argument("--drop-first", type=int, default=0)
    args = ap.parse_args(argv)
    progs = {}
    for spec in args.program:
        num, low, high = (int(x, 0) for x in spec.split(":"))
        progs[num] = (low, high)
    with RpcTestServer(progs, proto=args.proto, mode=args.mode, drop_first=args.drop_first) as srv:
        print(srv.port, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def pmap_registration(prog: int, vers: int, proto: str, port: int) -> Iterator[None]:
    """Register a mapping with the portmapper on 127.0.0.1:111 (PMAPPROC_SET), as a server
    would, and always unregister it (PMAPPROC_UNSET) afterwards."""
    import random as _random

    from servprobe.rpc.protocol import AcceptStat, decode_reply, encode_call

    prot = 6 if proto == "tcp" else 17

    def call(proc: int, args: bytes) -> bool:
        msg = encode_call(_random.getrandbits(32), 100000, 2, proc, args)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(msg, (HOST, 111))
            reply = decode_reply(s.recv(65536))
        return reply.accept == AcceptStat.SUCCESS and reply.body[-4:] == b"\0\0\0\1"

    if not call(1, struct.pack(">IIII", prog, vers, prot, port)):
        pytest.fail(f"portmapper refused to register {prog} v{vers} {proto}/{port}")
    try:
        yield
    finally:
        call(2, struct.pack(">IIII", prog, vers, prot, 0))
