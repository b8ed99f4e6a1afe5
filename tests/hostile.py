"""Hostile and broken services on loopback, for the robustness tests (tests/test_hostile*.py).

Each scenario is a small asyncio server that misbehaves in one way a real daemon will not
(drip-feeding, flooding, resetting, stalling a TLS handshake, escapes in banners, responses
made to make regex backtrack...). They all run in one background thread with its own event
loop, so a scan in another process (or the test's own loop) can hit them all at once.

Every server is bounded on its side too (duration, bytes, replies), so a test that fails
half-way never leaves a runaway sender behind; `HostileServers.stop()` closes everything.
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

NMAP_PROBES = Path("/usr/share/nmap/nmap-service-probes")
HOST = "127.0.0.1"
MAX_SERVE_SECONDS = 150.0  # a server never talks to one client longer than this
FLOOD_BYTES = 100 * 1024 * 1024

# Banner with terminal escapes, NUL, invalid UTF-8, XML/JSON metacharacters and a JS line
# separator, shaped so that an OpenSSH match line copies the tail into the version field.
NASTY_TAIL = b"2<script>&amp;\"'</x>]]>\x1b[31m\x1b]0;pwned\x07\x00\xc3\x28\xff\xfe\xe2\x80\xa8{\"a\":1}"
NASTY_SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-" + NASTY_TAIL + b"\r\n"


@dataclass(slots=True)
class Scenario:
    name: str
    proto: str  # tcp | udp
    port: int = 0
    what: str = ""


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_some(reader: asyncio.StreamReader, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(65536), timeout)
    except (TimeoutError, ConnectionError):
        return b""


async def _hold_open(reader: asyncio.StreamReader, limit: float = MAX_SERVE_SECONDS) -> None:
    """Keep the connection until the client goes away (reading and dropping what it sends)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except (TimeoutError, ConnectionError):
            return
        if not data:
            return


# -- TCP scenarios --------------------------------------------------------------------------


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One byte per second, forever: a banner that never completes."""
    text = b"220 slow-drip service says hello very very slowly " * 10
    deadline = time.monotonic() + MAX_SERVE_SECONDS
    i = 0
    while time.monotonic() < deadline:
        writer.write(text[i % len(text) : i % len(text) + 1])
        await writer.drain()
        i += 1
        await asyncio.sleep(1.0)


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """100 MB as fast as the client takes it (or until it goes away)."""
    chunk = (b"FLOOD" * 13107)[:65536]
    sent = 0
    while sent < FLOOD_BYTES:
        writer.write(chunk)
        await writer.drain()
        sent += len(chunk)


async def reset_mid_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half an HTTP response, then a TCP RST (SO_LINGER 0)."""
    await _read_some(reader, 0.3)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nServer: Partial/1.")
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


async def half_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A banner, then FIN on our side; keep reading (never close) until the client leaves."""
    writer.write(b"220 half-closed service\r\n")
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    await _hold_open(reader)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An endless stream of lines that never closes (like chargen), about 200 KB/s."""
    line = b"".join(bytes([33 + (i % 94)]) for i in range(72)) + b"\r\n"
    deadline = time.monotonic() + MAX_SERVE_SECONDS
    while time.monotonic() < deadline:
        writer.write(line * 14)
        await writer.drain()
        await asyncio.sleep(0.005)


async def random_binary(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Random binary noise on connect and in reply to every probe."""
    rng = random.Random(7)
    writer.write(bytes(rng.getrandbits(8) for _ in range(3000)))
    await writer.drain()
    deadline = time.monotonic() + MAX_SERVE_SECONDS
    while time.monotonic() < deadline:
        data = await _read_some(reader, deadline - time.monotonic())
        if not data:
            return
        writer.write(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 5000))))
        await writer.drain()


async def tls_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers anything (a ClientHello above all) with a TLS-looking record of garbage."""
    rng = random.Random(11)
    deadline = time.monotonic() + MAX_SERVE_SECONDS
    while time.monotonic() < deadline:
        data = await _read_some(reader, deadline - time.monotonic())
        if not data:
            return
        # handshake record claiming 65535 bytes, then a ServerHello type and noise
        writer.write(b"\x16\x03\x03\xff\xff\x02\x00\xff\xfb" + rng.randbytes(3000))
        await writer.drain()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never says a word (a service that waits for a request it never gets)."""
    await _hold_open(reader, 60)


def nasty_banner(banner: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        await _hold_open(reader, 60)

    return handler


def backtrack_404(response: bytes) -> Handler:
    """Answers the 404 probe's request with a near-miss page built to make `re` backtrack."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await _read_some(reader, 30)
        if b"nice%20ports" in data:
            writer.write(response)
            await writer.drain()
        writer.close()

    return handler


class TlsStall:
    """A real TLS server that sends only the first half of its first flight, then stalls.

    The ServerHello header still looks like TLS (so the port is taken for ssl), but no
    handshake can ever complete.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.context.wrap_bio(incoming, outgoing, server_side=True)
        data = await _read_some(reader, 30)
        if not data:
            return
        incoming.write(data)
        with contextlib.suppress(ssl.SSLError):
            obj.do_handshake()
        flight = outgoing.read()
        if flight:
            writer.write(flight[: max(1, len(flight) // 2)])
            await writer.drain()
        await _hold_open(reader)


def make_tls_context(workdir: Path) -> ssl.SSLContext:
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "2", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(cert, key)
    return ctx


# -- UDP ------------------------------------------------------------------------------------


class UdpAmplifier(asyncio.DatagramProtocol):
    """Replies to any datagram with ten 60 KB datagrams (bounded to 2000 replies in all)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.budget = 2000
        self.payload = (b"AMPLIFY" * 9000)[:60000]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None or addr[0] != HOST:
            return
        for _ in range(10):
            if self.budget <= 0:
                return
            self.budget -= 1
            self.transport.sendto(self.payload, addr)


class UdpNasty(asyncio.DatagramProtocol):
    """Replies to any datagram with a short reply full of escapes, NULs and metacharacters."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and addr[0] == HOST:
            self.transport.sendto(b"\x00\x01" + NASTY_TAIL * 3, addr)


# -- the backtracking near-miss -------------------------------------------------------------

_LITERAL_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\x00"}
_META = b"()[]{}*+?|^$."


def _literal_run(pattern: bytes, start: int) -> bytes:
    """The literal text a regex requires from `start` on, up to its first metacharacter."""
    out = bytearray()
    i = start
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            n = pattern[i + 1 : i + 2]
            if n in _LITERAL_ESCAPES:
                out += _LITERAL_ESCAPES[n]
            elif n and not n.isalnum():
                out += n
            else:
                break
            i += 2
            continue
        if c in _META:
            break
        out += c
        i += 1
    return bytes(out)


@dataclass(slots=True)
class Backtracker:
    line: int  # line number in nmap-service-probes
    pattern: bytes
    flags: int
    response: bytes  # the crafted near-miss


# the shape that explodes: an unbounded run inside a repeated group, e.g. (?:[^<]+|<...)*?
_NESTED = re.compile(rb"\(\?:\[\^.\]\+\|[^()]*(?:\([^()]*\))?[^()]*\)\*\??")


def candidate_404_backtrackers(path: Path = NMAP_PROBES) -> list[Backtracker]:
    """FourOhFourRequest lines with a nested unbounded repetition followed by a literal.

    For each, the crafted response is the line's literal prefix, some text, and the literal
    that must follow the repetition with its last bytes missing: the regex can only fail,
    after trying every way to split the text among the repetition's branches.
    """
    found: list[Backtracker] = []
    probe = None
    with path.open("rb") as fh:
        for no, raw in enumerate(fh, 1):
            if raw.startswith(b"Probe "):
                parts = raw.split()
                probe = parts[2] if len(parts) > 2 else None
                continue
            if probe != b"FourOhFourRequest" or not raw.startswith(b"match "):
                continue
            rest = raw.rstrip(b"\r\n").split(b" ", 2)[2]
            if not rest.startswith(b"m"):
                continue
            delim = rest[1:2]
            end = rest.find(delim, 2)
            if end < 0:
                continue
            pattern = rest[2:end]
            flag_text = rest[end + 1 :].split(b" ", 1)[0]
            m = _NESTED.search(pattern)
            if not m:
                continue
            head = _literal_run(pattern, 1 if pattern.startswith(b"^") else 0)
            tail = _literal_run(pattern, m.end())
            if len(tail) < 40:
                continue
            flags = (re.I if b"i" in flag_text else 0) | (re.S if b"s" in flag_text else 0)
            body = b"<html><head><title>404</title>" + tail[:-4]
            found.append(Backtracker(no, pattern, flags, head + body))
    return found


_CHECK = """
import re, sys
pattern, flags, response = eval(sys.stdin.read())
re.compile(pattern, flags).search(response)
"""


def backtracks_in_stdlib_re(b: Backtracker, seconds: float = 2.0) -> bool:
    """True when stdlib `re` is still searching the crafted response after `seconds`."""
    try:
        subprocess.run(
            [sys.executable, "-c", _CHECK],
            input=repr((b.pattern, b.flags, b.response)).encode(),
            timeout=seconds, capture_output=True, check=True,
        )
    except subprocess.TimeoutExpired:
        return True
    return False


# -- running them ---------------------------------------------------------------------------


@dataclass
class HostileServers:
    """All scenarios on loopback, in a background thread. Use as a context manager."""

    backtrack_response: bytes | None = None
    only: frozenset[str] | None = None  # start just these scenarios (default: all)
    silent_count: int = 0  # extra silent listeners named silent0, silent1, ...
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _servers: list[asyncio.base_events.Server] = field(default_factory=list)
    _transports: list[asyncio.BaseTransport] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> HostileServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tcp_handlers(self) -> dict[str, tuple[str, Handler]]:
        assert self._tmp is not None
        handlers: dict[str, tuple[str, Handler]] = {
            "drip": ("1 byte/s banner, never ends", drip),
            "flood": ("100 MB as fast as taken", flood),
            "reset": ("half a response, then RST", reset_mid_response),
            "halfclose": ("banner, FIN, stays open", half_close),
            "endless": ("endless line stream", endless),
            "binary": ("random binary replies", random_binary),
            "tlsgarbage": ("TLS-looking garbage to any hello", tls_garbage),
            "tlsstall": ("real TLS, stalls mid-handshake",
                         TlsStall(make_tls_context(Path(self._tmp.name)))),
            "ansi": ("SSH banner with escapes/NUL/bad UTF-8/metachars",
                     nasty_banner(NASTY_SSH_BANNER)),
            "nulbanner": ("banner of NULs and control bytes",
                          nasty_banner(b"\x00" * 64 + bytes(range(32)) + b"\r\n")),
            "badutf8": ("invalid UTF-8 banner",
                        nasty_banner(b"220 \xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\xff\r\n")),
            "xmlmeta": ("banner of XML/JSON metacharacters",
                        nasty_banner(b"220 <?xml ?><!DOCTYPE x [<!ENTITY a \"b\">]>&a; ]]> "
                                     b"\"}, {\"injected\": true} \\u0000 \r\n")),
        }
        if self.backtrack_response is not None:
            handlers["backtrack"] = ("near-miss PHP 404 page (regex backtracking)",
                                     backtrack_404(self.backtrack_response))
        for i in range(self.silent_count):
            handlers[f"silent{i}"] = ("accepts, never speaks", silent)
        if self.only is not None:
            handlers = {k: v for k, v in handlers.items()
                        if k in self.only or k.startswith("silent")}
        return handlers

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="servprobe-hostile-")
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        errors: list[BaseException] = []

        async def setup() -> None:
            for name, (what, handler) in self.tcp_handlers().items():
                server = await asyncio.start_server(self._guard(handler), HOST, 0,
                                                    limit=1 << 20, backlog=64)
                self._servers.append(server)
                port = server.sockets[0].getsockname()[1]
                self.scenarios[name] = Scenario(name, "tcp", port, what)
            for name, what, factory in (
                ("udpamp", "ten 60 KB datagrams per request", UdpAmplifier),
                ("udpnasty", "reply with escapes/NULs/metachars", UdpNasty),
            ):
                if self.only is not None and name not in self.only:
                    continue
                transport, _ = await self._loop.create_datagram_endpoint(  # type: ignore[union-attr]
                    factory, local_addr=(HOST, 0)
                )
                self._transports.append(transport)
                port = transport.get_extra_info("sockname")[1]
                self.scenarios[name] = Scenario(name, "udp", port, what)

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(setup())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hostile-servers", daemon=True)
        self._thread.start()
        ready.wait(60)
        if errors:
            self.stop()
            raise errors[0]

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await asyncio.wait_for(handler(reader, writer), MAX_SERVE_SECONDS + 5)
            except (ConnectionError, TimeoutError, OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.transport.abort()
                if task is not None:
                    self._tasks.discard(task)

        return guarded

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def teardown() -> None:
            for server in self._servers:
                server.close()
            for t in self._transports:
                t.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.sleep(0)

        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(teardown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
        with contextlib.suppress(Exception):
            loop.close()
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def port(self, name: str) -> int:
        return self.scenarios[name].port

    def ports_arg(self) -> str:
        """An nmap -p argument covering every scenario: T:...,U:..."""
        tcp = sorted(s.port for s in self.scenarios.values() if s.proto == "tcp")
        udp = sorted(s.port for s in self.scenarios.values() if s.proto == "udp")
        parts = []
        if tcp:
            parts.append("T:" + ",".join(map(str, tcp)))
        if udp:
            parts.append("U:" + ",".join(map(str, udp)))
        return ",".join(parts)


def peak_rss_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, in KiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def run_bounded(argv: list[str], timeout: float, env: dict[str, str] | None = None,
                cwd: str | None = None) -> tuple[int, float, int, str, str]:
    """Run a command; return (exit status, seconds, peak RSS KiB, stdout, stderr).

    The peak RSS comes from wait4()'s rusage of this very child (ru_maxrss), so other
    children of the test process do not count. On timeout the child is killed and the
    status is -9.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, cwd=cwd)
        deadline = t0 + timeout
        status = None
        rusage = None
        while time.monotonic() < deadline:
            pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, rusage = st, ru
                break
            time.sleep(0.05)
        if status is None:
            proc.kill()
            _, status, rusage = os.wait4(proc.pid, 0)
            code = -9
        else:
            code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # already reaped by wait4
        elapsed = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        return (code, elapsed, int(rusage.ru_maxrss), out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"))
