"""Record what nmap -sV really does against the scripted servers of tests/scripted_servers.py.

Writes tests/data/nmap-sequences.json, read by tests/test_engine_walk_nmap.py:
  sequences: for each behaviour, the port it listened on, the exact list of probes nmap sent
             (from `Service scan sending probe NAME to ADDR:PORT (tcp)` trace lines, in order)
             and nmap's SERVICE/VERSION line for the port;
  fingerprints: the `chatty` server scanned at --version-intensity 0 and 2: whether nmap
             printed an SF- fingerprint and which probes' responses it holds.
It also stores the exact commands and nmap's version line. Nothing here is copied from nmap:
it is nmap's observable behaviour on our own servers.

Usage (takes about 3 minutes: nmap waits every probe's full wait):
    .venv/bin/python tests/record_nmap_sequences.py
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripted_servers import BEHAVIOURS, ThreadedServer

OUT = Path(__file__).resolve().parent / "data" / "nmap-sequences.json"
SEND = re.compile(r"^Service scan sending probe (\S+) to 127\.0\.0\.1:(\d+) \((tcp|udp)\)")
PORT_LINE = re.compile(r"^(\d+)/(tcp|udp)\s+(\S+)\s+(\S+)\s*(.*)$")


def nmap(args: list[str]) -> tuple[str, str]:
    cmd = ["nmap", "-sV", "--version-trace", "-Pn", "-n", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return " ".join(cmd), out.stdout + out.stderr


def parse(text: str) -> tuple[dict[int, list[str]], dict[int, str], list[str]]:
    sent: dict[int, list[str]] = {}
    lines: dict[int, str] = {}
    fps: list[str] = []
    for line in text.splitlines():
        m = SEND.match(line)
        if m:
            sent.setdefault(int(m.group(2)), []).append(m.group(1))
            continue
        m = PORT_LINE.match(line)
        if m and m.group(3) == "open":
            lines[int(m.group(1))] = f"{m.group(4)} {m.group(5)}".strip()
        if line.startswith("SF-Port") or line.startswith("SF:"):
            fps.append(line)
    return sent, lines, fps


def main() -> None:
    version = subprocess.run(["nmap", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    record: dict = {"nmap": version, "sequences": {}, "fingerprints": {}}
    with contextlib.ExitStack() as stack:
        servers = {b: stack.enter_context(ThreadedServer(b)) for b in BEHAVIOURS}
        ports = ",".join(str(s.port) for s in servers.values())
        cmd, text = nmap(["-p", ports, "127.0.0.1"])
        sent, lines, _ = parse(text)
        record["sequences_command"] = cmd.replace(ports, "PORTS")
        for b, s in servers.items():
            record["sequences"][b] = {"port": s.port, "intensity": 7, "probes": sent.get(s.port, []),
                                      "nmap_line": lines.get(s.port, "")}
        chatty = servers["chatty"]
        for intensity in (0, 2):
            cmd, text = nmap(["--version-intensity", str(intensity), "-p", str(chatty.port), "127.0.0.1"])
            sent, lines, fps = parse(text)
            text = "".join(f[3:] if f.startswith("SF:") else f for f in fps)
            probes = re.findall(r"%r\(([^,]+),", text)
            record["fingerprints"][str(intensity)] = {
                "command": cmd.replace(str(chatty.port), "PORT"), "port": chatty.port,
                "probes_sent": sent.get(chatty.port, []), "nmap_line": lines.get(chatty.port, ""),
                "fingerprint": bool(fps), "fingerprint_probes": probes,
                "fingerprint_head": fps[0] if fps else "",
            }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
