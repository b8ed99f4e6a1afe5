"""A small TCP listener on 127.0.0.1 for tests: sends a banner (or nothing) on every
connection and keeps the line open until the client closes or `hold` seconds pass.
Counts the connections it accepted (to prove that no packet was sent)."""

from __future__ import annotations

import socket
import threading


class Listener:
    def __init__(self, banner: bytes | None, hold: float = 10.0) -> None:
        self.banner = banner
        self.hold = hold
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.banner:
                    conn.sendall(self.banner)
                conn.settimeout(self.hold)
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
