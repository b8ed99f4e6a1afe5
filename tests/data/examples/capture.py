"""Capture example responses for the bundled database from a real daemon on loopback.

Sends every probe of the database (or the ones named) to HOST:PORT, one fresh connection per
probe (UDP: one datagram), and prints example entries (the format of
servprobe.probes.examples) for each `#@id` line that identified a response, with the fields
the database reports now -- review them against the daemon's real version before saving.

    python tests/data/examples/capture.py 127.0.0.1 6379 \\
        --source "real capture: redis-server 5:7.0.15-1~deb12u1 (Debian 12), 2026-11-24"

Only loopback addresses are accepted.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import ssl
import sys
import time

import servprobe
from servprobe.probes.examples import escape, line_ids
from servprobe.probes.model import Identification


def _read(sock: socket.socket, wait: float, idle: float) -> bytes:
    data = b""
    start = last = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < wait and len(data) < 16384:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            if data and time.monotonic() - last > idle:
                break
            continue
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
        last = time.monotonic()
    return data


def send_tcp(host: str, port: int, payload: bytes, tls: bool, wait: float) -> bytes:
    sock = socket.create_connection((host, port), timeout=5)
    try:
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        if payload:
            sock.sendall(payload)
        return _read(sock, wait, 1.0)
    finally:
        sock.close()


def send_udp(host: str, port: int, payload: bytes, wait: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait)
        sock.sendto(payload, (host, port))
        try:
            return sock.recvfrom(65536)[0]
        except (TimeoutError, ConnectionRefusedError):
            return b""


def to_example(ident: Identification, tag: str, probe: str, proto: str,
               data: bytes, source: str) -> dict:
    """An example entry for `data` with the fields `ident` reports (to be reviewed)."""
    got = ident.as_dict()
    expect = {k: got[k] for k in ("service", "product", "version", "info", "hostname",
                                  "ostype", "devicetype") if got[k] is not None}
    if got["soft"]:
        expect["soft"] = True
    if got["cpes"]:
        expect["cpes"] = got["cpes"]
    return {"id": tag, "probe": probe, "proto": proto, "response": escape(data[:4096]),
            "expect": expect, "source": source}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--udp", action="store_true")
    ap.add_argument("--tls", action="store_true", help="wrap each TCP connection in TLS first")
    ap.add_argument("--probe", action="append", default=[], help="only this probe (repeatable)")
    ap.add_argument("--db", default="bundled")
    ap.add_argument("--source", required=True, help='e.g. "real capture: PACKAGE VERSION (Debian 12), DATE"')
    args = ap.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        ap.error("only loopback addresses may be probed")
    db = servprobe.load_db(args.db, prefilter=False)
    by_line = {line: tag for tag, line in line_ids(db.path).items()}
    proto = "udp" if args.udp else "tcp"
    chosen: dict[str, dict] = {}
    for probe in db.probes:
        if probe.proto != proto or (args.probe and probe.name not in args.probe):
            continue
        wait = 4.0 if probe.is_null else 3.0
        if proto == "udp":
            data = send_udp(args.host, args.port, probe.payload, wait)
        else:
            data = send_tcp(args.host, args.port, probe.payload, args.tls, wait)
        ident = db.match(probe.name, data, proto) if data else None
        if ident is None or ident.source is None or ident.source.line not in by_line:
            continue
        tag = by_line[ident.source.line]
        if tag in chosen:
            continue
        chosen[tag] = to_example(ident, tag, probe.name, proto, data, args.source)
    json.dump({"examples": list(chosen.values())}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
