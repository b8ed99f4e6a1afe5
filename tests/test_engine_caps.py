"""Speculation against servers that cap connections per client (issue 17).

Real daemons with their own caps (tests/daemons_caps.py: ngircd `MaxConnectionsIP = 2`, sshd
`MaxStartups 2:100:2`, vsftpd `max_per_ip=2`) are scanned one probe at a time
(`--sequential`, nmap's way: the reference) and with speculation, directly and through the
delay proxy at 150 ± 100 ms per direction (tests/delayproxy.py), five runs each. Every run
must give the identity the installed package implies (dpkg versions; a live `nmap -sV -sT`
7.93 run on the three capped daemons gave the same: `irc ngircd` with Host
irc.servprobe.test, `ssh OpenSSH 9.2p1 Debian 2+deb12u10 (protocol 2.0)`, `ftp vsftpd
3.0.3`, in 36.4 s) and equal the sequential run field by field; no refusal banner may be
reported as an identity or appear in a fingerprint.

Each run starts on an idle daemon (`wait_idle`): a capped daemon still counts the previous
run's last connections for a moment, which would refuse even nmap's first connection.
"""

from __future__ import annotations

import pytest

import servprobe
from daemons import dpkg_version, servprobe_scan, upstream_version
from daemons_caps import (
    CAP,
    NGIRCD_NAME,
    NGIRCD_REFUSAL,
    VSFTPD_REFUSAL,
    capped_daemons,
    probe_cap,
    wait_idle,
)
from delayproxy import DelayProxies
from scripted_servers import CHATTY_BANNER, CHATTY_REPLY
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner
from servprobe.engine.sim import CLOSE, ServerModel, simulate
from servprobe.engine.state import ServiceMachine
from test_engine_delay import proxied_targets

NMAP_DB = "/usr/share/nmap/nmap-service-probes"
RUNS = 5
# what the three daemons send when refusing (daemons_caps.probe_cap shows each): never an
# identity, never a fingerprint's response
REFUSALS = (NGIRCD_REFUSAL, VSFTPD_REFUSAL, "Exceeded MaxStartups", "too many connections")


def key(r):
    return (
        r.display_service(),
        r.display_version(),
        r.hostname,
        r.tunnel,
        r.method,
        r.conf,
        r.state,
        r.fingerprint,
    )


def expected(name: str) -> tuple[str, str]:
    """(service, version column) from the installed Debian package (nmap's lines for them)."""
    if name == "ngircd":
        return "irc", "ngircd"  # nmap's ngircd line has no version field (p/ngircd/ h/$1/)
    if name == "sshd":
        v = dpkg_version("openssh-server")
        rev = v.rsplit("-", 1)[1]
        return "ssh", f"OpenSSH {upstream_version(v)} Debian {rev} (protocol 2.0)"
    return "ftp", f"vsftpd {upstream_version(dpkg_version('vsftpd'))}"


def no_refusal_in(r) -> None:
    text = " ".join(
        str(x)
        for x in (r.service, r.product, r.version, r.extrainfo, r.hostname, r.fingerprint)
        if x
    )
    for banner in REFUSALS:
        assert banner not in text and banner.replace(" ", "\\x20") not in text, (r.port, text)


@pytest.fixture(scope="module")
def db():
    return servprobe.load_db(NMAP_DB)


@pytest.fixture(scope="module")
def capped():
    with capped_daemons() as running:
        yield running


def opts(**kw) -> EngineOptions:
    return EngineOptions(rpc_grind=False, version_scripts="none", **kw)


def idle(capped) -> None:
    for d in capped.values():
        wait_idle(d.port)


@pytest.mark.daemon
def test_the_caps_are_configured(capped):
    """The third simultaneous connection gets each daemon's refusal (or nothing, sshd: a
    drop), so the scans below really run against capped servers."""
    idle(capped)
    irc = probe_cap(capped["ngircd"].port)
    assert irc[:CAP] == [b"", b""] and NGIRCD_REFUSAL.encode() in irc[CAP]
    ftp = probe_cap(capped["vsftpd"].port)
    assert all(b.startswith(b"220 ") for b in ftp[:CAP]) and VSFTPD_REFUSAL.encode() in ftp[CAP]
    ssh = probe_cap(capped["sshd"].port)
    assert all(b.startswith(b"SSH-2.0-") for b in ssh[:CAP]) and not ssh[CAP].startswith(b"SSH-")


@pytest.mark.daemon
@pytest.mark.slow
def test_capped_daemons_answer_as_sequential_in_every_run(db, capped):
    """Five runs directly and five through 150 ± 100 ms: each identity equals the sequential
    run's and dpkg's, and no refusal banner is an identity or inside a fingerprint.

    The refusal part fails (checked) when SpeculativeProvider._end ignores the refusal rule
    (`crowd[0] > SAFE_OVERLAP` replaced by `False`): ngircd comes out unidentified with an
    SF- fingerprint made of `ERROR :Connection refused, too many connections ...` answers."""
    names = list(capped)
    direct = [ServiceTarget("127.0.0.1", capped[n].port, "tcp") for n in names]
    idle(capped)
    want = servprobe_scan(db, direct, opts(sequential=True), 600.0)
    assert [r.port for r in want] == [t.port for t in direct]
    for name, r in zip(names, want, strict=True):
        assert (r.display_service(), r.display_version()) == expected(name), (name, key(r))
        no_refusal_in(r)
    assert want[names.index("ngircd")].hostname == NGIRCD_NAME
    planner = Planner(db)
    pairs = [(capped[n], capped[n].endpoints[0]) for n in names]
    for path in ("loopback", "150+-100ms"):
        for run in range(RUNS):
            idle(capped)
            if path == "loopback":
                got = servprobe_scan(db, direct, opts(), 600.0)
            else:
                with DelayProxies(base=0.15, jitter=0.1, seed=100 + run) as px:
                    got = servprobe_scan(db, proxied_targets(px, planner, pairs), opts(), 600.0)
            assert len(got) == len(names), (path, run)
            for name, a, b in zip(names, got, want, strict=True):
                no_refusal_in(a)
                assert key(a) == key(b), (path, run, name, key(a), key(b))


# ------------------------------------------------------------------ the simulator -----------


class CappedChatty(ServerModel):
    """An unknown chatty service (tests/scripted_servers.py's banner and reply) that allows
    `cap` connections per client and refuses the rest with a banner of its own and a close."""

    REFUSAL = b"ERROR :Connection refused, too many connections from your IP address\r\n"

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[int] = set()
        self.refused = 0

    def on_connect(self, conn, tls):
        if len(self.open) >= self.cap:
            self.refused += 1
            return [(0.0, self.REFUSAL), (0.0, CLOSE)]
        self.open.add(conn)
        return [(0.0, CHATTY_BANNER)]

    def on_data(self, conn, payload, since, tls):
        return [(0.001, CHATTY_REPLY)] if conn in self.open else []

    def on_close(self, conn):
        self.open.discard(conn)


def sim_run(db, sequential: bool, cap: int):
    o = EngineOptions(sequential=sequential, version_trace=True)
    m = ServiceMachine(ServiceTarget("127.0.0.1", 40123, "tcp"), db, Planner(db), o)
    server = CappedChatty(cap)
    return simulate(m, server, rtt=0.0005), server, m.provider


@pytest.mark.parametrize("cap", [2, 3, 5])
def test_refusals_never_enter_an_unknown_services_fingerprint(db, cap):
    """An unidentified service gets an SF- fingerprint: with a cap it must hold exactly the
    sequential run's responses, none of them the refusal.

    Fails (checked) when SpeculativeProvider._end ignores the refusal rule (`crowd[0] >
    SAFE_OVERLAP` replaced by `False`): the refusal lands in the fingerprint."""
    seq, _, _ = sim_run(db, True, cap)
    spec, server, provider = sim_run(db, False, cap)
    assert server.refused > 0  # the cap was hit: speculation opened more than `cap`
    assert seq.result.fingerprint and "Connection\\x20refused" not in seq.result.fingerprint
    assert "Connection\\x20refused" not in spec.result.fingerprint
    assert spec.result.fingerprint.split("%r(", 1)[1] == seq.result.fingerprint.split("%r(", 1)[1]
    assert key(spec.result)[:7] == key(seq.result)[:7]
    assert provider.refusals >= 1


# ------------------------------------------------------------------ the host's budget -------


def test_host_budget_narrows_only_when_two_services_refuse_and_grows_back():
    """engine.budget: one capped service leaves the host's other services alone; refusals
    from two services halve the host's window (once per round, never below one), and
    healthy attempts grow it back to the fixed limit (expected values: TCP's AIMD rule)."""
    from servprobe.engine.budget import ConnBudget

    host = ConnBudget(8)
    for _ in range(8):
        assert host.try_acquire(1)
    host.refused(1, host.acquired)
    host.refused(1, host.acquired)
    assert host.window is None and host.cap() == 8  # one service's cap: not the host's
    host.refused(2, host.acquired)
    assert host.cap() == 4  # 8 in use, halved
    host.refused(2, host.acquired)  # same round: no second cut
    assert host.cap() == 4
    assert not host.try_acquire(3)  # 8 in use > 4
    for _ in range(8):
        host.release()
    for _ in range(4):
        assert host.try_acquire(3)
    host.refused(1, host.acquired)  # a later round: halved again
    assert host.cap() == 2
    for _ in range(3):
        host.refused(2, host.acquired + 1)
        host.acquired += 1
    assert host.cap() == 1  # the floor
    for _ in range(200):
        host.healthy()
    assert host.window is None and host.cap() == 8  # grown back to the fixed limit
