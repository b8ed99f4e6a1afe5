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
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

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
        self.sock.listen(16)
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
