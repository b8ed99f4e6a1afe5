"""git-info: the git smart protocol's capability advertisement (`agent=git/x.y.z`).

Asks: a git:// request for upload-pack on "/" (a pkt-line: `git-upload-pack /\\0host=…\\0`,
plus `\\0version=2\\0` so a protocol-v2 server sends its capability list at once).
Reads: pkt-lines. Protocol v2's capability lines, or v0's first ref line after its NUL,
carry `agent=…`; git's own daemon says `agent=git/2.39.5` → product "git daemon", version
2.39.5. Another agent (JGit, libgit2 servers) is reported but does not make it git's. An
`ERR …` line (no repository at "/": the path a client must know) is reported as such.
"""

from __future__ import annotations

import re

from servprobe.post.base import (
    Buffered,
    Finding,
    PostProcessor,
    Trigger,
    format_output,
    target_name,
    text,
)
from servprobe.result import ScriptResult, ServiceResult

_AGENT = re.compile(rb"(?:^|[\s\x00])agent=(\S+)")


def pkt_line(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


def request(host: str) -> bytes:
    return pkt_line(b"git-upload-pack /\x00host=" + host.encode("ascii", "replace") + b"\x00\x00version=2\x00")


class GitMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.agent: str | None = None
        self.error: str | None = None
        self.protocol: str | None = None
        self.capabilities: list[str] = []

    def start(self, now: float) -> list[bytes]:
        return [request(target_name(self.result))]

    def parse(self, now: float) -> list[bytes]:
        while not self.done and len(self.buf) >= 4:
            try:
                size = int(self.buf[:4], 16)
            except ValueError:
                self.done = True
                break
            if size == 0:  # flush-pkt: the advertisement is over
                self.done = True
                break
            if size < 4:
                self.buf = self.buf[4:]
                continue
            if len(self.buf) < size:
                break
            line, self.buf = self.buf[4:size], self.buf[size:]
            if line.startswith(b"ERR "):
                self.error = text(line[4:].rstrip(b"\n"), 200)
                self.done = True
            elif line.startswith(b"version "):
                self.protocol = text(line[8:].strip(), 8)
            else:
                if b"\x00" in line:  # v0: capabilities after the first ref's NUL
                    self.protocol = self.protocol or "0"
                    caps = line.split(b"\x00", 1)[1].split()
                else:
                    caps = [line.strip()]  # v2: one capability (with its arguments) per line
                self.capabilities += [text(c, 80) for c in caps][:64]
                m = _AGENT.search(line)
                if m and self.agent is None:
                    self.agent = text(m.group(1), 80)
                if self.protocol == "0":
                    self.done = True  # the rest are refs
        return []

    def finish(self) -> Finding | None:
        if self.error is not None:
            return Finding(ScriptResult("git-info", f"error: {self.error}", {"error": self.error}))
        if self.agent is None:
            return None
        elements = {"agent": self.agent, "protocol": self.protocol or "?", "capabilities": self.capabilities}
        f = Finding(ScriptResult("git-info", format_output(elements), elements), service="git")
        if self.agent.startswith("git/"):
            version = self.agent[4:]
            f.fields = {"product": "git daemon", "version": version}
            f.cpes = [f"cpe:/a:git-scm:git:{version}"]
        return f


POST = PostProcessor(
    "git-info",
    Trigger(services=frozenset({"git"}), ports=frozenset({9418}), tunnel="plain"),
    GitMachine,
    "git smart protocol advertisement: agent=git/x.y.z",
)
