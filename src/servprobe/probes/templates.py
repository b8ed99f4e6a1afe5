"""Version templates: a match line's p/ v/ i/ h/ o/ d/ cpe: fields + a regex match → Identification.

Substitutions (nmap's):
    $1 … $9            the captured bytes of that group (unset group: empty)
    $P(n)              only the printable bytes (0x20-0x7e) of group n
    $SUBST(n,"a","b")  group n with every "a" replaced by "b"
    $I(n,">"|"<")      group n (≤ 8 bytes) read as an unsigned big/little-endian integer
A substitution nmap cannot do (group beyond the pattern's, $0, $I of more than 8 bytes,
unknown command, a `$` starting none of these — even "$$" or "US$5") makes that one field
absent, as nmap drops a field whose template fails.

Field sizes, as nmap 7.93 behaves (observed): a field whose substituted value is longer than
its buffer allows (product/version/hostname 80, info 256, ostype/devicetype 32, each minus 2:
at most 78, 254, 30 bytes) is left out, not cut. What is shown is escaped (servprobe.escape:
non-printable bytes as \\xHH, where nmap prints "."), in full: nmap keeps every byte of a
value within the limit (tests/data/nmap/field-limits.xml), so no escape is cut off.

CPEs (observed nmap behaviour): in the substituted text (not the literal part) letters are
lower-cased, whitespace becomes `_`, the bytes ``:/?#[]@!$&'()*+,;=%<>"`` are %-encoded
(upper-case hex) and other non-printable bytes become `.`. A CPE longer than 78 characters
fails. nmap keeps one CPE per part: for each of a, h, o the last cpe: field of that part wins
(a failing one clears it), output in the order a, h, o; other parts are dropped.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace
from typing import Any

from servprobe.escape import printable_bytes
from servprobe.probes.model import Identification, MatchLine

# nmap's buffer sizes; a value must be at most size - 2 bytes long (observed in nmap 7.93)
LIMITS = {"product": 80, "version": 80, "hostname": 80, "info": 256, "ostype": 32, "devicetype": 32}
CPE_LIMIT = 80
CPE_PARTS = ("a", "h", "o")
_CPE_ENCODE = frozenset(b":/?#[]@!$&'()*+,;=%<>\"")
_CPE_SPACE = frozenset(b" \t\n\x0b\x0c\r")
# ASCII only: str.isdigit() also accepts "²" (latin-1 0xb2), which int() then rejects
_DIGITS = frozenset("0123456789")
_NOT_PRINTABLE = bytes(b for b in range(256) if not 0x20 <= b < 0x7F)
_NEEDS_ESCAPE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")  # what printable_bytes would rewrite


def _shown(value: bytes) -> str:
    """printable_bytes(value), without its per-byte loop when nothing needs escaping."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value.decode("ascii")
    return printable_bytes(value)


class TemplateError(ValueError):
    """A substitution that cannot be done (nmap drops the field)."""


# lower-case letters, whitespace as "_", other non-printable bytes as "."; then %-encoding
_CPE_TABLE = bytes(
    0x5F if b in _CPE_SPACE else (b + 32 if 0x41 <= b <= 0x5A else (b if 0x20 < b < 0x7F else 0x2E))
    for b in range(256)
)
_CPE_RESERVED = re.compile(b"[" + re.escape(bytes(sorted(_CPE_ENCODE))) + b"]")


def _cpe_transform(data: bytes) -> bytes:
    out = data.translate(_CPE_TABLE)
    if _CPE_RESERVED.search(out) is None:
        return out
    return _CPE_RESERVED.sub(lambda m: b"%%%02X" % m.group()[0], out)


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


def _check_command(name: str, args: list[str | int]) -> None:
    if not args or not isinstance(args[0], int):
        raise TemplateError(f"${name}: first argument must be a group number")
    if name == "P" and len(args) == 1:
        return
    if name == "SUBST" and len(args) == 3 and all(isinstance(a, str) for a in args[1:]):
        return
    if name == "I" and len(args) == 2 and args[1] in (">", "<"):
        return
    raise TemplateError(f"${name}: unknown command or wrong arguments")


def _command(name: str, args: list[str | int], m: Any) -> bytes:
    data = _group(m, args[0])  # type: ignore[arg-type]
    if name == "P":
        return data.translate(None, _NOT_PRINTABLE)
    if name == "SUBST":
        old, new = (str(a).encode("latin-1") for a in args[1:])
        return data.replace(old, new) if old else data
    if len(data) > 8:  # $I
        raise TemplateError("$I: more than 8 bytes")
    return str(int.from_bytes(data, "big" if args[1] == ">" else "little")).encode()


# A template parses once into tokens: bytes (literal), int (group), or (name, args) (command)
Token = bytes | int | tuple[str, list[str | int]]


@functools.lru_cache(maxsize=65536)
def _tokens(template: str) -> tuple[Token, ...] | str:
    """The template's tokens, or the syntax error message."""
    out: list[Token] = []
    i, n = 0, len(template)
    try:
        while i < n:
            j = template.find("$", i)
            if j < 0:
                out.append(template[i:].encode("latin-1", "replace"))
                break
            if j > i:
                out.append(template[i:j].encode("latin-1", "replace"))
            k = j + 1
            if k < n and template[k] in _DIGITS:
                out.append(int(template[k]))
                i = k + 1
                continue
            if k < n and template[k].isalpha():
                e = k
                while e < n and template[e].isalpha():
                    e += 1
                if e < n and template[e] == "(":
                    args, i = _parse_args(template, e + 1)
                    _check_command(template[k:e], args)
                    out.append((template[k:e], args))
                    continue
            # nmap 7.93 drops a field with any other "$" (observed: "$ 5", "$$", "$Id", "US$5")
            raise TemplateError(
                f"'$' at {template[j : j + 8]!r} is not $1-$9, $P(), $SUBST() or $I()"
            )
    except TemplateError as exc:
        return str(exc)
    return tuple(out)


def substitute(template: str, m: Any, *, cpe: bool = False) -> bytes:
    """Expand one template against a regex match (m may be None to only check syntax)."""
    tokens = _tokens(template)
    if isinstance(tokens, str):
        raise TemplateError(tokens)
    out = bytearray()
    for tok in tokens:
        if isinstance(tok, bytes):
            out += tok
            continue
        val = _group(m, tok) if isinstance(tok, int) else _command(tok[0], tok[1], m)
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
    if len(value) > limit - 2:  # nmap leaves a field out rather than cut it
        return None
    return _shown(value) or None


def cpe_list(templates: tuple[str, ...], m: Any) -> tuple[str, ...]:
    """The CPEs nmap reports for a line's cpe: templates (one per part a, h, o)."""
    slots: dict[str, str | None] = {}
    for c in templates:
        part = c[5:6] if c.startswith("cpe:/") and c[6:7] in (":", "") else ""
        if part not in CPE_PARTS:
            continue
        try:
            value = substitute(c, m, cpe=True)
        except TemplateError:
            slots[part] = None
            continue
        # the literal part is the file's own text; keep what it says, but printable
        if len(value) > CPE_LIMIT - 2:
            slots[part] = None
        elif value.isascii() and value.decode("ascii").isprintable():
            slots[part] = value.decode("ascii")  # as nmap prints it (a "\\" stays single)
        else:
            slots[part] = _shown(value)
    return tuple(v for p in CPE_PARTS if (v := slots.get(p)))


_FIELDS = ("product", "version", "info", "hostname", "ostype", "devicetype")
_FIELD_LIMITS = tuple(LIMITS[name] for name in _FIELDS)


def _groups_ok(tokens: tuple[Token, ...], groups: int) -> bool:
    """Every group a template names exists (else nmap drops the field on every match)."""
    for tok in tokens:
        n = tok if isinstance(tok, int) else (tok[1][0] if isinstance(tok, tuple) else None)
        if n is not None and not 1 <= n <= min(groups, 9):  # type: ignore[operator]
            return False
    return True


def _fill(tokens: tuple[Token, ...], m: Any, cpe: bool = False) -> bytes:
    """A template's bytes for match m (its group numbers were checked by _plan); with cpe,
    the substituted parts get the CPE transform (the literal ones are the file's own)."""
    out = []
    for tok in tokens:
        cls = tok.__class__
        if cls is bytes:
            out.append(tok)
            continue
        val = (m.group(tok) or b"") if cls is int else _command(tok[0], tok[1], m)  # type: ignore[index]
        out.append(_cpe_transform(val) if cpe else val)  # type: ignore[arg-type]
    return b"".join(out)  # type: ignore[arg-type]


def _cpe_text(value: bytes) -> str | None:
    if len(value) > CPE_LIMIT - 2:
        return None
    if value.isascii() and value.decode("ascii").isprintable():
        return value.decode("ascii")  # as nmap prints it (a "\\" stays single)
    return _shown(value)


def _plan(line: MatchLine, groups: int) -> Any:
    """What identify() needs of a line, worked out once (the same rules as _field and
    cpe_list, applied ahead): an Identification when nothing depends on the match (shared:
    it is immutable); else per field its final value or (tokens, limit), and per CPE its
    part with a final value or tokens."""
    t = line.template
    fields: list[Any] = []
    fixed = True
    for name, limit in zip(_FIELDS, _FIELD_LIMITS, strict=True):
        text = getattr(t, name)
        tokens = _tokens(text) if text is not None else None
        if tokens is None or isinstance(tokens, str) or not _groups_ok(tokens, groups):
            fields.append(None)  # absent, or a template nmap can never fill
        elif all(tok.__class__ is bytes for tok in tokens):
            fields.append(_field(text, None, limit))
        else:
            fields.append((tokens, limit))
            fixed = False
    cpes: list[tuple[str, Any]] = []
    for c in t.cpes:
        part = c[5:6] if c.startswith("cpe:/") and c[6:7] in (":", "") else ""
        if part not in CPE_PARTS:
            continue
        tokens = _tokens(c)
        if isinstance(tokens, str) or not _groups_ok(tokens, groups):
            cpes.append((part, None))
        elif all(tok.__class__ is bytes for tok in tokens):
            cpes.append((part, _cpe_text(b"".join(tokens))))  # type: ignore[arg-type]
        else:
            cpes.append((part, tokens))
            fixed = False
    # nmap's rule: for each part a, h, o the last cpe: of that part wins (a failing one
    # clears it); output in the order a, h, o. So only the last one of each part matters.
    last: dict[str, Any] = {}
    for part, v in cpes:
        last[part] = v
    picked = tuple(last[p] for p in CPE_PARTS if last.get(p) is not None)
    if fixed:
        return Identification(line.service, line.soft, *fields, cpes=picked,  # type: ignore[arg-type]
                              source=line.source, probe=line.probe_name)
    return (groups, tuple(fields), picked)


def _cpe_pick(cpes: tuple[Any, ...], m: Any) -> tuple[str, ...]:
    """The CPEs of a plan (each a final string or tokens) for match m; failing ones left out."""
    out = []
    for v in cpes:
        if v.__class__ is str:
            out.append(v)
        else:
            try:
                text = _cpe_text(_fill(v, m, True))
            except TemplateError:
                continue
            if text:
                out.append(text)
    return tuple(out)


def _value(field: Any, m: Any) -> str | None:
    if field is None or field.__class__ is str:
        return field
    tokens, limit = field
    try:
        value = _fill(tokens, m)
    except TemplateError:
        return None
    if len(value) > limit - 2:  # nmap leaves a field out rather than cut it
        return None
    return _shown(value) or None


def identify(line: MatchLine, m: Any) -> Identification:
    """The Identification a matching line gives (m: the regex match object)."""
    plan = line.plan
    groups = m.re.groups if m is not None else 0
    if plan is None or (type(plan) is tuple and plan[0] != groups):
        plan = line.plan = _plan(line, groups)
    if type(plan) is Identification:
        return plan
    _, fields, cpes = plan
    product, version, info, hostname, ostype, devicetype = fields
    return Identification(
        line.service,
        line.soft,
        _value(product, m),
        _value(version, m),
        _value(info, m),
        _value(hostname, m),
        _value(ostype, m),
        _value(devicetype, m),
        _cpe_pick(cpes, m),
        line.source,
        line.probe_name,
    )
