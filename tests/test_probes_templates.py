"""Version templates: $1-$9, $P, $SUBST, $I, CPE transformation, escaping, truncation."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import regex

from servprobe import load_db
from servprobe.probes.matcher import compile_pattern
from servprobe.probes.model import MatchLine, SourceRef, VersionTemplate
from servprobe.probes.templates import (
    TemplateError,
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


@pytest.mark.parametrize("template", ["a$ 5", "b$$", "c$Id", "d$", "e$1$", "$P (1)", "$p(1)"])
def test_stray_dollar_fails_the_field_like_nmap(template: str) -> None:
    with pytest.raises(TemplateError):
        substitute(template, m(rb"(x)", b"x"))


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
    # what nmap 7.93 prints (observed): lower case, whitespace "_", reserved bytes %XX,
    # ~ . - _ { } | ^ ` \\ kept, other non-printable bytes "."
    mm = m(rb"^(.*)$", b"Foo Bar:1/2?x%\t#[]@!$&'()*+,;=<>\"~.-_{}|^`\\\x01\xe9")
    assert substitute("cpe:/a:Vendor:$1", mm, cpe=True) == (
        b"cpe:/a:Vendor:foo_bar%3A1%2F2%3Fx%25_%23%5B%5D%40%21%24%26%27%28%29%2A%2B%2C%3B%3D"
        b"%3C%3E%22~.-_{}|^`\\.."
    )


def test_one_cpe_per_part_last_wins_failure_clears() -> None:
    from servprobe.probes.templates import cpe_list

    mm = m(rb"^(\S+) (\S+)$", b"x " + b"b" * 100)
    got = cpe_list(
        ("cpe:/a:ok1", "cpe:/o:ok2:$1", "cpe:/a:long:$2", "cpe:/h:after:$1", "cpe:/x:other"), mm
    )
    assert got == ("cpe:/h:after:x", "cpe:/o:ok2:x")  # a: cleared by the too-long one
    mm = m(rb"^(\S+) (\S+)$", b"one two")
    got = cpe_list(("cpe:/a:first:$1", "cpe:/o:os1:$1", "cpe:/a:second:$2", "cpe:/o:os2:$2"), mm)
    assert got == ("cpe:/a:second:two", "cpe:/o:os2:two")
    assert cpe_list(("cpe:/a:x:$9",), mm) == ()
    # 78 characters is the longest CPE nmap keeps
    assert cpe_list(("cpe:/a:x:" + "a" * 69,), mm) == ("cpe:/a:x:" + "a" * 69,)
    assert cpe_list(("cpe:/a:x:" + "a" * 70,), mm) == ()


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
    data = b"Pro\x1b[31mduct 9.9\\1 " + b"i" * 30
    ident = identify(ml, m(ml.pattern, data))
    assert ident.service == "svc" and not ident.soft
    assert ident.product == "Pro\\x1b[31mduct"
    assert ident.version == "9.9\\\\1"
    assert ident.info == "i" * 30 and ident.ostype == "i" * 30
    assert ident.hostname == "h-9.9\\\\1" and ident.devicetype == "fixed"
    assert ident.cpes == ("cpe:/a:x:pro.%5B31mduct:9.9\\1", "cpe:/o:linux:linux_kernel")
    assert str(ident.source) == "t.probes:7" and ident.probe == "NULL"
    assert all(s.isprintable() for s in (ident.product, ident.version, *ident.cpes))


# --- field and CPE length limits: what nmap 7.93 really kept (tests/data/nmap/README.md) ---

NMAP_DATA = Path(__file__).resolve().parent / "data" / "nmap"
FIELD_RUN = json.loads((NMAP_DATA / "field-limits.json").read_text())
_XML_NAME = {"extrainfo": "info", "nonprintable": "product"}  # XML attribute -> our field


def _nmap_services() -> dict[int, ET.Element]:
    root = ET.parse(NMAP_DATA / "field-limits.xml").getroot()
    return {int(p.get("portid")): p.find("service") for p in root.iter("port")}


@pytest.mark.parametrize("server", FIELD_RUN["servers"],
                         ids=lambda s: f"{s['field']}-{s['length']}")
def test_field_and_cpe_limits_as_nmap_recorded(server: dict) -> None:
    """Our identify() on the banner nmap saw, with the probe file nmap read, keeps exactly the
    fields nmap kept (nmap shows non-printable bytes as '.', we escape them as \\xHH).
    Fails (checked) with LIMITS["product"] 81 or CPE_LIMIT 79 in probes/templates.py."""
    db = load_db(str(NMAP_DATA / "field-limits" / "nmap-service-probes"))
    (ml,) = [x for x in db.probes[0].matches if x.service == f"lim-{server['field']}"]
    banner = bytes.fromhex(server["banner"])
    found = compile_pattern(ml.pattern, ml.flags).search(banner)
    assert found is not None
    ident = identify(ml, found)
    theirs = _nmap_services()[server["port"]]
    assert theirs.get("name") == ml.service
    for attr in ("product", "version", "extrainfo", "hostname", "ostype", "devicetype"):
        ours = getattr(ident, _XML_NAME.get(attr, attr))
        if ours is not None:
            ours = ours.replace("\\x01", ".")
        assert ours == theirs.get(attr), attr
    assert list(ident.cpes) == [c.text for c in theirs.iter("cpe")]


def test_failed_field_is_absent_others_stay() -> None:
    ml = line(rb"^(a)", product="p$1", version="$5", info="")
    ident = identify(ml, m(ml.pattern, b"a"))
    assert ident.product == "pa" and ident.version is None and ident.info is None
