"""xmpp-info: what an XMPP server tells before login (RFC 6120 §4, §9; XEP-0115).

Asks: a client stream header (`<stream:stream to=HOST xmlns='jabber:client' version='1.0'>`).
Reads: the server's stream header (from, id, version, xml:lang), its stream features
(STARTTLS and whether it is required, SASL mechanisms, compression methods, in-band
registration) or a stream error, and an entity-capabilities `<c node=…>` element, whose node
URI names the server software where one is sent. A second stream header without a `to`
attribute draws the server's improper-addressing error, whose text is the server's own
(Prosody: "A 'to' attribute is required on stream headers"). The text is never parsed as
XML (a hostile stream cannot expand entities or nest forever): bounded regular expressions
over at most MAX_BUFFER bytes.
"""

from __future__ import annotations

import re

from servprobe.post.base import (
    Buffered,
    Finding,
    PostProcessor,
    Trigger,
    format_output,
    responses,
    target_name,
    text,
)
from servprobe.result import ScriptResult, ServiceResult

# entity-capabilities node URI → product (as the servers' own code sets it)
SOFTWARE = {
    "http://prosody.im": "Prosody XMPP server",
    "https://prosody.im": "Prosody XMPP server",
    "http://www.process-one.net/en/ejabberd/": "ejabberd",
    "https://www.process-one.net/en/ejabberd/": "ejabberd",
    "http://www.igniterealtime.org/projects/openfire/": "Openfire",
    "https://www.igniterealtime.org/projects/openfire/": "Openfire",
    "http://tigase.org/jabber": "Tigase",
}

_ATTR = re.compile(rb"""([\w:.-]{1,40})\s*=\s*(?:'([^']{0,512})'|"([^"]{0,512})")""")
_STREAM = re.compile(rb"<(?:\w{1,20}:)?stream\b([^>]{0,2048})>")
_FEATURES = re.compile(rb"<(?:\w{1,20}:)?features\b[^>]{0,512}>(.{0,16384}?)</(?:\w{1,20}:)?features>", re.S)
_ERROR = re.compile(rb"<(?:\w{1,20}:)?error\b[^>]{0,512}>\s*<([\w-]{1,64})", re.S)
_MECH = re.compile(rb"<mechanism>([^<]{1,64})</mechanism>")
_METHOD = re.compile(rb"<method>([^<]{1,64})</method>")
_TEXT = re.compile(rb"<text\b[^>]{0,512}>([^<]{1,512})</text>")
# the improper-addressing text each server's source writes (XML-escaped as sent)
ERROR_TEXTS = {"A &apos;to&apos; attribute is required on stream headers": "Prosody XMPP server"}
_CAPS = re.compile(rb"<c\b[^>]{0,512}\bnode\s*=\s*(?:'([^']{1,256})'|\"([^\"]{1,256})\")")


def _attrs(raw: bytes) -> dict[str, str]:
    return {text(m.group(1), 40): text(m.group(2) if m.group(2) is not None else m.group(3), 256)
            for m in _ATTR.finditer(raw)}


class XmppMachine(Buffered):
    address_to = True  # the stream header's `to`: the target's name (or address)

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.stream: dict[str, str] | None = None
        self.features: bytes | None = None
        self.error: str | None = None
        self.error_text: str | None = None

    def start(self, now: float) -> list[bytes]:
        host = target_name(self.result).replace("'", "")
        to = f" to='{host}'" if self.address_to else ""
        return [f"<?xml version='1.0'?><stream:stream{to} xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode()]

    def parse(self, now: float) -> list[bytes]:
        if self.stream is None:
            m = _STREAM.search(self.buf)
            if m:
                self.stream = _attrs(m.group(1))
        err = _ERROR.search(self.buf)
        if err:
            self.error = text(err.group(1), 64)
            found = _TEXT.search(self.buf, err.start())
            if found:
                self.error_text = text(found.group(1), 256)
            self.done = b"</stream:stream>" in self.buf or b"</stream:error>" in self.buf
        feats = _FEATURES.search(self.buf)
        if feats:
            self.features = feats.group(1)
            self.done = True
        if b"</stream:stream>" in self.buf:
            self.done = True
        return []

    def finish(self) -> Finding | None:
        if self.stream is None:
            return None
        info: dict[str, object] = {}
        for key in ("from", "version", "xml:lang", "id"):
            if key in self.stream:
                info["stream_id" if key == "id" else key] = self.stream[key]
        fields: dict[str, str] = {}
        feats = self.features or b""
        if feats:
            flist = []
            if b"starttls" in feats:
                required = re.search(rb"<starttls\b[^>]*>\s*<required\s*/>", feats) is not None
                flist.append("starttls (required)" if required else "starttls")
            if b"jabber.org/features/iq-register" in feats:
                flist.append("register")
            if flist:
                info["features"] = flist
            mechs = [text(m, 64) for m in _MECH.findall(feats)]
            if mechs:
                info["auth_mechanisms"] = mechs
            methods = [text(m, 64) for m in _METHOD.findall(feats)]
            if methods:
                info["compression_methods"] = methods
        caps = _CAPS.search(self.buf)
        if caps:
            node = text(caps.group(1) or caps.group(2), 256)
            info["capabilities_node"] = node
            if node.rstrip("/") in {k.rstrip("/") for k in SOFTWARE}:
                fields["product"] = next(v for k, v in SOFTWARE.items() if k.rstrip("/") == node.rstrip("/"))
        if self.error:
            info["error"] = self.error
            if self.error_text:
                info["error_text"] = self.error_text
        return Finding(ScriptResult("xmpp-info", format_output(info), info), fields, service="xmpp")


class XmppNoTo(XmppMachine):
    """The same stream without `to`: only the server's own error text counts here."""

    address_to = False

    def finish(self) -> Finding | None:
        product = ERROR_TEXTS.get(self.error_text or "") if self.error == "improper-addressing" else None
        return Finding(fields={"product": product}, service="xmpp") if product else None


def _speaks_xmpp(r: ServiceResult) -> bool:
    # an unrecognized service that answered some probe with an XMPP stream (nmap's 7.93
    # file knows no line for Prosody's stream error)
    return r.service is None and any(b"etherx.jabber.org/streams" in data for data in responses(r))


_TRIGGER = Trigger(services=frozenset({"xmpp", "xmpp-client", "jabber"}), ports=frozenset({5222}),
                   when=_speaks_xmpp)
POST = PostProcessor("xmpp-info", _TRIGGER, XmppMachine,
                     "XMPP stream header, features and the server software's capabilities node")
POST_NAME = PostProcessor("xmpp-info", _TRIGGER, XmppNoTo,
                          "the server's own improper-addressing text names it")
