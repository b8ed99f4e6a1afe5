"""ldap-rootdse: the LDAP root DSE, read anonymously (RFC 4512 §5.1).

Asks: one SearchRequest (base "", scope base, filter (objectClass=*), attributes "*" and "+").
Reads: the SearchResultEntry's attributes: namingContexts, supportedLDAPVersion,
supportedSASLMechanisms, vendorName/vendorVersion (RFC 3045, where the server publishes
them), objectClass, and Active Directory's dnsHostName/defaultNamingContext. The product
comes from what the server states: vendorName/vendorVersion, OpenLDAP's own `OpenLDAProotDSE`
object class (no version: OpenLDAP does not publish one, so a guessed range like nmap's
"2.2.X - 2.3.X" is dropped), Active Directory's functionality levels.
"""

from __future__ import annotations

from typing import Any

from servprobe.post.base import Buffered, Finding, PostProcessor, Trigger, format_output, text
from servprobe.post.ber import BerError, ber_int, decode, seq, tlv, whole
from servprobe.result import ScriptResult, ServiceResult

MESSAGE_ID = 1
SHOWN = ("namingContexts", "supportedLDAPVersion", "supportedSASLMechanisms", "vendorName",
         "vendorVersion", "objectClass", "subschemaSubentry", "dnsHostName",
         "defaultNamingContext", "domainFunctionality", "forestFunctionality", "serverName")

SEARCH_ROOT_DSE = seq(
    ber_int(MESSAGE_ID),
    seq(tlv(0x04, b""), ber_int(0, 0x0A), ber_int(0, 0x0A), ber_int(0), ber_int(0),
        tlv(0x01, b"\x00"), tlv(0x87, b"objectClass"), seq(tlv(0x04, b"*"), tlv(0x04, b"+")),
        tag=0x63),
)


def parse_entry(msg: list[tuple[int, Any]]) -> dict[str, list[str]]:
    """A SearchResultEntry's attributes: {type: [values]} (types and values printable)."""
    attrs: dict[str, list[str]] = {}
    for _tag, attr in msg[1][1][1][1]:
        name = text(attr[0][1], 64)
        attrs[name] = [text(v, 256) for _t, v in attr[1][1]][:64]
    return attrs


class LdapMachine(Buffered):
    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.attrs: dict[str, list[str]] | None = None
        self.code: int | None = None

    def start(self, now: float) -> list[bytes]:
        return [SEARCH_ROOT_DSE]

    def parse(self, now: float) -> list[bytes]:
        while not self.done:
            try:
                got = whole(self.buf)
                if got is None:
                    return []
                tag, size = got
                msg = decode(self.buf[:size])[0][1]
                self.buf = self.buf[size:]
                if tag != 0x30:
                    raise BerError("not an LDAPMessage")
                op = msg[1][0]
                if op == 0x64:  # SearchResultEntry
                    self.attrs = parse_entry(msg)
                elif op == 0x65:  # SearchResultDone
                    self.code = msg[1][1][0][1][0] if msg[1][1][0][1] else 0
                    self.done = True
                elif op not in (0x73,):  # a referral is skipped; anything else: not LDAP
                    self.done = True
            except (BerError, IndexError, TypeError, ValueError):
                self.done = True
        return []

    def finish(self) -> Finding | None:
        if not self.attrs:
            return None
        a = {k: v for k, v in self.attrs.items() if k in SHOWN}
        elements = {k: (v[0] if len(v) == 1 else v) for k, v in a.items()}
        f = Finding(ScriptResult("ldap-rootdse", format_output(elements), elements), service="ldap")
        classes = {c.lower() for c in a.get("objectClass", [])}
        vendor, vversion = a.get("vendorName", [""])[0], a.get("vendorVersion", [""])[0]
        if vendor or vversion:
            f.fields["product"] = vendor or self.result.product or "LDAP"
            f.fields["version"] = vversion
        elif "openldaprootdse" in classes:
            f.fields["product"] = "OpenLDAP"
            f.fields["version"] = ""  # stated nowhere: no guess survives
            f.cpes.append("cpe:/a:openldap:openldap")
        elif "domainFunctionality" in a:
            f.fields["product"] = "Microsoft Windows Active Directory LDAP"
            f.fields["ostype"] = "Windows"
            if "dnsHostName" in a:
                f.fields["hostname"] = a["dnsHostName"][0]
            if "defaultNamingContext" in a:
                f.fields["extrainfo"] = "Domain: " + a["defaultNamingContext"][0]
        return f


POST = PostProcessor(
    "ldap-rootdse",
    Trigger(services=frozenset({"ldap", "ldaps"}), ports=frozenset({389, 636})),
    LdapMachine,
    "the LDAP root DSE: vendor, version, naming contexts, LDAP versions",
)
