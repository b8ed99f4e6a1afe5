"""Connect scan, UDP scan and host discovery against Python listeners on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest

from servprobe.scan.portscan import PortScanConfig, PortScanner, config_for_timing


@contextlib.contextmanager
def tcp_listener(backlog: int = 16) -> Iterator[tuple[socket.socket, int]]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(backlog)
    try:
        yield s, s.getsockname()[1]
    finally:
        s.close()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(coro):
    return asyncio.run(coro)


def test_open_and_closed_tcp_ports() -> None:
    with tcp_listener() as (_, open_port):
        closed = free_port()

        async def go():
            ps = PortScanner(PortScanConfig(timeout=2.0, retries=1, concurrency=64))
            try:
                hp = await ps.scan_host("127.0.0.1", {"tcp": [open_port, closed]})
            finally:
                ps.close()
            return hp

        hp = run(go())
    assert hp.states[("tcp", open_port)] == ("open", "syn-ack")
    assert hp.states[("tcp", closed)] == ("closed", "conn-refused")


def test_silent_port_is_filtered_after_retries() -> None:
    # a listener whose accept queue is full drops SYNs: loopback's way to be "filtered"
    with tcp_listener(backlog=0) as (_, port):
        fillers = []
        try:
            for _ in range(3):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(("127.0.0.1", port))
                fillers.append(c)

            async def go():
                ps = PortScanner(PortScanConfig(timeout=0.3, retries=1, concurrency=8))
                try:
                    return await ps.tcp_port("127.0.0.1", port), ps.probes_sent
                finally:
                    ps.close()

            (state, sent) = run(go())
        finally:
            for c in fillers:
                c.close()
    assert state == ("filtered", "no-response")
    assert sent == 2  # one try plus one retry


def test_many_ports_with_small_concurrency_finish_with_every_state() -> None:
    with tcp_listener() as (_, p1), tcp_listener() as (_, p2):
        ports = sorted({*range(40000, 40400), p1, p2})  # a listener may sit inside the range

        async def go():
            ps = PortScanner(PortScanConfig(timeout=1.0, retries=0, concurrency=7))
            seen: list[tuple[str, int, str, str]] = []
            try:
                hp = await ps.scan_host("127.0.0.1", {"tcp": ports}, on_port=lambda *a: seen.append(a))
            finally:
                ps.close()
            return hp, seen

        hp, seen = run(go())
    assert len(hp.states) == len(ports)
    assert len(seen) == len(ports)
    assert hp.states[("tcp", p1)][0] == "open" and hp.states[("tcp", p2)][0] == "open"


def test_udp_closed_open_and_silent() -> None:
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    closed = free_port(socket.SOCK_DGRAM)

    async def responder():
        loop = asyncio.get_running_loop()
        echo.setblocking(False)
        while True:
            _data, addr = await loop.sock_recvfrom(echo, 100)
            await loop.sock_sendto(echo, b"pong", addr)

    async def go():
        task = asyncio.create_task(responder())
        ps = PortScanner(PortScanConfig(timeout=0.3, retries=1, concurrency=8))
        try:
            return (
                await ps.udp_port("127.0.0.1", echo.getsockname()[1]),
                await ps.udp_port("127.0.0.1", silent.getsockname()[1]),
                await ps.udp_port("127.0.0.1", closed),
            )
        finally:
            task.cancel()
            ps.close()

    try:
        got = run(go())
    finally:
        echo.close()
        silent.close()
    assert got == (("open", "udp-response"), ("open|filtered", "no-response"), ("closed", "port-unreach"))


def test_discovery_up_by_refusal_and_by_scanned_port() -> None:
    async def go(ports):
        ps = PortScanner(PortScanConfig(timeout=0.5, retries=0, concurrency=8, discovery_ports=ports))
        try:
            return await ps.discover("127.0.0.1")
        finally:
            ps.close()

    up, reason, latency = run(go((free_port(),)))
    assert up and reason == "conn-refused" and latency is not None and latency >= 0
    with tcp_listener() as (_, port):
        assert run(go((port,)))[:2] == (True, "syn-ack")


@pytest.mark.parametrize("timing", range(6))
def test_timing_templates_are_sane(timing: int) -> None:
    cfg = config_for_timing(timing)
    assert 0 < cfg.timeout <= 5 and cfg.retries >= 0 and cfg.concurrency >= 1
    assert config_for_timing(4, max_parallelism=3).concurrency == 3
