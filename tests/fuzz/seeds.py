"""Seed corpora for the fuzz targets, written at run time into a directory you choose.

probe_parser seeds are 12-line windows of nmap's installed probe file (read at run time,
never stored in the repo) and of our bundled one; templates seeds are the version fields of
those files; match seeds are H4's captured daemon responses (tests/data/captures), prefixed
with a probe selector byte.

    python tests/fuzz/seeds.py TARGET DIR
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE_FILES = [Path("/usr/share/nmap/nmap-service-probes"),
               ROOT / "src" / "servprobe" / "data" / "servprobe-service-probes"]
CAPTURES = ROOT / "tests" / "data" / "captures"


def _probe_lines() -> list[bytes]:
    lines: list[bytes] = []
    for f in PROBE_FILES:
        if f.exists():
            lines += f.read_bytes().splitlines(keepends=True)
    return lines


def seeds(target: str, limit: int = 400) -> list[bytes]:
    out: list[bytes] = []
    if target == "probe_parser":
        lines = _probe_lines()
        probes = [i for i, ln in enumerate(lines) if ln.startswith(b"Probe ")]
        for i in probes:
            out.append(b"".join(lines[i : i + 12]))
        step = max(1, len(lines) // limit)
        for i in range(0, len(lines), step):
            out.append(b"".join(lines[i : i + 12]))
    elif target == "templates":
        field = re.compile(rb" ([pvihod]|cpe:)([|/=%@])(.*?)\2")
        for ln in _probe_lines():
            if ln.startswith((b"match ", b"softmatch ")):
                for m in field.finditer(ln):
                    if b"$" in m.group(3):
                        out.append(m.group(3) + b"\xffAbc 1.2.3 x\x00\x01\xfe")
    elif target in ("match", "match_regex"):
        for f in sorted(CAPTURES.rglob("*.bin")):
            data = f.read_bytes()[:4096]
            if data:
                out.append(bytes([hash(f.name) % 256]) + data)
    elif target == "engine":
        # choices bytes, then server script bytes: a few hand-made shapes plus noise
        import random

        rng = random.Random(5)
        out = [bytes([1, 0, 7, 1, 0, 0, 16, 2, 1, 5]) + b"\x01\x05" * 20,
               bytes([1, 2, 9, 1, 1, 0, 16, 0]) + b"\x02\x03\x08" * 10]
        out += [bytes(rng.getrandbits(8) for _ in range(120)) for _ in range(30)]
    elif target == "portspec":
        out = [b"22", b"1-1000", b"T:22,U:53", b"-", b"http,https", b"[ssh]", b"U:1-", b"-80",
               b"S:1,T:2-3", b"ht*,do?ain"]
    elif target == "targets":
        # first byte: bit 0 selects -6
        out = [b"\x00127.0.0.1", b"\x00127.0.0.0/30", b"\x00127.0.0-1.1-3", b"\x01::1",
               b"\x00localhost", b"\x01[::1]/126", b"\x0010.0.*.1,3,5-7", b"\x00host/28"]
    elif target == "fpreader":
        out = [b'SF-Port9999-TCP:V=7.93%I=7%D=11/24%Time=6743B2F0%P=x86_64-pc-linux-gnu%r(NULL,'
               b'5,"hello");']
    uniq = {hashlib.sha1(s).hexdigest(): s for s in out}
    return list(uniq.values())[: max(limit, 50)]


def write(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    items = seeds(target)
    for s in items:
        (directory / hashlib.sha1(s).hexdigest()).write_bytes(s)
    return len(items)


if __name__ == "__main__":
    print(write(sys.argv[1], Path(sys.argv[2])))
