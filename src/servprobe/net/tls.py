"""TLS client contexts for version detection: no verification, from modern to permissive.

Level 0 is OpenSSL's client default minus certificate checks (TLS 1.2/1.3, SECLEVEL 1): it
talks to almost every current server. Level 1 accepts everything this OpenSSL build still
can: TLS 1.0 and up, every cipher at SECLEVEL 0 (RSA key exchange, SHA-1, small DH),
legacy renegotiation and unsafe legacy server connects. The engine tries level 0 first and
falls back to level 1 when a handshake fails (nmap issue #2528: one failed protocol version
must not end TLS probing). SSLv2/SSLv3 are not offered: OpenSSL 3 no longer builds them.
"""

from __future__ import annotations

import ssl
from functools import cache

MAX_LEVEL = 1


@cache
def client_context(level: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if level >= 1:
        ctx.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0x4)
        ctx.options |= getattr(ssl, "OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION", 0x40000)
        ctx.options &= ~getattr(ssl, "OP_NO_SSLv3", 0)
        try:
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        except (ValueError, OSError):
            pass
        for ciphers in ("ALL:COMPLEMENTOFALL:@SECLEVEL=0", "ALL:@SECLEVEL=0", "ALL"):
            try:
                ctx.set_ciphers(ciphers)
                break
            except ssl.SSLError:
                continue
    else:
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        except (ValueError, OSError):
            pass
    return ctx


def sni_name(hostname: str | None) -> str | None:
    """SNI only for DNS names: never for IP literals (RFC 6066 forbids them)."""
    if not hostname:
        return None
    import ipaddress

    try:
        ipaddress.ip_address(hostname)
        return None
    except ValueError:
        return hostname
