"""Small scripted TCP servers on 127.0.0.1 for the nmap probe-sequence and fingerprint tests.

Each behaviour is defined once here as a pure function of what the client sent so far, and is
used twice: by a real threaded server on loopback (what `nmap -sV --version-trace` was run
against, see tests/record_nmap_sequences.py) and by `SimServer`, the same behaviour as a
ServerModel for the engine's virtual-time simulator, so the recorded nmap sequence can be
replayed against our direct provider without waiting nmap's real waits.

Behaviours (name: what the server does on every connection):
  silent   accepts and never sends; closes only when the client does
  chatty   sends an unknown banner at once, answers every chunk it receives with an unknown
           line, never closes (the "unrecognized chatty service" of issue 11)
  webish   says nothing first; answers any request with a minimal HTTP response whose Server
           header no match line knows (a softmatch-then-exhaust walk), then closes
  wrapped  closes at once without a byte (tcpwrapped)
  softftp  sends an FTP-like banner nmap only softmatches, then ignores every request
"""

from __future__ import annotations

import contextlib
import socket
import threading

from servprobe.engine.sim import CLOSE, ServerModel

CHATTY_BANNER = b"XQZ-7 unknownd ready\r\n"
CHATTY_REPLY = b"XQZ-7 ?\r\n"
SOFTFTP_BANNER = b"220 qqzzy ftp server ready\r\n"
WEBISH_REPLY = b"HTTP/1.0 400 Bad Request\r\nServer: qqzzy\r\nContent-Length: 0\r\n\r\n"

# behaviour -> (bytes on connect, reply to each received chunk, close after the reply)
BEHAVIOURS: dict[str, tuple[bytes, bytes, bool]] = {
    "silent": (b"", b"", False),
    "chatty": (CHATTY_BANNER, CHATTY_REPLY, False),
    "webish": (b"", WEBISH_REPLY, True),
    "wrapped": (b"", b"", True),
    "softftp": (SOFTFTP_BANNER, b"", False),
}


class SimServer(ServerModel):
    """A behaviour of BEHAVIOURS for engine.sim (replies come `delay` seconds after a request)."""

    def __init__(self, behaviour: str, delay: float = 0.0) -> None:
        self.banner, self.reply, self.closes = BEHAVIOURS[behaviour]
        self.behaviour = behaviour
        self.delay = delay

    def on_connect(self, conn, tls):
        if self.behaviour == "wrapped":
            return [(0.0, CLOSE)]
        return [(0.0, self.banner)] if self.banner else []

    def on_data(self, conn, payload, since, tls):
        if not self.reply:
            return []
        out: list[tuple[float, object]] = [(self.delay, self.reply)]
        if self.closes:
            out.append((self.delay, CLOSE))
        return out


class ThreadedServer:
    """A real loopback TCP server running one behaviour; `with ThreadedServer("chatty") as s:`."""

    def __init__(self, behaviour: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.banner, self.reply, self.closes = BEHAVIOURS[behaviour]
        self.behaviour = behaviour
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for c in list(self._conns):
            with contextlib.suppress(OSError):
                c.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.behaviour == "wrapped":
                return
            if self.banner:
                conn.sendall(self.banner)
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                if self.reply:
                    conn.sendall(self.reply)
                    if self.closes:
                        return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with contextlib.suppress(ValueError):
                self._conns.remove(conn)
