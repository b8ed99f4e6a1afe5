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

Also here: rpcbind() and statd(), context managers that run the real Debian daemons on
loopback for the integration tests and always stop what they started.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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


# -- real daemons: rpcbind (port 111) and rpc.statd ----------------------------------

RPCBIND = shutil.which("rpcbind") or "/usr/sbin/rpcbind"
STATD = shutil.which("rpc.statd") or "/usr/sbin/rpc.statd"
RPCINFO = shutil.which("rpcinfo") or "/usr/sbin/rpcinfo"
HOST = "127.0.0.1"


def _require(path: str) -> None:
    if not Path(path).exists():
        pytest.fail(f"{path} missing: install rpcbind and nfs-common (Makefile APT_PACKAGES)")


def _free_port_both() -> int:
    """A port free on TCP and UDP at once (statd serves the same number on both)."""
    for _ in range(50):
        with socket.socket() as t:
            t.bind((HOST, 0))
            port = t.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("0.0.0.0", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def _tcp_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _rpcinfo() -> str:
    out = subprocess.run([RPCINFO, "-p", HOST], capture_output=True, text=True, timeout=10)
    return out.stdout


@contextlib.contextmanager
def rpcbind() -> Iterator[subprocess.Popen[bytes] | None]:
    """rpcbind on 111; yields our process, or None when a portmapper was already there."""
    _require(RPCBIND)
    if _tcp_open(111) and "portmapper" in _rpcinfo():
        yield None  # a previous run or someone else's: use it, do not stop it
        return
    proc = subprocess.Popen([RPCBIND, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _tcp_open(111):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"rpcbind exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                pytest.fail("rpcbind did not open port 111")
            time.sleep(0.05)
        yield proc
    finally:
        _stop(proc)


@dataclass
class Statd:
    proc: subprocess.Popen[bytes]
    port: int


@contextlib.contextmanager
def statd(registered: bool = True) -> Iterator[Statd]:
    _require(STATD)
    port = _free_port_both()
    with tempfile.TemporaryDirectory(prefix="servprobe-statd-") as state:
        Path(state, "sm").mkdir()
        Path(state, "sm.bak").mkdir()
        proc = subprocess.Popen(
            [STATD, "--no-notify", "-F", "-d", "-p", str(port), "-P", state],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 15
            while True:
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    pytest.fail(f"rpc.statd exited with {proc.returncode}: {err}")
                ready = _tcp_open(port)
                if ready and registered:
                    ready = any(
                        line.split()[:1] == ["100024"] and line.split()[3] == str(port)
                        for line in _rpcinfo().splitlines()
                        if len(line.split()) >= 4
                    )
                if ready:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"rpc.statd not ready on port {port}")
                time.sleep(0.1)
            yield Statd(proc, port)
        finally:
            _stop(proc)


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
