"""Version templates: a match line's p/ v/ i/ h/ o/ d/ cpe: fields + a regex match → Identification.

Substitutions (nmap's):
    $1 … $9            the captured bytes of that group (unset group: empty)
    $P(n)              only the printable bytes (0x20-0x7e) of group n
    $SUBST(n,"a","b")  group n with every "a" replaced by "b"
    $I(n,">"|"<")      group n (≤ 8 bytes) read as an unsigned big/little-endian integer
A `$` not followed by a digit or a command name stays literal. A substitution nmap cannot do
(group beyond the pattern's, $0, $I of more than 8 bytes, unknown command) makes that one
field absent, as nmap drops a field whose template fails.

In cpe: fields the substituted text (not the literal part) is lower-cased, spaces become
`_`, and every byte outside [a-z0-9._-] is %-encoded, so a captured value cannot break the
CPE's `:`-separated structure. Every field ends up printable (servprobe.escape) and is
truncated like nmap's (product/version/hostname 80, info 256, ostype/devicetype 32).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from servprobe.escape import printable_bytes
from servprobe.probes.model import Identification, MatchLine

LIMITS = {"product": 80, "version": 80, "hostname": 80, "info": 256, "ostype": 32, "devicetype": 32}
CPE_LIMIT = 256
_CPE_KEEP = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789._-")
# ASCII only: str.isdigit() also accepts "²" (latin-1 0xb2), which int() then rejects
_DIGITS = frozenset("0123456789")


class TemplateError(ValueError):
    """A substitution that cannot be done (nmap drops the field)."""


def _cpe_transform(data: bytes) -> bytes:
    out = bytearray()
    for b in data.lower():
        if b == 0x20:
            out.append(0x5F)
        elif b in _CPE_KEEP:
            out.append(b)
        else:
            out += b"%%%02x" % b
    return bytes(out)


def _group(m: Any, n: int) -> bytes:
    if n < 1 or n > 9:
        raise TemplateError(f"${n}: groups are $1-$9")
    if m is None:
        return b""
    if n > m.re.groups:
        raise TemplateError(f"${n}: the pattern has only {m.re.groups} groups")
    g = m.group(n)
    return g if g is not None else b""


def _parse_args(text: str, pos: int) -> tuple[list[str | int], int]:
    """Arguments of $CMD( … ): integers and "string" literals; returns (args, pos after ')')."""
    args: list[str | int] = []
    n = len(text)
    while True:
        while pos < n and text[pos] == " ":
            pos += 1
        if pos >= n:
            raise TemplateError("unterminated $ command")
        c = text[pos]
        if c == '"':
            end = text.find('"', pos + 1)
            if end < 0:
                raise TemplateError("unterminated string in $ command")
            args.append(text[pos + 1 : end])
            pos = end + 1
        elif c in _DIGITS:
            end = pos
            while end < n and text[end] in _DIGITS:
                end += 1
            args.append(int(text[pos:end]))
            pos = end
        else:
            raise TemplateError(f"bad argument in $ command at {text[pos : pos + 10]!r}")
        while pos < n and text[pos] == " ":
            pos += 1
        if pos < n and text[pos] == ",":
            pos += 1
            continue
        if pos < n and text[pos] == ")":
            return args, pos + 1
        raise TemplateError("expected , or ) in $ command")


def _command(name: str, args: list[str | int], m: Any) -> bytes:
    if not args or not isinstance(args[0], int):
        raise TemplateError(f"${name}: first argument must be a group number")
    data = _group(m, args[0])
    if name == "P" and len(args) == 1:
        return bytes(b for b in data if 0x20 <= b < 0x7F)
    if name == "SUBST" and len(args) == 3 and all(isinstance(a, str) for a in args[1:]):
        old, new = (str(a).encode("latin-1") for a in args[1:])
        return data.replace(old, new) if old else data
    if name == "I" and len(args) == 2 and args[1] in (">", "<"):
        if len(data) > 8:
            raise TemplateError("$I: more than 8 bytes")
        return str(int.from_bytes(data, "big" if args[1] == ">" else "little")).encode()
    raise TemplateError(f"${name}: unknown command or wrong arguments")


def substitute(template: str, m: Any, *, cpe: bool = False) -> bytes:
    """Expand one template against a regex match (m may be None to only check syntax)."""
    out = bytearray()
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out += template[i:].encode("latin-1")
            break
        out += template[i:j].encode("latin-1")
        k = j + 1
        if k < n and template[k] in _DIGITS:
            val = _group(m, int(template[k]))
            i = k + 1
        elif k < n and template[k].isalpha():
            e = k
            while e < n and template[e].isalpha():
                e += 1
            if e < n and template[e] == "(":
                args, i = _parse_args(template, e + 1)
                val = _command(template[k:e], args, m)
            else:  # e.g. a literal "$Id" in product text
                out += b"$"
                i = k
                continue
        else:
            out += b"$"
            i = k
            continue
        out += _cpe_transform(val) if cpe else val
    return bytes(out)


def check_template(template: str, groups: int) -> str | None:
    """Why a template can never be substituted for a pattern with `groups` groups, or None."""

    fake = SimpleNamespace(re=SimpleNamespace(groups=groups), group=lambda n: b"")
    try:
        substitute(template, fake)
    except TemplateError as exc:
        return str(exc)
    return None


def _field(text: str | None, m: Any, limit: int) -> str | None:
    if text is None:
        return None
    try:
        value = substitute(text, m)
    except TemplateError:
        return None
    return _clip(printable_bytes(value), limit) or None


def _clip(shown: str, limit: int) -> str:
    """Truncate to `limit` characters without cutting an escape (\\xHH, \\\\) in half."""
    if len(shown) <= limit:
        return shown
    i = 0
    while i < len(shown):
        step = (4 if shown[i + 1 : i + 2] == "x" else 2) if shown[i] == "\\" else 1
        if i + step > limit:
            break
        i += step
    return shown[:i]


def identify(line: MatchLine, m: Any) -> Identification:
    """The Identification a matching line gives (m: the regex match object)."""
    t = line.template
    cpes: list[str] = []
    for c in t.cpes:
        try:
            value = substitute(c, m, cpe=True)
        except TemplateError:
            continue
        cpes.append(_clip(printable_bytes(value), CPE_LIMIT))
    return Identification(
        service=line.service,
        soft=line.soft,
        product=_field(t.product, m, LIMITS["product"]),
        version=_field(t.version, m, LIMITS["version"]),
        info=_field(t.info, m, LIMITS["info"]),
        hostname=_field(t.hostname, m, LIMITS["hostname"]),
        ostype=_field(t.ostype, m, LIMITS["ostype"]),
        devicetype=_field(t.devicetype, m, LIMITS["devicetype"]),
        cpes=tuple(cpes),
        source=line.source,
        probe=line.probe_name,
    )
