"""Capture what real daemons answer to every probe of nmap's database.

Owns the corpus in tests/data/captures/: for each daemon endpoint of tests/daemons.py and each
probe payload of /usr/share/nmap/nmap-service-probes (read at run time, never copied), the raw
bytes a scanner receives, as <endpoint>/<layer>-<probe>.bin where layer is `tcp`, `udp`, or
`ssl` (the probe sent inside a TLS session, for TLS ports). index.json lists every exchange,
answered or not, with the daemon's Debian package and version; SOURCES.md summarises it.

Like nmap, every non-NULL probe goes on a fresh connection and is sent at once, so a banner
service's answer holds its banner followed by its reply. Reading stops at 4096 bytes (nmap's
limit), on close, or after a quiet gap once data has arrived.

Usage: python tests/capture_responses.py [--out DIR] [--only NAME,...] [--wait SECONDS]
       [--nmap-outputs]
(root: the daemons run from Debian's packages; see tests/daemons.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import shutil
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import daemons  # tests/ is not a package: runnable as a script

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
OUT = Path(__file__).resolve().parent / "data" / "captures"
MAX_READ = 4096
QUIET_GAP = 0.4  # seconds of silence after data that end a read
_ESCAPES = {"0": 0, "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    proto: str  # "tcp" | "udp"
    name: str
    payload: bytes
    line: int


def unescape(text: str) -> bytes:
    """Decode a probe string's C-like escapes (\\xHH, \\0, \\r, \\n ...) to bytes."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out += c.encode("latin-1")
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "x" and i + 3 < len(text):
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            out += nxt.encode("latin-1")
            i += 2
    return bytes(out)


def read_probes(path: Path = NMAP_DB) -> list[ProbeSpec]:
    """The Probe directives of an nmap-style file: protocol, name and payload."""
    probes = []
    for lineno, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.startswith("Probe "):
            continue
        _, proto, name, rest = line.split(" ", 3)
        if not rest.startswith("q"):
            raise ValueError(f"{path}:{lineno}: unexpected probe string")
        delim = rest[1]
        end = rest.index(delim, 2)
        probes.append(ProbeSpec(proto.lower(), name, unescape(rest[2:end]), lineno))
    return probes


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _read_all(reader: asyncio.StreamReader, wait: float) -> tuple[bytes, bool]:
    """Read until MAX_READ bytes, EOF, `wait` seconds, or a quiet gap after data."""
    data = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while len(data) < MAX_READ:
        left = deadline - loop.time()
        if left <= 0:
            return data, False
        timeout = min(left, QUIET_GAP) if data else left
        try:
            chunk = await asyncio.wait_for(reader.read(MAX_READ - len(data)), timeout)
        except TimeoutError:
            if data:
                return data, False
            continue
        except (ConnectionError, ssl.SSLError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


async def capture_tcp(host: str, port: int, probe: ProbeSpec, tls: bool, wait: float) -> dict:
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=_tls_context() if tls else None,
                                    server_hostname=None if not tls else ""), 8.0)
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return {"error": f"connect: {e!r}", "data": b"", "closed": True, "elapsed": 0.0}
    try:
        if probe.payload:
            writer.write(probe.payload)
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
        data, closed = await _read_all(reader, wait)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
    return {"data": data, "closed": closed, "elapsed": time.monotonic() - t0}


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[bytes] = []
        self.event = asyncio.Event()
        self.refused = False

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.packets.append(data)
        self.event.set()

    def error_received(self, exc: Exception) -> None:
        self.refused = True
        self.event.set()


async def capture_udp(host: str, port: int, probe: ProbeSpec, wait: float) -> dict:
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(host, port))
    try:
        transport.sendto(probe.payload)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proto.event.wait(), wait)
        await asyncio.sleep(0.1)  # late extra datagrams
    finally:
        transport.close()
    # nmap matches the first datagram it reads
    data = proto.packets[0] if proto.packets else b""
    return {"data": data[:MAX_READ], "closed": proto.refused, "elapsed": time.monotonic() - t0,
            "datagrams": len(proto.packets)}


async def capture_all(running: dict[str, daemons.Daemon], probes: list[ProbeSpec], out: Path,
                      wait: float, parallel: int) -> list[dict]:
    sem = asyncio.Semaphore(parallel)
    jobs = []
    for dmn, ep in daemons.endpoints(running):
        layers = ["udp"] if ep.proto == "udp" else (["tcp", "ssl"] if ep.tls else ["tcp"])
        for layer in layers:
            for probe in probes:
                if probe.proto != ("udp" if layer == "udp" else "tcp"):
                    continue
                jobs.append((dmn, ep, layer, probe))

    async def one(dmn: daemons.Daemon, ep: daemons.Endpoint, layer: str, probe: ProbeSpec) -> dict:
        async with sem:
            if layer == "udp":
                r = await capture_udp(dmn.host, ep.port, probe, wait)
            else:
                r = await capture_tcp(dmn.host, ep.port, probe, layer == "ssl", wait)
        data: bytes = r.pop("data")
        rec = {"endpoint": ep.name, "daemon": dmn.name, "layer": layer, "probe": probe.name,
               "probe_line": probe.line, "bytes": len(data), "closed": r["closed"],
               "elapsed_ms": round(r["elapsed"] * 1000)}
        if "error" in r:
            rec["error"] = r["error"]
        if data:
            rel = Path(ep.name) / f"{layer}-{probe.name}.bin"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
            rec["file"] = str(rel)
            rec["sha256"] = hashlib.sha256(data).hexdigest()
        return rec

    return list(await asyncio.gather(*(one(*j) for j in jobs)))


def save_nmap_outputs(running: dict[str, daemons.Daemon], out: Path) -> None:
    """nmap's own normal, XML and grepable output for the TCP ports: a reporters' reference."""
    nmap = shutil.which("nmap")
    if not nmap:
        print("nmap not installed: no nmap outputs saved", file=sys.stderr)
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pairs = [(d, e) for d, e in daemons.endpoints(running) if e.proto == "tcp"]
    ports = ",".join(str(e.port) for _d, e in pairs)
    argv = [nmap, "-sV", "-sT", "-Pn", "-n", "-p", ports, "127.0.0.1", "-oA", str(out / "daemons")]
    subprocess.run(argv, check=True, capture_output=True)
    (out / "ports.json").write_text(json.dumps(
        {"command": " ".join(["nmap", *argv[1:-1], "daemons"]),
         "ports": {e.name: e.port for _d, e in pairs}}, indent=1) + "\n")


def write_sources(out: Path, index: dict) -> None:
    lines = [
        "# Captured daemon responses",
        "",
        "Raw bytes real Debian daemons sent back to the probes of nmap's database",
        f"({index['nmap_db']}, sha256 {index['nmap_db_sha256'][:16]}…), captured on "
        f"{index['date']} by `{index['command']}`.",
        "Generated file: re-run the command to refresh; do not edit by hand.",
        "",
        "Layout: `<endpoint>/<layer>-<probe>.bin`; layer `tcp` (plain TCP), `udp`, or `ssl`",
        "(the probe sent inside a TLS session). Every non-NULL TCP probe went on a fresh",
        "connection, sent at once, as nmap does: a banner service's answer starts with its",
        "banner. Reads stop at 4096 bytes, on close, or 0.4 s after the last data.",
        "`index.json` lists every exchange, including the unanswered ones.",
        "`nmap-outputs/` (with --nmap-outputs): nmap's own -oN/-oX/-oG of the TCP endpoints,",
        "ports by endpoint in `nmap-outputs/ports.json` (a reference for reporters).",
        "",
        "| endpoint | daemon (Debian package version) | port/proto | answered probes |",
        "|---|---|---|---|",
    ]
    for name, ep in index["endpoints"].items():
        answered = sorted({f"{c['layer']}-{c['probe']}" for c in index["captures"]
                           if c["endpoint"] == name and c["bytes"]})
        tls = " TLS" + (f" → {ep['wraps']}" if ep.get("wraps") else "") if ep["tls"] else ""
        lines.append(f"| {name} | {ep['daemon']} ({ep['package']} {ep['version']}) | "
                     f"{ep['port']}/{ep['proto']}{tls} | {len(answered)}: "
                     f"{', '.join(answered[:12])}{' …' if len(answered) > 12 else ''} |")
    lines.append("")
    (out / "SOURCES.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", help="comma-separated daemon names (default: all)")
    ap.add_argument("--wait", type=float, default=2.5, help="max seconds per exchange")
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--db", type=Path, default=NMAP_DB)
    ap.add_argument("--nmap-outputs", action="store_true",
                    help="also save `nmap -sV -oA` of the TCP ports in OUT/nmap-outputs/")
    args = ap.parse_args(argv)
    if not args.db.exists():
        print(f"error: {args.db} not found (install nmap-common)", file=sys.stderr)
        return 2
    probes = read_probes(args.db)
    names = args.only.split(",") if args.only else None
    t0 = time.monotonic()
    with daemons.all_daemons(names) as running:
        print(f"daemons up in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        out: Path = args.out
        for _dmn, ep in daemons.endpoints(running):
            shutil.rmtree(out / ep.name, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        captures = asyncio.run(capture_all(running, probes, out, args.wait, args.parallel))
        if args.nmap_outputs:
            save_nmap_outputs(running, out / "nmap-outputs")
        index_eps = {
            ep.name: {"daemon": dmn.name, "package": dmn.package, "version": dmn.version,
                      "port": ep.port, "proto": ep.proto, "tls": ep.tls, "wraps": ep.wraps}
            for dmn, ep in daemons.endpoints(running)
        }
    index_path = out / "index.json"
    if names and index_path.exists():
        # a partial run refreshes its endpoints and keeps the others
        old = json.loads(index_path.read_text())
        index_eps = {**{k: v for k, v in old["endpoints"].items() if k not in index_eps},
                     **index_eps}
        captures = [c for c in old["captures"] if c["endpoint"] not in index_eps or
                    c["endpoint"] not in {x["endpoint"] for x in captures}] + captures
    captures.sort(key=lambda c: (c["endpoint"], c["layer"], c["probe_line"]))
    index = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python tests/capture_responses.py" + (f" --only {args.only}" if names else ""),
        "nmap_db": str(args.db),
        "nmap_db_sha256": hashlib.sha256(args.db.read_bytes()).hexdigest(),
        "nmap_common_version": daemons.dpkg_version("nmap-common"),
        "max_read": MAX_READ,
        "endpoints": index_eps,
        "captures": captures,
    }
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    write_sources(out, index)
    answered = sum(1 for c in captures if c["bytes"])
    print(f"{answered} answered of {len(captures)} exchanges in {time.monotonic() - t0:.1f} s "
          f"-> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
