"""Record real nmap -sV runs against small Python servers on 127.0.0.1, for tests that take
their expected values from nmap (tests/data/nmap/, see its README.md).

    python tests/record_nmap.py fields        # over-long version fields and CPEs
    python tests/record_nmap.py fingerprints  # SF- fingerprints of unknown services

`fields`: one server per (field, length) sends "FIELD PAYLOAD\\r\\n" as its banner; a probe
file of our own (tests/data/nmap/field-limits/nmap-service-probes, read by nmap through
--datadir) has one NULL-probe line per field putting the payload into that field. Lengths go
around nmap's limits, so the recorded XML shows which values nmap keeps.
`fingerprints`: servers nothing in nmap's own database recognises (binary bytes, a banner
longer than nmap prints, one answering only to requests), scanned with nmap's own database
at the default intensity; nmap prints their SF- fingerprints (normal output and XML). Every
reply a server sent is logged, so a test knows the bytes behind each %r record.

Each run writes the nmap command, nmap's version, the servers' ports and payloads (hex)
to a JSON file next to nmap's outputs. Only loopback is scanned.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "nmap"
HOST = "127.0.0.1"

# (field, template letter, lengths around nmap's limit); payload bytes "c" (printable) or
# "\x01" (non-printable: how nmap shows and counts it)
FIELDS = [
    ("product", "p", [77, 78, 79, 80]),
    ("version", "v", [77, 78, 79, 80]),
    ("hostname", "h", [77, 78, 79, 80]),
    ("extrainfo", "i", [253, 254, 255, 256]),
    ("ostype", "o", [29, 30, 31, 32]),
    ("devicetype", "d", [29, 30, 31, 32]),
    ("cpe", "cpe", [68, 69, 70, 71]),  # payload length; the CPE is "cpe:/a:x:" + payload
    ("nonprintable", "p", [30, 78, 79]),  # product of \x01 bytes
]


class Server:
    """A TCP server on a free port of 127.0.0.1: `reply(received)` gives what to send (None:
    nothing); received is b"" right after accept. Every reply sent is logged."""

    def __init__(self, reply: Callable[[bytes], bytes | None]) -> None:
        self.reply = reply
        self.sent: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket, data: bytes | None) -> None:
        if data:
            conn.sendall(data)
            self.sent.append(data)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(15)
        with conn:
            try:
                self._send(conn, self.reply(b""))
                while chunk := conn.recv(4096):
                    self._send(conn, self.reply(chunk))
            except OSError:
                return


def _nmap(args: list[str], out: Path) -> dict[str, object]:
    nmap = shutil.which("nmap")
    if nmap is None:
        sys.exit("nmap is not installed (make apt)")
    version = subprocess.run([nmap, "--version"], capture_output=True, text=True).stdout
    cmd = [nmap, "-n", "-Pn", "-sT", "-sV", *args, "-oN", str(out) + ".nmap",
           "-oX", str(out) + ".xml", HOST]
    subprocess.run(cmd, check=True, capture_output=True)
    return {"nmap_version": version.splitlines()[0],
            "command": " ".join(cmd).replace(str(DATA), "tests/data/nmap")}


def record_fields() -> None:
    datadir = DATA / "field-limits"
    datadir.mkdir(parents=True, exist_ok=True)
    lines = ["# servprobe test probe file (tests/record_nmap.py): one NULL-probe line per field",
             "Probe TCP NULL q||", "totalwaitms 6000", "tcpwrappedms 3000"]
    for field, letter, _ in FIELDS:
        if letter == "cpe":
            lines.append(f"match lim-{field} m|^{field} (c*)\\r\\n$| p/x/ cpe:/a:x:$1/")
        else:
            fixed = "" if letter == "p" else " p/x/"
            lines.append(f"match lim-{field} m|^{field} ([c\\x01]*)\\r\\n$|{fixed} {letter}/$1/")
    (datadir / "nmap-service-probes").write_text("\n".join(lines) + "\n")
    servers = []
    for field, _, lengths in FIELDS:
        byte = b"\x01" if field == "nonprintable" else b"c"
        for n in lengths:
            banner = field.encode() + b" " + byte * n + b"\r\n"
            srv = Server(lambda got, banner=banner: banner if not got else None)
            servers.append({"field": field, "length": n, "port": srv.port, "banner": banner.hex(),
                            "_srv": srv})
    ports = ",".join(str(s["port"]) for s in servers)
    meta = _nmap(["--datadir", str(datadir), "-p", ports], DATA / "field-limits")
    meta["servers"] = [{k: v for k, v in s.items() if k != "_srv"} for s in servers]
    (DATA / "field-limits.json").write_text(json.dumps(meta, indent=1) + "\n")


def record_fingerprints() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    binary = b"zq-servprobe\x00" + bytes(range(256)) + b"\x001\x00a end\r\n"
    long = b"zq-servprobe long banner " + b"0123456789abcdefghij-" * 70 + b"\r\n"

    def echo(got: bytes) -> bytes | None:
        return b"zq-echo[" + got[:40] + b"]\r\n" if got else None

    kinds = {
        "binary": Server(lambda got: binary if not got else None),
        "long": Server(lambda got: long if not got else None),
        "echo": Server(echo),
    }
    ports = ",".join(str(s.port) for s in kinds.values())
    meta = _nmap(["-p", ports], DATA / "fingerprints")
    meta["servers"] = [{"kind": k, "port": s.port, "sent": [x.hex() for x in s.sent]}
                       for k, s in kinds.items()]
    (DATA / "fingerprints.json").write_text(json.dumps(meta, indent=1) + "\n")


def recorded(name: str) -> tuple[dict[str, object], str, str]:
    """A recorded run: (its JSON, nmap's normal output, nmap's XML output)."""
    meta = json.loads((DATA / f"{name}.json").read_text())
    return meta, (DATA / f"{name}.nmap").read_text(), (DATA / f"{name}.xml").read_text()


def printed_fingerprints(normal: str) -> list[str]:
    """The SF- fingerprints exactly as nmap printed them in normal output (lines joined by
    newlines, SF: prefixes kept)."""
    blocks: list[list[str]] = []
    for line in normal.splitlines():
        if line.startswith("SF-Port"):
            blocks.append([line])
        elif line.startswith("SF:") and blocks:
            blocks[-1].append(line)
    return ["\n".join(b) for b in blocks]


if __name__ == "__main__":
    what = sys.argv[1:] or ["fields", "fingerprints"]
    for w in what:
        {"fields": record_fields, "fingerprints": record_fingerprints}[w]()
