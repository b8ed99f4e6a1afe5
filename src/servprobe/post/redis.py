"""redis-info: Redis `INFO server`, in plain TCP or inside TLS (stunnel, Redis's own TLS).

Asks: the inline command `INFO server`.
Reads: the bulk-string reply (`$N` then `key:value` lines): redis_version (the version the
walk cannot see on a non-standard port), redis_mode, os, arch_bits (extrainfo "64 bits", as
nmap's redis-info), process_id, tcp_port, uptime, under nmap's element names where nmap's
script has them; the product is Redis, or Valkey where `valkey_version` is present. `-NOAUTH`/`-ERR` replies are
reported as "authentication required" / the error text, without refining anything.
"""

from __future__ import annotations

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.result import ScriptResult, ServiceResult

# INFO field → the element name nmap's redis-info uses (ours where nmap has none)
KEYS = {"redis_version": "Version", "valkey_version": "Valkey version", "redis_mode": "Mode",
        "os": "Operating System", "arch_bits": "Architecture", "process_id": "Process ID",
        "tcp_port": "TCP Port", "uptime_in_seconds": "Uptime (seconds)"}


class RedisMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.info: dict[str, str] | None = None
        self.raw: dict[str, str] = {}
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
        self.info = {KEYS[k]: (f"{v} bits" if k == "arch_bits" else v) for k, v in
                     sorted(info.items(), key=lambda kv: list(KEYS).index(kv[0]))}
        self.raw = info
        return []

    def finish(self) -> Finding | None:
        if self.error is not None:
            msg = "authentication required" if self.error.startswith("NOAUTH") else self.error
            return Finding(ScriptResult("redis-info", msg, {"error": self.error}))
        if not self.info:
            return None
        info, raw = self.info, self.raw
        fields: dict[str, str] = {}
        cpes: list[str] = []
        if "valkey_version" in raw:
            fields = {"product": "Valkey", "version": raw["valkey_version"]}
        elif "redis_version" in raw:
            fields = {"product": "Redis key-value store", "version": raw["redis_version"]}
            cpes = [f"cpe:/a:redis:redis:{raw['redis_version']}"]
        if fields and "arch_bits" in raw and not self.result.extrainfo:
            fields["extrainfo"] = f"{raw['arch_bits']} bits"  # as nmap's redis-info sets it
        return Finding(ScriptResult("redis-info", format_output(info), dict(info)), fields, cpes,
                       service="redis")


POST = PostProcessor(
    "redis-info",
    Trigger(services=frozenset({"redis"}), ports=frozenset({6379})),
    RedisMachine,
    "Redis INFO server: version, mode, OS (also inside TLS)",
)
