"""http-server-header and https-redirect: what a plain `GET /` tells about a web server.

Asks: `GET / HTTP/1.0` with a Host header (inside TLS when the service is ssl/http).
Reads: the status line and headers (up to 16 KiB). The `Server:` header is reported as
http-server-header; when no probe-file line named the product, it becomes the product and
version ("Foo/1.2 (Unix)" → product Foo, version 1.2; nmap puts the whole header in the
product). A redirect (3xx) of a plain-HTTP service to `https://` on the same port means
the port really speaks TLS (a server answering plain requests on its TLS port, nginx's
`error_page 497`): reported as https-redirect, and the tunnel becomes ssl. Proxies named by
what they send (http-proxy-software): Varnish by its Via ("varnish (Varnish/7.1)") or
X-Varnish header, HAProxy by the 503 page it writes itself when no server is up.
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
MAX_BODY = 4096
_VIA_VARNISH = re.compile(r"\bvarnish \(Varnish/(\d[\w.]*)\)", re.IGNORECASE)
# the 503 page HAProxy writes itself when no server is up (its own error text)
HAPROXY_503 = b"No server is available to handle this request."
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
        self.body = b""

    def start(self, now: float) -> list[bytes]:
        host = target_name(self.result)
        if ":" in host:
            host = f"[{host}]"
        return [f"GET / HTTP/1.0\r\nHost: {host}:{self.result.port}\r\n\r\n".encode()]

    def parse(self, now: float) -> list[bytes]:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) < MAX_HEAD:
            return []
        if end >= 0 and self.status is None:
            self._read(self.buf[:end])
        # a short page (an error page names its server) is read whole; anything else stops here
        try:
            length = int(self.headers.get("content-length", "-1"))
        except ValueError:
            length = -1
        body = self.buf[end + 4 :] if end >= 0 else b""
        if end < 0 or not 0 <= length <= MAX_BODY or len(body) >= length:
            self.done = True
            if end < 0:
                self._read(self.buf[:MAX_HEAD])
            self.body = body[:MAX_BODY]
        return []

    def eof(self, now: float) -> None:
        if not self.done:
            end = self.buf.find(b"\r\n\r\n")
            if self.status is None:
                self._read(self.buf[: end if end >= 0 else MAX_HEAD])
            self.body = self.buf[end + 4 :][:MAX_BODY] if end >= 0 else b""
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
        self._proxies(f)
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


    def _proxies(self, f: Finding) -> None:
        """Varnish (Via/X-Varnish) and HAProxy (its own 503 page), named by what they send."""
        via = self.headers.get("via", "")
        walk = self.result.product or ""
        m = _VIA_VARNISH.search(via)
        if m or "x-varnish" in self.headers:
            f.more.append(ScriptResult("http-proxy-software", "Varnish" + (f" {m.group(1)} (Via: {via})" if m else ""),
                                       {"software": "Varnish", "Via": via, "X-Varnish": self.headers.get("x-varnish", "")}))
            if not walk or walk.startswith("Varnish"):
                f.fields["product"] = "Varnish http accelerator"
                if m:
                    f.fields["version"] = m.group(1)
        elif self.status == 503 and HAPROXY_503 in self.body:
            f.more.append(ScriptResult("http-proxy-software", "HAProxy (its 503 page: no server up)",
                                       {"software": "HAProxy", "evidence": HAPROXY_503.decode()}))
            if not walk:
                f.fields["product"] = "HAProxy http proxy"


def _web(r: ServiceResult) -> bool:
    return r.service is None and any(_STATUS.match(data) for data in responses(r))


POST = PostProcessor(
    "http-server-header",
    Trigger(services=frozenset({"http", "https", "http-alt", "http-proxy"}), when=_web),
    HttpMachine,
    "the Server header of GET /, and a redirect to https:// on the same port",
)
