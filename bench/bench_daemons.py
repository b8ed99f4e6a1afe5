"""servprobe vs `nmap -sV` wall time on the real daemon set of tests/daemons.py.

Starts every daemon on 127.0.0.1 (needs root and the Debian packages of `make apt`), then for
the default intensity and for --version-all: scans all their ports with servprobe (the
library API, nmap's database, default engine options) and with nmap (when installed), one
after the other, and prints both wall times, the ratio, and per port whether the answers
(service, product, version, extrainfo, tunnel) agree.

The set includes, unless --no-chatty, one unrecognized chatty service (tests/scripted_servers.py
"chatty": an unknown banner, an unknown reply to every probe, the connection kept open), the
case issue 11 bounds: nmap reads every probe to its full wait there; servprobe's floor is
NULL's wait plus one probe wait (about 11 s). Its own time is printed too.

    python bench/bench_daemons.py [--udp] [--no-version-all] [--no-chatty] [--runs N]
    python -m bench          (every benchmark, this one included)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import daemons  # tests/daemons.py: the daemon set
import scripted_servers  # tests/scripted_servers.py: the chatty unknown service
import servprobe
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.probes.model import ProbeDB

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
Answer = tuple[str | None, str | None, str | None, str | None, str | None]


def run_servprobe(db: ProbeDB, targets: list[ServiceTarget],
                  intensity: int) -> tuple[float, dict[tuple[str, int], Answer]]:
    t0 = time.monotonic()
    results = daemons.servprobe_scan(db, targets, EngineOptions(intensity=intensity), 900.0)
    wall = time.monotonic() - t0
    answers = {}
    for r in results:
        name = None if r.method == "table" and not r.product else r.service
        answers[(r.proto, r.port)] = (name, r.product, r.version, r.extrainfo, r.tunnel)
    return wall, answers


def run_nmap(nmap: str, targets: list[ServiceTarget],
             intensity: int) -> tuple[float, dict[tuple[str, int], Answer]]:
    tcp = sorted({t.port for t in targets if t.proto == "tcp"})
    udp = sorted({t.port for t in targets if t.proto == "udp"})
    spec = ",".join([*(f"T:{p}" for p in tcp), *(f"U:{p}" for p in udp)])
    # -sT needs no raw sockets and changes nothing in version detection; -sU does need root
    argv = [nmap, "-sV", "-sT", "-Pn", "-n", "-p", spec, "127.0.0.1", "-oX", "-"]
    if udp:
        argv.insert(3, "-sU")
    if intensity == 9:
        argv.insert(2, "--version-all")
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - t0
    answers: dict[tuple[str, int], Answer] = {}
    for port in ET.fromstring(out).iter("port"):
        svc = port.find("service")
        key = (port.get("protocol", ""), int(port.get("portid", "0")))
        if svc is None:
            answers[key] = (None, None, None, None, None)
            continue
        name = svc.get("name")
        if name == "unknown" and svc.get("method") == "table":
            name = None
        answers[key] = (name, svc.get("product"), svc.get("version"), svc.get("extrainfo"),
                        svc.get("tunnel"))
    return wall, answers


def show(answer: Answer | None) -> str:
    if answer is None:
        return "(no result)"
    name, product, version, extra, tunnel = answer
    svc = f"{'ssl/' if tunnel else ''}{name or 'unknown'}"
    text = " ".join(x for x in (product, version) if x)
    if extra:
        text += f" ({extra})"
    return f"{svc} {text}".strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--udp", action="store_true", help="also the UDP endpoints (nmap -sU)")
    ap.add_argument("--no-version-all", action="store_true", help="skip the intensity 9 round")
    ap.add_argument("--no-chatty", action="store_true", help="without the chatty unknown service")
    ap.add_argument("--runs", type=int, default=2,
                    help="servprobe runs per round; the best is compared (default 2)")
    args = ap.parse_args()
    nmap = shutil.which("nmap")
    db = servprobe.load_db(str(NMAP_DB) if NMAP_DB.exists() else None)
    print(f"database: {db.path}")
    t0 = time.monotonic()
    with daemons.all_daemons() as running, scripted_servers.ThreadedServer("chatty") as chatty:
        pairs = [(d, e) for d, e in daemons.endpoints(running)
                 if e.proto == "tcp" or args.udp]
        names = {(e.proto, e.port): e.name for _d, e in pairs}
        targets = [ServiceTarget(d.host, e.port, e.proto) for d, e in pairs]
        if not args.no_chatty:
            names[("tcp", chatty.port)] = "chatty-unknown"
            targets.append(ServiceTarget("127.0.0.1", chatty.port, "tcp"))
            t1 = time.monotonic()
            daemons.servprobe_scan(db, targets[-1:], EngineOptions(), 900.0)
            print(f"chatty unknown service alone: {time.monotonic() - t1:.2f} s "
                  "(floor: NULL 6 s + one probe wait 5 s)")
        print(f"{len(running)} daemons, {len(targets)} ports, up in "
              f"{time.monotonic() - t0:.1f} s")
        rounds = [7] if args.no_version_all else [7, 9]
        for intensity in rounds:
            label = "default (intensity 7)" if intensity == 7 else "--version-all (intensity 9)"
            walls = []
            ours: dict[tuple[str, int], Answer] = {}
            for _ in range(max(1, args.runs)):
                wall, ours = run_servprobe(db, targets, intensity)
                walls.append(wall)
            ours_wall = min(walls)
            print(f"\n## {label}")
            print(f"servprobe: {ours_wall:7.2f} s" +
                  (f"   (runs: {', '.join(f'{w:.2f}' for w in walls)})" if len(walls) > 1 else ""))
            if not nmap:
                print("nmap:      not installed (no comparison)")
                for key, name in sorted(names.items(), key=lambda kv: kv[1]):
                    print(f"  {name:15} {show(ours.get(key))}")
                continue
            nmap_wall, theirs = run_nmap(nmap, targets, intensity)
            print(f"nmap -sV:  {nmap_wall:7.2f} s")
            print(f"speed-up:  {nmap_wall / ours_wall:7.1f}x  (nmap time / servprobe time)")
            print(f"ratio:     {ours_wall / nmap_wall:7.3f}   (servprobe time / nmap time; issue target <= 0.05)")
            agree = 0
            for key, name in sorted(names.items(), key=lambda kv: kv[1]):
                a, b = ours.get(key), theirs.get(key)
                same = a == b
                agree += same
                mark = "same" if same else "DIFF"
                line = f"  {mark} {name:15} {key[1]}/{key[0]}  {show(a)}"
                if not same:
                    line += f"   | nmap: {show(b)}"
                print(line)
            print(f"agreement: {agree}/{len(names)} ports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
