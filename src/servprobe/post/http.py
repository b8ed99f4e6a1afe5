"""http-server-header and https-redirect: what a plain `GET /` tells about a web server.

Asks: `GET / HTTP/1.0` with a Host header (inside TLS when the service is ssl/http).
Reads: the status line and headers (up to 16 KiB). The `Server:` header is reported as
http-server-header; when no probe-file line named the product, it becomes the product and
version ("Foo/1.2 (Unix)" → product Foo, version 1.2; nmap puts the whole header in the
product). A redirect (3xx) of a plain-HTTP service to `https://` on the same port means
the port really speaks TLS (a server answering plain requests on its TLS port, nginx's
`error_page 497`): reported as https-redirect, and the tunnel becomes ssl.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from servprobe.post.base import (
    Buffered,
    Finding,
    PostProcessor,
    Trigger,
    responses,
    target_name,
    text,
)
from servprobe.result import ScriptResult, ServiceResult

MAX_HEAD = 16384
_STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3})")
_PRODUCT = re.compile(r"^([A-Za-z][\w.+-]*(?: [A-Za-z][\w.+-]*)*)(?:/(\d[\w.+~-]*))?")


def split_server(header: str) -> tuple[str, str | None]:
    """'Foo/1.2 (Unix)' → ('Foo', '1.2'); a header that is no product token stays whole."""
    m = _PRODUCT.match(header)
    if not m:
        return header, None
    return m.group(1), m.group(2)


class HttpMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    def start(self, now: float) -> list[bytes]:
        host = target_name(self.result)
        if ":" in host:
            host = f"[{host}]"
        return [f"GET / HTTP/1.0\r\nHost: {host}:{self.result.port}\r\n\r\n".encode()]

    def parse(self, now: float) -> list[bytes]:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) < MAX_HEAD:
            return []
        self.done = True
        head = self.buf[: end if end >= 0 else MAX_HEAD]
        self._read(head)
        return []

    def eof(self, now: float) -> None:
        if not self.done:
            self._read(self.buf[:MAX_HEAD])
        self.done = True

    def _read(self, head: bytes) -> None:
        m = _STATUS.match(head)
        if not m:
            return
        self.status = int(m.group(1))
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip():
                self.headers.setdefault(text(name.strip(), 64).lower(), text(value.strip(), 512))

    def finish(self) -> Finding | None:
        if self.status is None:
            return None
        f = Finding()
        server = self.headers.get("server")
        if server:
            f.script = ScriptResult("http-server-header", server, {"Server": server})
            if not self.result.product and self.result.service in (None, "http", "https"):
                product, version = split_server(server)
                f.fields["product"] = product
                if version:
                    f.fields["version"] = version
        if not self.result.service:
            f.service = "http"
        location = self.headers.get("location", "")
        if 300 <= self.status < 400 and self.result.tunnel != "ssl" and location.lower().startswith("https://"):
            try:
                url = urlsplit(location)
                port, where = url.port or 443, url.hostname or ""
            except ValueError:
                port, where = None, ""
            # same port, and not some other machine (as nmap's https-redirect checks)
            if port == self.result.port and where in ("", self.result.address, self.result.hostname):
                f.tunnel = "ssl"
                f.more.append(ScriptResult("https-redirect", f"Redirects to {location}",
                                           {"location": location}))
        if f.script is None and not f.more and not f.fields and not f.service:
            return None
        return f


def _web(r: ServiceResult) -> bool:
    return r.service is None and any(_STATUS.match(data) for data in responses(r))


POST = PostProcessor(
    "http-server-header",
    Trigger(services=frozenset({"http", "https", "http-alt", "http-proxy"}), when=_web),
    HttpMachine,
    "the Server header of GET /, and a redirect to https:// on the same port",
)
