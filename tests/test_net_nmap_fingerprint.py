"""Our SF- fingerprint against the one nmap -sV prints for the same loopback service.

The service answers every connection with the same odd bytes and then closes cleanly, so
nmap runs through its whole probe order in well under a second; the fingerprints must be
identical apart from the V= (program version) and Time= fields.
"""

from __future__ import annotations

import asyncio
import re
import subprocess

import pytest

from oddservers import OddServers
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import scan_services

NMAP_DB = "/usr/share/nmap/nmap-service-probes"

ODD = b"ZQX\x00\x01 hello \"q\" (1+2)*3 $^|?[]. \\ t\there\r\n\x007\x7f\xff%;,:=-_/@#&!~`'<>{}"


async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(ODD)
    await writer.drain()
    await asyncio.sleep(0.05)
    # read what the client sent before closing, so the close is a FIN, not a reset
    try:
        await asyncio.wait_for(reader.read(65536), 0.05)
    except TimeoutError:
        pass
    writer.close()


def normalize(fp: str) -> str:
    fp = fp.replace("\nSF:", "")
    fp = re.sub(r"V=[^%]*%", "V=%", fp)
    return re.sub(r"%Time=[0-9A-F]+", "%Time=", fp)


@pytest.mark.parametrize("sequential", [True, False])
def test_fingerprint_identical_to_nmap(sequential):
    import servprobe

    db = servprobe.load_db(NMAP_DB)
    with OddServers() as s:
        port = s.tcp(answer_and_close)
        out = subprocess.run(
            ["nmap", "-sV", "-Pn", "-n", "-p", str(port), "127.0.0.1"],
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout
        ours = scan_services(
            db, [ServiceTarget("127.0.0.1", port, "tcp")],
            EngineOptions(sequential=sequential, rpc_grind=False),
        )[0]
    theirs = "\n".join(line for line in out.splitlines() if line.startswith("SF"))
    assert theirs, out
    assert ours.fingerprint is not None
    assert normalize(ours.fingerprint) == normalize(theirs)
    # wrapped like nmap: 74-character lines, continuation lines start with SF:
    lines = ours.fingerprint.split("\n")
    assert all(len(line) == 74 for line in lines[:-1])
    assert all(line.startswith("SF:") for line in lines[1:])
