"""RPC grinding time for one port against the whole program table, TCP and UDP.

Run: python bench/bench_rpc.py        (as root: it starts rpcbind and rpc.statd on loopback)

Cases, each timed as the median of several runs:
  * real rpc.statd (program 100024), pure grinding (portmapper disabled) and via portmapper;
  * a Python test server whose program is the *last* of the table (whole table walked);
  * a server hosting no table program (whole table walked, "exhausted");
  * the last-program server over UDP with the first 30 datagrams dropped (packet loss).
When nmap is installed, the same ports are ground by nmap's rpc-grind script
(`nmap -n -Pn -sT|-sU -p PORT --script rpc-grind 127.0.0.1`); nmap's time is that run minus
the same scan without the script (process start-up and port scan), and the ratio is printed.
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

from rpcservers import netns, rpcbind, statd  # noqa: E402
from servprobe.engine.options import EngineOptions  # noqa: E402
from servprobe.result import ServiceResult  # noqa: E402
from servprobe.rpc.grinder import grind_port, grind_result  # noqa: E402
from servprobe.rpc.table import default_table  # noqa: E402

RUNS = 5
NOT_IN_TABLE = 0x7FFFFFF0  # reserved range: in no table


def _median_time(fn, runs: int = RUNS) -> tuple[float, object]:
    times, last = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), last


def ours_grind(port: int, proto: str) -> tuple[float, str]:
    def go():
        return asyncio.run(grind_port("127.0.0.1", port, proto))

    t, res = _median_time(go)
    what = f"{res.outcome.value} {res.program or ''} {res.lowver or ''}-{res.highver or ''} calls={res.calls}"
    return t, what


def ours_result(port: int, proto: str, portmapper: bool) -> tuple[float, str]:
    opts = EngineOptions(rpc_portmapper=portmapper)

    def go():
        r = ServiceResult("127.0.0.1", port, proto, service="rpcbind", method="probed")
        return asyncio.run(grind_result(r, opts))

    t, res = _median_time(go)
    via = res.rpc.via if res.rpc else "-"
    return t, f"{res.service} {res.version or ''} ({res.extrainfo}) via {via}"


def nmap_grind(port: int, proto: str) -> tuple[float, str] | None:
    nmap = shutil.which("nmap")
    if not nmap:
        return None
    scan = "-sU" if proto == "udp" else "-sT"
    cmd = [nmap, "-n", "-Pn", scan, "-p", str(port), "--script", "rpc-grind", "127.0.0.1"]
    # nmap's own start-up and port scan are not grinding: time the same scan without the
    # script and subtract it, so the ratio compares grinding with grinding.
    t0 = time.perf_counter()
    subprocess.run([*cmd[:-3], "127.0.0.1"], capture_output=True, timeout=300)
    base = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900).stdout
    elapsed = time.perf_counter() - t0
    line = next((ln for ln in out.splitlines() if re.match(rf"{port}/{proto}\s", ln)), "?")
    detail = f"{' '.join(line.split()[1:])}; total {elapsed * 1000:.0f} ms - scan {base * 1000:.0f} ms"
    return max(elapsed - base, 1e-3), detail


class ServerProcess:
    """A tests/rpcservers.py server in its own process (it must not share our GIL)."""

    def __init__(self, proto: str, programs: dict[int, tuple[int, int]], drop_first: int = 0):
        cmd = [sys.executable, str(ROOT / "tests" / "rpcservers.py"), "--proto", proto,
               "--drop-first", str(drop_first)]
        for num, (low, high) in programs.items():
            cmd += ["--program", f"{num}:{low}:{high}"]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def report(case: str, ours: tuple[float, str], theirs: tuple[float, str] | None) -> None:
    t, what = ours
    line = f"{case:<40} servprobe {t * 1000:9.1f} ms  [{what}]"
    if theirs:
        nt, nwhat = theirs
        line += f"\n{'':<40} nmap      {nt * 1000:9.1f} ms  [{nwhat}]  ratio {nt / t:6.1f}x"
    print(line, flush=True)


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_rpc.py starts rpcbind and rpc.statd: run it as root")
    table = default_table()
    last = table.numbers()[-1]
    with_nmap = shutil.which("nmap") is not None and "--no-nmap" not in sys.argv
    print(f"RPC table: {len(table)} programs from {', '.join(table.files)}")
    print(f"runs per servprobe case: {RUNS} (median); nmap: 1 run" if with_nmap else
          "nmap not installed (or --no-nmap): servprobe figures only")
    # rpcbind needs port 111: in a network namespace of ours (nmap runs inside it too)
    with netns() as ns, rpcbind(ns), statd(ns) as sd, ns.entered():
        for proto in ("tcp", "udp"):
            report(f"statd {proto}/{sd.port}, pure grind",
                   ours_result(sd.port, proto, portmapper=False),
                   nmap_grind(sd.port, proto) if with_nmap else None)
            report(f"statd {proto}/{sd.port}, via portmapper",
                   ours_result(sd.port, proto, portmapper=True), None)
    for proto in ("tcp", "udp"):
        with ServerProcess(proto, {last: (1, 3)}) as srv:
            report(f"last program #{last} {proto}", ours_grind(srv.port, proto),
                   nmap_grind(srv.port, proto) if with_nmap else None)
        with ServerProcess(proto, {NOT_IN_TABLE: (1, 1)}) as srv:
            report(f"no table program {proto} (exhausted)", ours_grind(srv.port, proto),
                   nmap_grind(srv.port, proto) if with_nmap else None)
    with ServerProcess("udp", {last: (1, 3)}, drop_first=30) as srv:
        # drop_first applies once per server: only the first run sees the loss.
        t0 = time.perf_counter()
        res = asyncio.run(grind_port("127.0.0.1", srv.port, "udp"))
        t = time.perf_counter() - t0
        report("last program udp, 30 first datagrams lost",
               (t, f"{res.outcome.value} {res.program} calls={res.calls}"), None)


if __name__ == "__main__":
    main()
