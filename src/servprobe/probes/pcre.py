"""PCRE pattern syntax → the `regex` module: translation and static checks.

nmap runs its patterns with PCRE on raw bytes, without UTF or UCP. The `regex` module on
bytes agrees on almost everything (ASCII `\\w \\d \\s \\b`, case folding of ASCII letters only,
`$` = end or before a final newline, `.` = anything but `\\n`). The differences that matter
are rewritten here, token by token, so character classes and escapes are never misread:

- `{` that does not start a quantifier `{n}`, `{n,}`, `{n,m}` is a literal in PCRE but may
  start fuzzy-matching syntax in `regex` (e.g. `\\d+{infopark`): it is escaped.
  `{,m}` is a literal too (PCRE before 10.43, which nmap 7.93 links).
- `\\v` `\\h` (`\\V` `\\H`) are whitespace *classes* in PCRE, a single byte (or unknown) in
  Python; `\\R` `\\N` `\\e` `\\z` `\\Z` `\\Q…\\E` likewise get their PCRE meaning.

`min_width()` answers "can this pattern match the empty string?" statically, from the
pattern's parse tree (nmap rejects such patterns at load, like PCRE2_INFO_MATCHEMPTY).
"""

from __future__ import annotations

import re

try:  # Python 3.11+: the parser behind `re` (stable enough; guarded below)
    import re._parser as _sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older layouts
    import sre_parse as _sre_parse  # type: ignore[no-redef]

_QUANT = re.compile(rb"\{\d+(?:,\d*)?\}")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")
_VSPACE = rb"\n\x0b\x0c\r\x85"
_HSPACE = rb"\t \xa0"

_SIMPLE_OUTSIDE = {
    ord("v"): b"[" + _VSPACE + b"]",
    ord("V"): b"[^" + _VSPACE + b"]",
    ord("h"): b"[" + _HSPACE + b"]",
    ord("H"): b"[^" + _HSPACE + b"]",
    ord("R"): b"(?>\\r\\n|[" + _VSPACE + b"])",
    ord("e"): b"\\x1b",
    ord("z"): b"\\Z",
    ord("Z"): b"(?=\\n?\\Z)",
}
_SIMPLE_INSIDE = {ord("v"): _VSPACE, ord("h"): _HSPACE, ord("e"): b"\\x1b"}


class PatternSyntaxError(ValueError):
    """A pattern the translator cannot make sense of (e.g. a trailing backslash)."""


def _literal(data: bytes) -> bytes:
    return b"".join(b"\\x%02x" % b for b in data)


def translate(pattern: bytes) -> bytes:
    """Rewrite a PCRE pattern so the `regex` module gives it PCRE's meaning."""
    out = bytearray()
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x5C:  # backslash
            i = _escape(pattern, i, out, inside=False)
        elif c == 0x5B:  # [ … ]
            i = _char_class(pattern, i, out)
        elif c == 0x7B:  # {
            m = _QUANT.match(pattern, i)
            if m:
                if any(int(x) > 65535 for x in re.findall(rb"\d+", m.group())):
                    raise PatternSyntaxError(
                        "number too big in {} quantifier (PCRE's limit: 65535)"
                    )
                out += m.group()
                i = m.end()
            else:
                out += b"\\{"
                i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _escape(p: bytes, i: int, out: bytearray, *, inside: bool) -> int:
    if i + 1 >= len(p):
        raise PatternSyntaxError("pattern ends with a backslash")
    c = p[i + 1]
    if c == ord("Q"):  # \Q…\E quotes everything up to \E (or the end)
        end = p.find(b"\\E", i + 2)
        body = p[i + 2 :] if end < 0 else p[i + 2 : end]
        out += _literal(body)
        return len(p) if end < 0 else end + 2
    if c == ord("E"):  # a stray \E is ignored by PCRE
        return i + 2
    if c in (ord("x"), ord("o"), ord("p"), ord("P"), ord("g"), ord("k"), ord("N")) and (
        i + 2 < len(p) and p[i + 2] in b"{<'"
    ):
        close = {ord("{"): b"}", ord("<"): b">", ord("'"): b"'"}[p[i + 2]]
        end = p.find(close, i + 3)
        if end < 0:
            raise PatternSyntaxError(f"unterminated \\{chr(c)} escape")
        if c in (ord("o"), ord("x")) and p[i + 2] == ord("{"):  # \o{octal} \x{hex}
            digits = p[i + 3 : end].strip()
            try:
                value = int(digits or b"0", 8 if c == ord("o") else 16)
            except ValueError:
                raise PatternSyntaxError(f"bad \\{chr(c)}{{…}} escape") from None
            if value > 0xFF:  # nmap's PCRE works on bytes (no UTF mode)
                raise PatternSyntaxError(f"character value in \\{chr(c)}{{…}} is too large")
            out += b"\\x%02x" % value
        elif c == ord("g") and p[i + 2] == ord("{") and p[i + 3 : end].isdigit():
            out += b"(?:\\" + p[i + 3 : end] + b")"
        else:
            out += p[i : end + 1]
        return end + 1
    if c == ord("c") and i + 2 < len(p):  # \cX control character
        ch = p[i + 2] - 32 if 0x61 <= p[i + 2] <= 0x7A else p[i + 2]
        out += b"\\x%02x" % (ch ^ 0x40)
        return i + 3
    if c == ord("x"):  # PCRE reads up to two hex digits: \x4 is \x04, a bare \x is NUL
        j = i + 2
        while j < len(p) and j < i + 4 and p[j] in _HEXDIGITS:
            j += 1
        out += b"\\x%02x" % int(p[i + 2 : j] or b"0", 16)
        return j
    table = _SIMPLE_INSIDE if inside else _SIMPLE_OUTSIDE
    if c in table:
        out += table[c]
        return i + 2
    if not inside and c == ord("N"):
        out += b"[^\\n]"
        return i + 2
    out += p[i : i + 2]
    return i + 2


def _char_class(p: bytes, i: int, out: bytearray) -> int:
    out.append(p[i])
    i += 1
    n = len(p)
    if i < n and p[i] == ord("^"):
        out.append(p[i])
        i += 1
    if i < n and p[i] == ord("]"):  # a leading ] is a literal
        out += b"\\]"
        i += 1
    while i < n:
        c = p[i]
        if c == ord("]"):
            out.append(c)
            return i + 1
        if c == 0x5C:
            i = _escape(p, i, out, inside=True)
        elif c == ord("[") and p[i + 1 : i + 2] == b":":
            end = p.find(b":]", i + 2)
            if end < 0:
                out += b"\\["
                i += 1
            else:
                out += p[i : end + 2]
                i = end + 2
        elif c == ord("["):  # a literal in PCRE; never a nested set
            out += b"\\["
            i += 1
        elif c in b"&|~" and p[i + 1 : i + 2] == bytes([c]):
            # `&&` `||` `~~` are set operators in regex's V1 only; escape to be sure
            out += b"\\" + bytes([c])
            i += 1
        else:
            out.append(c)
            i += 1
    raise PatternSyntaxError("missing terminating ] for character class")


def parse_info(translated: bytes, flags: str = "") -> tuple[int, int] | None:
    """(shortest match length, number of groups) of a translated pattern, from the stdlib
    parser's tree; None when that parser cannot read it (it is stricter than PCRE in places)."""
    re_flags = (re.IGNORECASE if "i" in flags else 0) | (re.DOTALL if "s" in flags else 0)
    try:
        tree = _sre_parse.parse(translated.decode("latin-1"), re_flags)
        return int(tree.getwidth()[0]), int(tree.state.groups) - 1
    except Exception:
        return None


def min_width(translated: bytes, flags: str = "") -> int | None:
    """Shortest match length of a translated pattern, or None when it cannot be computed."""
    info = parse_info(translated, flags)
    return None if info is None else info[0]


# --- static facts used to skip work: anchored literal prefixes, backtracking-safe shapes ---
_META = frozenset(b"\\^$.[|()?*+{")
_SIMPLE_ESC = {ord("r"): 13, ord("n"): 10, ord("t"): 9, ord("f"): 12, ord("a"): 7, ord("e"): 27}
_OCT = frozenset(b"01234567")


def _top_level_alternation(p: bytes) -> bool:
    depth, i, n = 0, 0, len(p)
    while i < n:
        c = p[i]
        if c == 0x5C:
            i += 2
            continue
        if c == ord("["):
            i += 1
            if i < n and p[i] == ord("^"):
                i += 1
            if i < n and p[i] == ord("]"):
                i += 1
            while i < n and p[i] != ord("]"):
                i += 2 if p[i] == 0x5C else 1
        elif c == ord("("):
            depth += 1
        elif c == ord(")"):
            depth -= 1
        elif c == ord("|") and depth == 0:
            return True
        i += 1
    return False


def _atom(p: bytes, i: int) -> tuple[int | None, int]:
    """The literal byte at p[i] (None if it is not a plain literal) and the index after it."""
    c = p[i]
    if c not in _META:
        return c, i + 1
    if c != 0x5C or i + 1 >= len(p):
        return None, i
    e = p[i + 1]
    if e == ord("x"):
        hh = p[i + 2 : i + 4]
        if len(hh) == 2 and all(h in b"0123456789abcdefABCDEF" for h in hh):
            return int(hh, 16), i + 4
        return None, i
    if e == ord("0"):  # \0 plus up to two more octal digits, as PCRE reads it
        j = i + 2
        while j < len(p) and j < i + 4 and p[j] in _OCT:
            j += 1
        return int(p[i + 1 : j], 8), j
    if e in _SIMPLE_ESC:
        return _SIMPLE_ESC[e], i + 2
    if not (0x30 <= e <= 0x39 or 0x41 <= e <= 0x5A or 0x61 <= e <= 0x7A) and e < 0x80:
        return e, i + 2  # an escaped punctuation character is itself
    return None, i


def literal_prefix(pattern: bytes) -> bytes:
    """Bytes every match must start with at offset 0 (b"" when there is no such prefix).

    Only for patterns anchored with a leading `^` and no top-level alternation; with the `i`
    option callers compare ASCII-lower-cased (PCRE folds ASCII letters only).
    """
    if not pattern.startswith(b"^") or _top_level_alternation(pattern):
        return b""
    out = bytearray()
    i, n = 1, len(pattern)
    while i < n:
        b, j = _atom(pattern, i)
        if b is None:
            break
        nxt = pattern[j : j + 1]
        if nxt in (b"?", b"*", b"{"):
            break
        out.append(b)
        if nxt == b"+":
            break
        i = j
    return bytes(out)


_BRACE = re.compile(rb"\{(\d+)(,(\d*))?\}")
_LINEAR_BUDGET = 1 << 18  # backtracking paths allowed: ~ a few ms on a 4 KB response


def is_linear(pattern: bytes) -> bool:
    """True for shapes that cannot backtrack badly, so they may run without the per-search
    timeout (which costs more than the search itself).

    Anchored at the start (one starting position), no top-level alternation, no
    back-references or lookarounds, no quantified group; and the product of the quantifiers'
    choices (unbounded = 4096, the response size cap; `{n,m}` = m-n+1; `?` = 2) stays under
    a budget of 2**18 paths.
    """
    if not pattern.startswith(b"^") or _top_level_alternation(pattern):
        return False
    paths = 1
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x5C:
            e = pattern[i + 1 : i + 2]
            if e and e in b"123456789gkQEXR":
                return False
            i += 2
            continue
        if c == ord("["):
            i += 1
            if i < n and pattern[i] == ord("^"):
                i += 1
            if i < n and pattern[i] == ord("]"):
                i += 1
            while i < n and pattern[i] != ord("]"):
                i += 2 if pattern[i] == 0x5C else 1
            i += 1
            continue
        if c == ord("(") and pattern[i + 1 : i + 2] == b"?":
            if pattern[i + 2 : i + 3] in (b"=", b"!", b"<", b"P", b"(", b"R", b"&", b"|", b"0"):
                return False
        elif c == ord(")") and pattern[i + 1 : i + 2] in (b"*", b"+", b"?", b"{"):
            return False
        elif c in (ord("*"), ord("+")):
            paths *= 4096
        elif c == ord("?") and pattern[i - 1 : i] not in (b"(", b"*", b"+", b"?", b"}"):
            paths *= 2
        elif c == ord("{"):
            m = _BRACE.match(pattern, i)
            if m:
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else 4096)
                paths *= max(1, hi - lo + 1)
                i = m.end()
                continue
        if paths > _LINEAR_BUDGET:
            return False
        i += 1
    return paths <= _LINEAR_BUDGET
