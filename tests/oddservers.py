"""Small odd servers on loopback for the engine's network tests (behaviour real daemons lack).

`OddServers` runs an asyncio loop in a thread and serves, on 127.0.0.1 (or ::1) free ports:
silent ports, accept-then-close (tcpwrapped), late banners (the NULL cheat), banners that only
softmatch, request-first servers that answer several probes differently, UDP responders and
TLS-wrapped services (self-signed certificate made with `openssl req` in a temporary dir).
Everything is stopped by `close()` / the context manager, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(4096):
            pass


def silent() -> Handler:
    async def h(r, w):
        await _drain_forever(r)

    return h


def accept_close() -> Handler:
    async def h(r, w):
        w.close()

    return h


def banner(text: bytes, delay: float = 0.0) -> Handler:
    """Sends `text` `delay` seconds after accepting; ignores whatever the client says."""

    async def h(r, w):
        if delay:
            await asyncio.sleep(delay)
        w.write(text)
        await w.drain()
        await _drain_forever(r)

    return h


def request_first(answers: dict[bytes, bytes], greeting: bytes = b"", delay: float = 0.0) -> Handler:
    """Answers each request that starts with a known prefix (after an optional delayed greeting)."""

    async def h(r, w):
        if delay:
            await asyncio.sleep(delay)
        if greeting:
            w.write(greeting)
            await w.drain()
        buf = b""
        while True:
            chunk = await r.read(4096)
            if not chunk:
                return
            buf += chunk
            for prefix, reply in answers.items():
                if buf.startswith(prefix):
                    w.write(reply)
                    await w.drain()
                    buf = b""
                    break

    return h


HTTP_NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def make_cert(directory: str) -> tuple[str, str]:
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
            "-out", cert, "-days", "2", "-subj", "/CN=servprobe-test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class OddServers:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[object] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tls: ssl.SSLContext | None = None
        self._threads: list[tuple[threading.Event, threading.Thread]] = []

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def tcp(self, handler: Handler, host: str = "127.0.0.1", tls: bool = False) -> int:
        async def start():
            async def wrapped(r, w):
                try:
                    await handler(r, w)
                except (ConnectionError, OSError, ssl.SSLError):
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        w.close()

            srv = await asyncio.start_server(
                wrapped, host, 0, ssl=self.tls_context() if tls else None, backlog=512
            )
            self.servers.append(srv)
            return srv.sockets[0].getsockname()[1]

        return self._run(start())

    def tls(self, answers: dict[bytes, bytes], host: str = "127.0.0.1", greeting: bytes = b"") -> int:
        """A TLS service (request-first unless `greeting`), served by threads with blocking ssl
        sockets so OpenSSL sends its alerts on failed handshakes as real servers do."""
        import socket

        ctx = self.tls_context()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        lsock = socket.socket(family, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((host, 0))
        lsock.listen(128)
        lsock.settimeout(0.2)
        stop = threading.Event()

        def serve(conn: socket.socket) -> None:
            conn.settimeout(15)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    if greeting:
                        tls.sendall(greeting)
                    buf = b""
                    while not stop.is_set():
                        chunk = tls.recv(4096)
                        if not chunk:
                            return
                        buf += chunk
                        for prefix, reply in answers.items():
                            if buf.startswith(prefix):
                                tls.sendall(reply)
                                buf = b""
                                break
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

        def accept_loop() -> None:
            while not stop.is_set():
                try:
                    conn, _ = lsock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                threading.Thread(target=serve, args=(conn,), daemon=True).start()
            lsock.close()

        t = threading.Thread(target=accept_loop, daemon=True)
        t.start()
        self._threads.append((stop, t))
        return lsock.getsockname()[1]

    def udp(self, answer: Callable[[bytes], bytes | None], host: str = "127.0.0.1") -> int:
        async def start():
            tr, _ = await self.loop.create_datagram_endpoint(lambda: _Udp(answer), local_addr=(host, 0))
            self.servers.append(tr)
            return tr.get_extra_info("sockname")[1]

        return self._run(start())

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tmp = tempfile.TemporaryDirectory()
            cert, key = make_cert(self._tmp.name)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._tls = ctx
        return self._tls

    def close(self) -> None:
        async def stop():
            for s in self.servers:
                s.close()
            for s in self.servers:
                if isinstance(s, asyncio.base_events.Server):
                    s.close()
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        for ev, _ in self._threads:
            ev.set()
        for _, t in self._threads:
            t.join(timeout=2)
        with contextlib.suppress(Exception):
            self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> OddServers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
