"""Post-processors against odd and hostile loopback servers (small asyncio servers): silence,
an endless stream, a truncated answer then close, an immediate reset, plain text where TLS
was expected, a datagram flood. Each ends with a clear result within its deadline, never an
exception, and leaves the walk's fields alone; a spent connection budget (-T0/-T1) delays
post-processors instead of skipping them."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from servprobe import post
from servprobe.engine.state import ConnBudget
from servprobe.post.runner import run_post
from servprobe.result import ServiceResult

DEADLINE = 1.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _endless(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    # an AMQP frame header announcing 2 GiB, then garbage forever
    w.write(b"\x01\x00\x00\x7f\xff\xff\xff")
    with _quiet():
        while True:
            w.write(b"\xce" * 65536)
            await w.drain()


async def _truncated(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await r.read(100)
    w.write(b"\x01\x00\x00\x00\x00\x01\xf8\x00\x0a\x00\x0a\x00\x09\x00\x00\x01\xd3\x0ccapab")
    await w.drain()
    w.close()


async def _reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.close()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ConnectionError | OSError)  # type: ignore[arg-type]


async def _serve(handler: Handler, result_kw: dict[str, object], budget: ConnBudget | None = None) -> tuple[ServiceResult, float]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    result = ServiceResult("127.0.0.1", port, "tcp", method="probed", conf=10, **result_kw)  # type: ignore[arg-type]
    chosen = post.applicable(result) or [p for p in post.REGISTRY if p.id == "amqp-info"]
    t0 = time.monotonic()
    try:
        await run_post(result, chosen, budget, None, None, post_deadline=DEADLINE)
    finally:
        server.close()
    return result, time.monotonic() - t0


CASES = {
    "silent": _silent,
    "endless": _endless,
    "truncated": _truncated,
    "reset": _reset,
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("service", ["amqp", "mqtt", "redis", "http", "memcached"])
def test_hostile_tcp(name: str, service: str) -> None:
    result, took = asyncio.run(_serve(CASES[name], {"service": service, "product": "Walk's"}))
    assert took < DEADLINE + 1.0
    assert result.product == "Walk's" and result.version is None
    for sc in result.scripts:
        assert "Traceback" not in sc.output


def test_plain_server_where_tls_was_expected() -> None:
    async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n")
        await w.drain()
        await asyncio.sleep(5)

    result, took = asyncio.run(_serve(hello, {"service": "redis", "tunnel": "ssl"}))
    assert took < DEADLINE + 1.0 and result.scripts == [] and result.version is None


def test_spent_budget_still_runs_one_after_another() -> None:
    body = b"# Server\r\nredis_version:7.0.15\r\n"

    async def redis_like(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(b"$%d\r\n%s\r\n" % (len(body), body))
        await w.drain()

    result, _ = asyncio.run(_serve(redis_like, {"service": "redis"}, ConnBudget(0)))
    assert result.version == "7.0.15"


def test_udp_flood_of_foreign_datagrams() -> None:
    async def go() -> tuple[ServiceResult, float]:
        loop = asyncio.get_running_loop()

        class Flood(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: object) -> None:
                for _ in range(50):  # wrong request ids, broken BER
                    self.t.sendto(b"\x00\x01\x00\x00\x00\x01\x00\x00VERSION 6.6.6\r\n", addr)  # type: ignore[attr-defined]
                    self.t.sendto(b"\x30\x84\xff\xff\xff\xff", addr)  # type: ignore[attr-defined]

        tr, _ = await loop.create_datagram_endpoint(Flood, local_addr=("127.0.0.1", 0))
        port = tr.get_extra_info("sockname")[1]
        result = ServiceResult("127.0.0.1", port, "udp", state="open|filtered", service="snmp")
        t0 = time.monotonic()
        try:
            chosen = [p for p in post.REGISTRY if p.id in ("snmp-info", "snmp-sysdescr", "memcached-info")]
            await run_post(result, chosen, None, None, None, post_deadline=DEADLINE)
        finally:
            tr.close()
        return result, time.monotonic() - t0

    result, took = asyncio.run(go())
    assert took < DEADLINE + 1.0
    assert result.scripts == [] and result.version is None and result.state == "open|filtered"


def test_a_broken_machine_loses_nothing() -> None:
    """A bug in one post-processor (an exception) is traced; the result and the others stay."""
    from servprobe.post.base import Machine, PostProcessor, Trigger

    class Broken(Machine):
        def start(self, now: float) -> list[bytes]:
            raise RuntimeError("bug")

    async def hello(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        w.write(b"$30\r\n# Server\r\nredis_version:7.0.15\r\n\r\n")
        await w.drain()

    async def go() -> tuple[ServiceResult, list[str]]:
        server = await asyncio.start_server(hello, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        result = ServiceResult("127.0.0.1", port, "tcp", service="redis", product="Walk's", method="probed", conf=10)
        broken = PostProcessor("broken", Trigger(services=frozenset({"redis"})), Broken, "a bug")
        lines: list[str] = []
        try:
            await run_post(result, [broken, *post.applicable(result)], None, None, lines.append, DEADLINE)
        finally:
            server.close()
        return result, lines

    result, lines = asyncio.run(go())
    assert result.version == "7.0.15" and any("post broken failed: RuntimeError('bug')" in x for x in lines)
