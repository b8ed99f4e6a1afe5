"""Version templates: $1-$9, $P, $SUBST, $I, CPE transformation, escaping, truncation."""

from __future__ import annotations

import pytest
import regex

from servprobe.probes.model import MatchLine, SourceRef, VersionTemplate
from servprobe.probes.templates import (
    TemplateError,
    _clip,
    check_template,
    identify,
    substitute,
)


def m(pattern: bytes, data: bytes):
    found = regex.search(pattern, data, regex.DOTALL)
    assert found is not None
    return found


def line(pattern: bytes, **fields) -> MatchLine:
    cpes = tuple(fields.pop("cpes", ()))
    return MatchLine(
        service="svc",
        pattern=pattern,
        flags="s",
        soft=False,
        template=VersionTemplate(**fields, cpes=cpes),
        source=SourceRef("t.probes", 7),
        probe_name="NULL",
        index=0,
    )


def test_numbered_groups() -> None:
    mm = m(rb"^(\w+) (\d+)\.(\d+)", b"Server 2.7 ok")
    assert substitute("$1 v$2.$3", mm) == b"Server v2.7"
    assert substitute("no subst", mm) == b"no subst"


def test_unset_group_is_empty() -> None:
    mm = m(rb"^a(x)?(b)", b"ab")
    assert substitute("[$1][$2]", mm) == b"[][b]"


@pytest.mark.parametrize("template", ["$4", "$0", "$P(5)", '$SUBST(4,"a","b")'])
def test_impossible_substitution_raises(template: str) -> None:
    with pytest.raises(TemplateError):
        substitute(template, m(rb"(a)(b)(c)", b"abc"))


def test_literal_dollars_stay() -> None:
    mm = m(rb"(x)", b"x")
    assert substitute("$ 5 cost $$ and $Id: $1", mm) == b"$ 5 cost $$ and $Id: x"


def test_printable_only() -> None:
    mm = m(rb"^(.*)$", b"W\x00O\x00R\x00K\x00G\x00R\x00P\x00\x7f\xff")
    assert substitute("$P(1)", mm) == b"WORKGRP"


def test_subst() -> None:
    mm = m(rb"v(\S+)", b"v1_2_3")
    assert substitute('$SUBST(1,"_",".")', mm) == b"1.2.3"
    assert substitute('$SUBST(1, "_", "")', mm) == b"123"
    assert substitute('$SUBST(1,"","x")', mm) == b"1_2_3"


@pytest.mark.parametrize(
    ("data", "order", "value"),
    [
        (b"\x01\x02", ">", b"258"),
        (b"\x01\x02", "<", b"513"),
        (b"\xff" * 8, ">", b"18446744073709551615"),
        (b"\x00", ">", b"0"),
    ],
)
def test_integer(data: bytes, order: str, value: bytes) -> None:
    mm = m(rb"^(.+)$", data)
    assert substitute(f'$I(1,"{order}")', mm) == value


def test_integer_longer_than_8_bytes_fails() -> None:
    with pytest.raises(TemplateError):
        substitute('$I(1,">")', m(rb"^(.+)$", b"\x01" * 9))
    with pytest.raises(TemplateError):
        substitute('$I(1,"=")', m(rb"^(.+)$", b"\x01"))


def test_cpe_transform_applies_to_substituted_text_only() -> None:
    mm = m(rb"^(.*)$", b"Foo Bar:1/2?x%")
    assert substitute("cpe:/a:Vendor:$1", mm, cpe=True) == b"cpe:/a:Vendor:foo_bar%3a1%2f2%3fx%25"


def test_check_template() -> None:
    assert check_template("$1 $P(2)", 2) is None
    assert "only 1 groups" in check_template("$2", 1)
    assert check_template("$FOO(1)", 3) is not None
    assert check_template('$SUBST(1,"a")', 3) is not None


def test_identify_escapes_and_truncates() -> None:
    ml = line(
        rb"^(\S+) (\S+) (.*)$",
        product="$1",
        version="$2",
        info="$3",
        hostname="h-$2",
        ostype="$3",
        devicetype="fixed",
        cpes=["cpe:/a:x:$1:$2", "cpe:/o:linux:linux_kernel"],
    )
    data = b"Pro\x1b[31mduct 9.9\\1 " + b"i" * 300
    ident = identify(ml, m(ml.pattern, data))
    assert ident.service == "svc" and not ident.soft
    assert ident.product == "Pro\\x1b[31mduct"
    assert ident.version == "9.9\\\\1"
    assert ident.info == "i" * 256 and ident.ostype == "i" * 32
    assert ident.hostname == "h-9.9\\\\1" and ident.devicetype == "fixed"
    assert ident.cpes == ("cpe:/a:x:pro%1b%5b31mduct:9.9%5c1", "cpe:/o:linux:linux_kernel")
    assert str(ident.source) == "t.probes:7" and ident.probe == "NULL"
    assert all(s.isprintable() for s in (ident.product, ident.version, *ident.cpes))


def test_failed_field_is_absent_others_stay() -> None:
    ml = line(rb"^(a)", product="p$1", version="$5", info="")
    ident = identify(ml, m(ml.pattern, b"a"))
    assert ident.product == "pa" and ident.version is None and ident.info is None


def test_clip_never_splits_an_escape() -> None:
    assert _clip("ab\\x00", 4) == "ab"
    assert _clip("ab\\\\c", 3) == "ab"
    assert _clip("abcdef", 4) == "abcd"
    assert _clip("\\x41\\x42", 8) == "\\x41\\x42"
