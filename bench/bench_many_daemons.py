"""servprobe vs `nmap -sV` on ~60 real loopback daemons plus the chatty unknown service.

Issue 11's size: every daemon the suite knows (tests/daemons.py's set and every daemon of
tests/daemons_post.py) plus extra instances of the cheap ones (sshd, nginx plain + TLS,
redis, memcached, vsftpd, and a second stunnel4 wrapping some of them), each on its own free
port of 127.0.0.1, plus one unrecognized chatty service (tests/scripted_servers.py "chatty").
Needs root and the Debian packages of `make apt`.

Scans all their TCP ports (UDP too with --udp) with servprobe (library API, nmap's database,
default engine options) and with nmap, one after the other, and prints both wall times, the
ratio (issue 11's target: the whole scan <= 12 s against nmap's ~181 s) and how many ports'
answers (service, product, version, extrainfo, tunnel) agree, twice: for servprobe with
`--version-scripts none` (nmap's -sV prints no fields from its redis/memcached version
scripts, which servprobe's post-processors would add) and with the default `all` (nmap's
https-redirect and amqp-info version scripts do change its answers). A Kerberos KDC's
"server time: ..." is compared without the clock reading. Also prints the ports identified
last (the critical path) and the time spent in the matcher.

    python bench/bench_many_daemons.py [--udp] [--runs N] [--no-nmap] [--extra N]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_daemons  # bench/bench_daemons.py: nmap runner, answer formatting
import daemons  # tests/daemons.py: the daemon set
import daemons_post  # tests/daemons_post.py: the post-processors' daemons
import scripted_servers  # tests/scripted_servers.py: the chatty unknown service
import servprobe
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.probes.model import ProbeDB

Answer = bench_daemons.Answer
POST_DAEMONS = (
    "rabbitmq",
    "mosquitto",
    "snmpd",
    "slapd",
    "git_daemon",
    "smbd",
    "prosody",
    "krb5kdc",
    "varnish",
    "haproxy",
    "xinetd_time",
    "coturn",
    "nginx_redirect",
)
# cheap daemons started again, each instance on its own ports (ports per instance: nginx 2,
# memcached 1 TCP + 1 UDP, the others 1)
EXTRA = {
    "sshd": daemons.sshd,
    "nginx": daemons.nginx,
    "redis": daemons.redis,
    "memcached": daemons.memcached,
    "vsftpd": daemons.vsftpd,
}


def start_all(stack: contextlib.ExitStack, extra: int) -> dict[str, daemons.Daemon]:
    """The whole set: {instance name: Daemon}; extra instances are named "nginx#2" and so on."""
    running = dict(stack.enter_context(daemons.all_daemons()))
    for name in POST_DAEMONS:
        running[name] = stack.enter_context(getattr(daemons_post, name)())
    for n in range(2, 2 + extra):
        for name, start in EXTRA.items():
            running[f"{name}#{n}"] = stack.enter_context(start())
    # a second stunnel4 in front of the extra instances: more ssl/ tunnels of each kind
    backends = {
        f"{name.replace('sshd', 'ssh').replace('#', '')}": running[name]
        for name in ("sshd#2", "redis#2", "vsftpd#2")
        if name in running
    }
    if backends:
        running["stunnel#2"] = stack.enter_context(daemons.stunnel(backends))
    return running


SERVER_TIME = re.compile(r"server time: [^)]*")
SLOWEST: dict[tuple[str, int], float] = {}  # the last run's finish times (s after its start)


def run_servprobe(
    db: ProbeDB, targets: list[ServiceTarget], scripts: str
) -> tuple[float, dict[tuple[str, int], Answer]]:
    t0, wall0 = time.monotonic(), time.time()
    results = daemons.servprobe_scan(db, targets, EngineOptions(version_scripts=scripts), 900.0)
    wall = time.monotonic() - t0
    answers = {}
    SLOWEST.clear()
    for r in results:
        if r.finished is not None:  # wall-clock time the engine reported it
            SLOWEST[(r.proto, r.port)] = r.finished - wall0
        name = None if r.method == "table" and not r.product else r.service
        answers[(r.proto, r.port)] = (name, r.product, r.version, r.extrainfo, r.tunnel)
    return wall, answers


def comparable(answer: Answer | None) -> Answer | None:
    """An answer with what differs between two correct scans blanked: the clock reading in
    a Kerberos KDC's "server time: ..." (each scan reads the server's clock anew)."""
    if answer is None or not answer[3]:
        return answer
    extra = SERVER_TIME.sub("server time: *", answer[3])
    return (answer[0], answer[1], answer[2], extra, answer[4])


class MatchClock:
    """Times every matcher call of a scan (the matcher runs on one engine thread: this is how
    much a match pool could take off it)."""

    def __init__(self, db: ProbeDB) -> None:
        self.calls: list[float] = []
        matcher = db.matcher
        inner = matcher.match

        def timed(probe: object, data: bytes, timeout: float | None = None) -> object:
            t = time.perf_counter()
            try:
                return inner(probe, data, timeout)
            finally:
                self.calls.append(time.perf_counter() - t)

        matcher.match = timed  # type: ignore[method-assign]

    def summary(self) -> str:
        if not self.calls:
            return "no matcher calls"
        total = sum(self.calls)
        return (
            f"{len(self.calls)} matcher calls, {total * 1000:.1f} ms in all, "
            f"slowest {max(self.calls) * 1000:.2f} ms"
        )


def best_of(
    runs: int,
    db: ProbeDB,
    targets: list[ServiceTarget],
    scripts: str,
    names: dict[tuple[str, int], str],
) -> tuple[float, list[float], dict[tuple[str, int], Answer]]:
    walls: list[float] = []
    answers: dict[tuple[str, int], Answer] = {}
    for _ in range(max(1, runs)):
        wall, answers = run_servprobe(db, targets, scripts)
        walls.append(wall)
        if SLOWEST:  # each run's last port: an outlier run names its culprit
            key, at = max(SLOWEST.items(), key=lambda kv: kv[1])
            print(
                f"  run ({scripts}): {wall:.2f} s, last identified {names.get(key, key)} {key[1]}/{key[0]} at {at:.2f} s"
            )
    return min(walls), walls, answers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--udp", action="store_true", help="also the UDP endpoints (nmap -sU)")
    ap.add_argument(
        "--runs",
        type=int,
        default=2,
        help="servprobe runs per configuration; the best is compared (default 2)",
    )
    ap.add_argument(
        "--extra",
        type=int,
        default=6,
        help="extra instances of each cheap daemon (default 6: 63 TCP ports with the chatty one)",
    )
    ap.add_argument("--no-nmap", action="store_true", help="servprobe only")
    args = ap.parse_args()
    nmap = None if args.no_nmap else shutil.which("nmap")
    db = servprobe.load_db(str(bench_daemons.NMAP_DB) if bench_daemons.NMAP_DB.exists() else None)
    print(f"database: {db.path}")
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        running = start_all(stack, args.extra)
        chatty = stack.enter_context(scripted_servers.ThreadedServer("chatty"))
        names: dict[tuple[str, int], str] = {}
        targets: list[ServiceTarget] = []
        for inst, dmn in running.items():
            suffix = inst[inst.index("#") :] if "#" in inst else ""
            for e in dmn.endpoints:
                if e.proto == "udp" and not args.udp:
                    continue
                names[(e.proto, e.port)] = e.name + suffix
                targets.append(ServiceTarget(dmn.host, e.port, e.proto))
        names[("tcp", chatty.port)] = "chatty-unknown"
        targets.append(ServiceTarget("127.0.0.1", chatty.port, "tcp"))
        udp = sum(t.proto == "udp" for t in targets)
        print(
            f"{len(running)} daemons + the chatty service, {len(targets)} ports ({udp} UDP), "
            f"up in {time.monotonic() - t0:.1f} s"
        )

        wall_all, walls_all, ours_all = best_of(args.runs, db, targets, "all", names)
        print(
            f"servprobe (default, --version-scripts all): {wall_all:7.2f} s   "
            f"(runs: {', '.join(f'{w:.2f}' for w in walls_all)}; issue target <= 12 s)"
        )
        clock = MatchClock(db)
        ours_wall, walls, ours = best_of(args.runs, db, targets, "none", names)
        per_run = len(clock.calls) // max(1, args.runs)
        print(
            f"servprobe (--version-scripts none):        {ours_wall:7.2f} s   "
            f"(runs: {', '.join(f'{w:.2f}' for w in walls)})"
        )
        print(
            f"matching (all {max(1, args.runs)} runs): {clock.summary()}; about {per_run} calls a run"
        )
        slow = sorted(SLOWEST.items(), key=lambda kv: -kv[1])[:6]
        print(
            "slowest ports (identified at, last run): "
            + ", ".join(f"{names.get(k, k)} {t:.2f} s" for k, t in slow)
        )
        if not nmap:
            print("nmap: not run (no comparison)")
            for key, name in sorted(names.items(), key=lambda kv: kv[1]):
                print(f"  {name:18} {key[1]}/{key[0]}  {bench_daemons.show(ours.get(key))}")
            return 0
        nmap_wall, theirs = bench_daemons.run_nmap(nmap, targets, 7)
        print(f"nmap -sV:                                  {nmap_wall:7.2f} s")
        print(f"ratio (servprobe default / nmap):          {wall_all / nmap_wall:7.3f}")
        print(f"ratio (servprobe scripts none / nmap):     {ours_wall / nmap_wall:7.3f}")
        for label, answers in (("--version-scripts none", ours), ("default (all)", ours_all)):
            print(f"\n## answers: servprobe {label} vs nmap -sV")
            agree = 0
            for key, name in sorted(names.items(), key=lambda kv: kv[1]):
                a, b = answers.get(key), theirs.get(key)
                same = comparable(a) == comparable(b)
                agree += same
                mark = "same" if same else "DIFF"
                line = f"  {mark} {name:18} {key[1]}/{key[0]}  {bench_daemons.show(a)}"
                if not same:
                    line += f"   | nmap: {bench_daemons.show(b)}"
                print(line)
            print(f"agreement: {agree}/{len(names)} ports (servprobe {label} vs nmap -sV)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
