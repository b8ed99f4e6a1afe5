"""fingerprint-strings against nmap's own script, on a small odd loopback server whose banner
mixes readable runs, short runs, tabs and binary bytes (no probe-file line knows it): the
strings servprobe shows equal the strings nmap -sV shows. Also the rules on hand-made
fingerprints: grouping, sorting, the 4-character minimum, unreadable fingerprints."""

from __future__ import annotations

import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import servprobe
from daemons import HOST, servprobe_scan
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.post import fpstrings

BANNER = b"\x00\x07odd-service 4.2 ready\r\n\x01\x02ab\xffkey:\tvalue  here\x00xyz\x10" + b"\x80" * 5 + b"tail-end"


@pytest.fixture(scope="module")
def odd_server() -> Iterator[int]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST, 0))
    srv.listen(64)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(BANNER)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


def test_strings_equal_nmap(odd_server: int, tmp_path: Path) -> None:
    out = tmp_path / "nmap.xml"
    nm = subprocess.run(["nmap", "-sV", "-Pn", "--version-intensity", "0", "-p", str(odd_server),
                         "--script", "fingerprint-strings", "-oX", str(out), HOST],
                        capture_output=True, text=True, timeout=300)
    assert nm.returncode == 0, nm.stderr
    script = next(ET.parse(out).getroot().iter("script"))
    theirs = {e.text for e in script.iter("elem")}
    (r,) = servprobe_scan(servprobe.load_db(), [ServiceTarget(HOST, odd_server, "tcp")],
                          EngineOptions(intensity=0), 60.0)
    (sc,) = [s for s in r.scripts if s.id == "fingerprint-strings"]
    assert set(sc.elements.values()) == theirs
    assert "NULL" in next(iter(sc.elements))


def test_grouping_and_minimum() -> None:
    fp = ('SF-Port9-TCP:V=0.1%I=7%r(NULL,8,"abc\\0defgh")%r(GetRequest,8,"abc\\0defgh")'
          '%r(Help,3,"xyz")%r(DNS,6,"hello\\x01")')
    assert fpstrings.readable(fp) == {"DNS": "\n    hello", "GetRequest, NULL": "\n    defgh"}
    assert fpstrings.readable("not a fingerprint") == {}
    assert fpstrings.strings(b"\x00  \t \x00") == ""
