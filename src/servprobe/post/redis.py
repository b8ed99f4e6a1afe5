"""redis-info: Redis `INFO server`, in plain TCP or inside TLS (stunnel, Redis's own TLS).

Asks: the inline command `INFO server`.
Reads: the bulk-string reply (`$N` then `key:value` lines): redis_version (the version the
walk cannot see on a non-standard port), redis_mode, os, arch_bits, tcp_port, and the
product (Redis, or Valkey where `valkey_version` is present). `-NOAUTH`/`-ERR` replies are
reported as "authentication required" / the error text, without refining anything.
"""

from __future__ import annotations

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.result import ScriptResult, ServiceResult

KEYS = ("redis_version", "valkey_version", "redis_mode", "os", "arch_bits", "tcp_port",
        "process_id", "run_id", "uptime_in_seconds")


class RedisMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info: dict[str, str] | None = None
        self.error: str | None = None

    def start(self, now: float) -> list[bytes]:
        return [b"INFO server\r\n"]

    def parse(self, now: float) -> list[bytes]:
        buf = self.buf
        if buf.startswith(b"-"):
            if b"\r\n" in buf:
                self.done = True
                self.error = text(buf[1 : buf.index(b"\r\n")], 200)
            return []
        if not buf.startswith(b"$"):
            self.done = bool(buf)
            return []
        nl = buf.find(b"\r\n")
        if nl < 0:
            return []
        try:
            size = int(buf[1:nl])
        except ValueError:
            self.done = True
            return []
        if size < 0 or len(buf) < nl + 2 + size:
            self.done = size < 0
            return []
        self.done = True
        info: dict[str, str] = {}
        for line in buf[nl + 2 : nl + 2 + size].split(b"\r\n"):
            key, sep, value = line.partition(b":")
            k = key.decode("ascii", "replace")
            if sep and k in KEYS:
                info[k] = text(value, 200)
        self.info = info
        return []

    def finish(self) -> Finding | None:
        if self.error is not None:
            msg = "authentication required" if self.error.startswith("NOAUTH") else self.error
            return Finding(ScriptResult("redis-info", msg, {"error": self.error}))
        if not self.info:
            return None
        info = self.info
        fields: dict[str, str] = {}
        cpes: list[str] = []
        if "valkey_version" in info:
            fields = {"product": "Valkey", "version": info["valkey_version"]}
        elif "redis_version" in info:
            fields = {"product": "Redis key-value store", "version": info["redis_version"]}
            cpes = [f"cpe:/a:redis:redis:{info['redis_version']}"]
        return Finding(ScriptResult("redis-info", format_output(info), dict(info)), fields, cpes,
                       service="redis")


POST = PostProcessor(
    "redis-info",
    Trigger(services=frozenset({"redis"}), ports=frozenset({6379})),
    RedisMachine,
    "Redis INFO server: version, mode, OS (also inside TLS)",
)
