"""The sans-IO service machine against hand-built probes and a small fake matcher (no sockets).

Scripted servers run in virtual time (servprobe.engine.sim), so rules about waits, the NULL
cheat, tcpwrapped and speculation are checked without sleeping.
"""

from __future__ import annotations

import regex

from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner
from servprobe.engine.sim import CLOSE, ServerModel, simulate
from servprobe.engine.state import ConnBudget, Connect, ServiceMachine
from servprobe.probes.model import (
    Identification,
    MatchLine,
    Probe,
    ProbeDB,
    SourceRef,
    VersionTemplate,
)


class FakeMatcher:
    """Probe lines, then fallbacks, then NULL (TCP); $1 substitution in product/version."""

    def __init__(self, db: ProbeDB) -> None:
        self.db = db

    def match(self, probe: Probe, data: bytes) -> Identification | None:
        chain = [probe] + [self.db.probe(n, probe.proto) for n in probe.fallback]
        if probe.proto == "tcp" and not probe.is_null:
            chain.append(self.db.probe("NULL", "tcp"))
        for p in chain:
            for line in p.matches:
                m = regex.search(line.pattern, data, flags=regex.S)
                if m:
                    def sub(t: str | None, m=m) -> str | None:
                        if t is None:
                            return None
                        return regex.sub(rb"\$(\d)", lambda g: m.group(int(g.group(1))), t.encode()).decode()

                    return Identification(
                        service=line.service,
                        soft=line.soft,
                        product=sub(line.template.product),
                        version=sub(line.template.version),
                        source=line.source,
                        probe=p.name,
                    )
        return None


_line = 0


def ml(service: str, pattern: bytes, soft: bool = False, p: str | None = None, v: str | None = None) -> MatchLine:
    global _line
    _line += 1
    return MatchLine(service, pattern, "", soft, VersionTemplate(product=p, version=v), SourceRef("fake", _line), "", 0)


def probe(name: str, payload: bytes, proto: str = "tcp", **kw) -> Probe:
    lines = kw.pop("matches", [])
    pr = Probe(proto, name, payload, SourceRef("fake", 1), **kw)  # type: ignore[arg-type]
    pr.matches = lines
    return pr


def make_db(probes: list[Probe], exclude=frozenset()) -> ProbeDB:
    db = ProbeDB("fake", "0", probes, exclude=exclude)
    db.matcher = FakeMatcher(db)
    return db


def standard_db() -> ProbeDB:
    return make_db(
        [
            probe(
                "NULL",
                b"",
                totalwaitms=6000,
                tcpwrappedms=3000,
                matches=[
                    ml("ssh", rb"^SSH-2\.0-OpenSSH_([\w.]+)", p="OpenSSH", v="$1"),
                    ml("smtp", rb"^220 [^\r\n]* ESMTP Postfix", p="Postfix smtpd"),
                    ml("smtp", rb"^220 .*ESMTP", soft=True),
                    ml("ftp", rb"^220 ", soft=True),
                ],
            ),
            probe(
                "GenericLines",
                b"\r\n\r\n",
                rarity=1,
                ports=frozenset({21, 25}),
                matches=[ml("ftp", rb"^220 .*\r\n500 ", p="generic ftpd")],
            ),
            probe(
                "GetRequest",
                b"GET / HTTP/1.0\r\n\r\n",
                rarity=1,
                ports=frozenset({80, 8080}),
                sslports=frozenset({443}),
                matches=[
                    ml("http", rb"^HTTP/1\.[01] \d+.*Server: nginx/([\d.]+)", p="nginx", v="$1"),
                    ml("http", rb"^HTTP/1\.[01] \d+", soft=True),
                ],
            ),
            probe(
                "Help",
                b"HELP\r\n",
                rarity=3,
                ports=frozenset({25}),
                totalwaitms=7500,
                matches=[ml("smtp", rb"^214 qmail", p="qmail smtpd")],
            ),
            probe(
                "SSLSessionReq",
                b"\x16\x03\x00",
                rarity=1,
                ports=frozenset({443}),
                matches=[ml("ssl", rb"^\x16\x03[\x00-\x03]", p="TLS")],
            ),
            probe("Rare8", b"RARE\r\n", rarity=8, matches=[ml("rare", rb"^RARE-OK")]),
            probe("NoRarity", b"NR\r\n", matches=[ml("norarity", rb"^NR-OK")]),
            probe("Mid5", b"MID\r\n", rarity=5, matches=[ml("mid", rb"^MID-OK"), ml("smtp", rb"250 mid", p="midsmtp")]),
            probe("U1", b"u1", proto="udp", rarity=1, ports=frozenset({53}), matches=[ml("domain", rb"^\x00\x06")]),
            probe("U2", b"u2", proto="udp", rarity=2, matches=[ml("echo", rb"^u2$")]),
        ],
        exclude=frozenset({("tcp", 9100)}),
    )


def machine(
    port: int, db: ProbeDB | None = None, proto: str = "tcp", table_name: str | None = None,
    state: str | None = None, **opts
) -> ServiceMachine:
    db = db or standard_db()
    opts.setdefault("sequential", True)
    o = EngineOptions(**opts)
    target = ServiceTarget("127.0.0.1", port, proto, table_name=table_name, state=state)  # type: ignore[arg-type]
    return ServiceMachine(target, db, Planner(db), o)


class Banner(ServerModel):
    def __init__(self, banner: bytes, delay: float = 0.0, answers: dict[bytes, bytes] | None = None):
        self.banner = banner
        self.delay = delay
        self.answers = answers or {}

    def on_connect(self, conn, tls):
        return [(self.delay, self.banner)] if self.banner else []

    def on_data(self, conn, payload, since, tls):
        for k, v in self.answers.items():
            if payload.startswith(k):
                wait = max(0.0, self.delay - since)  # a late-banner server answers only after its banner
                return [(wait, v)]
        return []


# ------------------------------------------------------------------------ planning ----------


def test_order_null_port_listed_then_rarity():
    db = standard_db()
    pl = Planner(db)
    names = [p.name for p in pl.order("tcp", 25, False, 7)]
    # port-listed probes in file order whatever their rarity, then the rest by rarity <= 7
    assert names == ["NULL", "GenericLines", "Help", "GetRequest", "SSLSessionReq", "NoRarity", "Mid5"]
    assert [p.name for p in pl.order("tcp", 25, False, 0)] == ["NULL", "GenericLines", "Help"]
    assert "Rare8" in [p.name for p in pl.order("tcp", 25, False, 8)]
    # inside TLS only sslports count as listed
    assert [p.name for p in pl.order("tcp", 443, True, 0)] == ["NULL", "GetRequest"]
    assert [p.name for p in pl.order("udp", 53, False, 7)] == ["U1", "U2"]


def test_probe_without_rarity_is_rarity_5():
    pl = Planner(standard_db())
    assert "NoRarity" not in [p.name for p in pl.order("tcp", 1234, False, 4)]
    assert "NoRarity" in [p.name for p in pl.order("tcp", 1234, False, 5)]


# ------------------------------------------------------------------------ sequential rules ---


def test_banner_hard_match_on_null():
    run = simulate(machine(22), Banner(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"))
    r = run.result
    assert (r.service, r.product, r.version, r.method, r.conf) == ("ssh", "OpenSSH", "9.2p1", "probed", 10)
    assert r.probe == "NULL" and r.matched and r.matched.startswith("fake:")
    assert run.connections == 1 and run.elapsed < 0.1


def test_excluded_port_not_probed_unless_allports():
    run = simulate(machine(9100), Banner(b"SSH-2.0-OpenSSH_9.2\r\n"))
    assert run.connections == 0 and run.result.method == "table" and run.result.conf == 3
    run = simulate(machine(9100, allports=True), Banner(b"SSH-2.0-OpenSSH_9.2\r\n"))
    assert run.result.service == "ssh"


def test_null_cheat_late_banner_matched_on_same_connection():
    # the banner comes after NULL's 6 s: it arrives during Help (the first probe for port 25
    # that may run after the smtp... no softmatch here: GenericLines), on the NULL connection
    srv = Banner(b"220 mx.example ESMTP Postfix\r\n", delay=7.0)
    run = simulate(machine(25), srv)
    r = run.result
    assert r.service == "smtp" and r.product == "Postfix smtpd"
    assert r.probe == "NULL"  # matched through the NULL fallback
    assert run.connections == 1
    assert run.sent[0] == (1, b"\r\n\r\n")  # GenericLines sent on conn 1, the NULL connection
    assert 7.0 <= run.elapsed < 8.0


def test_null_data_kept_for_cheat_step():
    # "220 " softmatches ftp on NULL; GenericLines (port 21) is sent on the same connection and
    # matches NULL data + its answer
    srv = Banner(b"220 hello\r\n", answers={b"\r\n": b"500 what\r\n"})
    run = simulate(machine(21), srv)
    assert run.result.service == "ftp" and run.result.product == "generic ftpd"
    assert run.connections == 1


def test_softmatch_limits_probes_and_reports_service_without_version():
    srv = Banner(b"220 foo ESMTP bar\r\n")
    run = simulate(machine(25), srv)
    r = run.result
    assert r.service == "smtp" and r.soft and r.product is None and r.method == "probed"
    sent_payloads = [d for _, d in run.sent]
    # only probes with an smtp line run: Help (listed) and Mid5 (rarity) — not GetRequest etc.
    assert b"GET / HTTP/1.0\r\n\r\n" not in sent_payloads
    assert b"HELP\r\n" in sent_payloads and b"MID\r\n" in sent_payloads
    assert b"\r\n\r\n" not in sent_payloads  # GenericLines has no smtp line
    assert r.fingerprint and r.fingerprint.startswith("SF-Port25-TCP:")


def test_softmatch_then_hard_match_from_later_probe():
    srv = Banner(b"220 foo ESMTP bar\r\n", answers={b"MID": b"250 mid\r\n"})
    r = simulate(machine(25), srv).result
    assert r.service == "smtp" and r.product == "midsmtp" and not r.soft


def test_softmatch_fields_are_reported_when_probes_run_out():
    # nmap reports a softmatch line's p/ v/ (e.g. "PostgreSQL DB" "9.6.0 or later") as they are
    db = standard_db()
    db.probe("NULL").matches.insert(
        0, ml("smtp", rb"^220 [^\r\n]*ESMTP Sendmail", p="Sendmail", v="8.x", soft=True)
    )
    r = simulate(machine(25, db=db), Banner(b"220 mx ESMTP Sendmail\r\n")).result
    assert (r.service, r.product, r.version, r.soft) == ("smtp", "Sendmail", "8.x", True)
    assert r.method == "probed" and r.conf == 10 and r.fingerprint


def test_softmatch_filter_off_at_intensity_9():
    srv = Banner(b"220 foo ESMTP bar\r\n")
    run = simulate(machine(25, intensity=9), srv)
    assert b"GET / HTTP/1.0\r\n\r\n" in [d for _, d in run.sent]


def test_later_softmatch_of_other_service_ignored():
    srv = Banner(b"220 foo ESMTP bar\r\n", answers={b"GET": b"HTTP/1.0 200 OK\r\n\r\n"})
    r = simulate(machine(80, intensity=9), srv).result
    assert r.service == "smtp" and r.soft


def test_tcpwrapped_on_immediate_close():
    class Wrapped(ServerModel):
        def on_connect(self, conn, tls):
            return [(0.0, CLOSE)]

    r = simulate(machine(22), Wrapped()).result
    assert (r.service, r.conf, r.method) == ("tcpwrapped", 8, "probed")


def test_close_after_tcpwrappedms_is_not_tcpwrapped():
    class SlowClose(ServerModel):
        def on_connect(self, conn, tls):
            return [(3.5, CLOSE)]

    r = simulate(machine(2222), SlowClose()).result
    assert r.service != "tcpwrapped" and r.method == "table"


def test_no_match_reports_table_name_with_fingerprint():
    # the port-table name comes with the target (the engine looks nothing up)
    srv = Banner(b"\x00\x01weird banner\r\n")
    r = simulate(machine(80, table_name="http"), srv).result
    assert r.method == "table" and r.conf == 3 and r.service == "http"
    assert r.display_service() == "http?"
    assert r.fingerprint and "%r(NULL," in r.fingerprint.replace("\nSF:", "")


def test_silent_port_sequential_costs_every_wait():
    run = simulate(machine(1234), ServerModel())
    # NULL 6 s, then GenericLines (cheat) GetRequest SSLSessionReq NoRarity Mid5 at 5 s, Help 7.5 s
    assert run.result.method == "table" and run.result.fingerprint is None
    assert 38.0 <= run.elapsed < 39.5


def test_intensity_0_only_null_and_listed():
    run = simulate(machine(80, intensity=0), ServerModel())
    assert [d for _, d in run.sent] == [b"GET / HTTP/1.0\r\n\r\n"]


def test_connect_failure_reports_table():
    class Refuse(ServerModel):
        refuse = True

    r = simulate(machine(80, table_name="http"), Refuse()).result
    assert r.method == "table" and r.service == "http"


def test_read_cap_keeps_memory_bounded():
    class Flood(ServerModel):
        def on_connect(self, conn, tls):
            return [(0.001 * i, b"x" * 65536) for i in range(50)]

    run = simulate(machine(19, max_read=4096), Flood())
    assert run.result.fingerprint is not None
    assert "%r(NULL,1000," in run.result.fingerprint.replace("\nSF:", "")  # 4096 bytes kept, not 3 MB


def test_ssl_hard_match_restarts_inside_tls():
    class TlsHttp(ServerModel):
        tls_min_level = 0

        def on_data(self, conn, payload, since, tls):
            if not tls and payload.startswith(b"\x16"):
                return [(0.0, b"\x16\x03\x01\x00")]
            if tls and payload.startswith(b"GET"):
                return [(0.0, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n")]
            return []

    m = machine(443)
    run = simulate(m, TlsHttp())
    r = run.result
    assert (r.service, r.tunnel, r.product, r.version) == ("http", "ssl", "nginx", "1.22.1")
    assert r.display_service() == "ssl/http"


def test_tls_retry_with_permissive_level():
    class OldTls(ServerModel):
        tls_min_level = 1

        def on_data(self, conn, payload, since, tls):
            if not tls and payload.startswith(b"\x16"):
                return [(0.0, b"\x16\x03\x00\x00")]
            if tls and payload.startswith(b"GET"):
                return [(0.0, b"HTTP/1.0 200 OK\r\n\r\n")]
            return []

    m = machine(443)
    levels = []
    real = m.handle

    def spy(ev, now):  # the levels of the connections the machine asks for
        acts = real(ev, now)
        levels.extend(a.tls_level for a in acts if isinstance(a, Connect))
        return acts

    m.handle = spy  # type: ignore[method-assign]
    r = simulate(m, OldTls()).result
    assert (r.service, r.tunnel, r.soft) == ("http", "ssl", True)
    tls_levels = [lv for lv in levels if lv is not None]
    # the default context first, then the permissive level 1 that the server accepts
    assert tls_levels[0] == 0 and 1 in tls_levels, levels


def test_tls_impossible_reports_ssl_match():
    class NoTls(ServerModel):
        tls_min_level = None

        def on_data(self, conn, payload, since, tls):
            if payload.startswith(b"\x16"):
                return [(0.0, b"\x16\x03\x01\x00")]
            return []

    r = simulate(machine(443), NoTls()).result
    assert (r.service, r.tunnel, r.method) == ("ssl", None, "probed")


def test_unidentified_inside_tls_is_ssl_tunnel():
    class TlsSilent(ServerModel):
        tls_min_level = 0

        def on_data(self, conn, payload, since, tls):
            if not tls and payload.startswith(b"\x16"):
                return [(0.0, b"\x16\x03\x01\x00")]
            return []

    r = simulate(machine(4433), TlsSilent()).result
    assert r.tunnel == "ssl" and r.method == "table"
    assert r.display_service().startswith("ssl/")


def test_ssl_slash_service_sets_tunnel_without_tls():
    db = standard_db()
    db.probe("NULL").matches.insert(0, ml("ssl/imap", rb"^\* OK IMAPS", p="Some imapd"))
    run = simulate(machine(993, db=db), Banner(b"* OK IMAPS ready\r\n"))
    assert (run.result.service, run.result.tunnel) == ("imap", "ssl")
    assert run.connections == 1


def test_udp_open_when_answered_else_open_filtered():
    class Echo(ServerModel):
        def on_data(self, conn, payload, since, tls):
            return [(0.0, payload)]

    r = simulate(machine(7777, proto="udp"), Echo()).result
    assert (r.service, r.state) == ("echo", "open")
    r = simulate(machine(7777, proto="udp"), ServerModel()).result
    assert r.state == "open|filtered" and r.method == "table"


def test_udp_has_no_null_probe():
    run = simulate(machine(53, proto="udp"), ServerModel())
    assert [d for _, d in run.sent] == [b"u1", b"u2"]


def test_actions_are_plain_data():
    m = machine(22)
    acts = m.start(0.0)
    assert any(isinstance(a, Connect) and a.proto == "tcp" and a.tls_level is None for a in acts)


# ------------------------------------------------------------------------ speculation -------


SERVERS = {
    "banner": lambda: Banner(b"SSH-2.0-OpenSSH_9.2p1\r\n"),
    "late_banner": lambda: Banner(b"220 mx ESMTP Postfix\r\n", delay=7.0),
    "late_banner_2s": lambda: Banner(b"220 mx ESMTP Postfix\r\n", delay=2.0),
    "http": lambda: Banner(b"", answers={b"GET": b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n"}),
    "softmatch": lambda: Banner(b"220 x ESMTP y\r\n"),
    "soft_then_hard": lambda: Banner(b"220 x ESMTP y\r\n", answers={b"MID": b"250 mid\r\n"}),
    "silent": lambda: ServerModel(),
    "several": lambda: Banner(
        b"", answers={b"\r\n": b"500 err\r\n", b"NR": b"NR-OK\r\n", b"MID": b"MID-OK\r\n"}
    ),
    "ftp_cheat": lambda: Banner(b"220 hello\r\n", answers={b"\r\n": b"500 what\r\n"}),
}


def key(r):
    return (r.service, r.product, r.version, r.method, r.conf, r.soft, r.tunnel, r.state)


def test_speculation_gives_sequential_results():
    for port in (25, 80, 21, 1234, 8080):
        for name, make in SERVERS.items():
            seq = simulate(machine(port, sequential=True), make())
            spec = simulate(machine(port, sequential=False, probe_parallelism=8), make())
            assert key(seq.result) == key(spec.result), (port, name, seq.result, spec.result)
            assert spec.elapsed <= seq.elapsed + 0.01, (port, name)


def test_speculation_request_first_skips_null_wait():
    seq = simulate(machine(80, sequential=True), SERVERS["http"]())
    spec = simulate(machine(80, sequential=False), SERVERS["http"]())
    assert seq.elapsed >= 6.0
    assert spec.elapsed < 1.0  # silence rule: 0.5 s grace instead of 6 s
    assert spec.result.product == "nginx"


def test_speculation_several_answers_keeps_order():
    # GenericLines (rarity 1) answers first in file order but does not match; NoRarity comes
    # before Mid5 in the order, so NR-OK wins even though both answer
    spec = simulate(machine(1234, sequential=False, probe_parallelism=8), SERVERS["several"]())
    assert spec.result.service == "norarity"


def test_speculation_silent_port_costs_about_one_wait():
    spec = simulate(machine(1234, sequential=False, probe_parallelism=8), ServerModel())
    assert spec.elapsed < 12.0  # NULL 6 s + one 5 s wait, instead of 31 s


def test_speculation_respects_per_service_and_shared_budget():
    m = machine(1234, sequential=False, probe_parallelism=2)
    run = simulate(m, ServerModel())
    assert run.max_parallel <= 1 + 2 + 1
    budget = ConnBudget(1)
    db = standard_db()
    m = ServiceMachine(
        ServiceTarget("127.0.0.1", 1234, "tcp"), db, Planner(db), EngineOptions(probe_parallelism=8), budget
    )
    run = simulate(m, ServerModel())
    assert run.max_parallel <= 3
    assert budget.used == 0  # every speculative connection was given back


def test_speculative_responses_are_matched_only_when_needed():
    # every probe gets an answer, but only the steps the walk reaches are matched
    answers = {p: b"NR-OK\r\n" if p == b"NR" else b"500 err\r\n" for p in (b"\r\n", b"GET", b"HELP", b"\x16", b"NR", b"MID")}
    m = machine(1234, sequential=False, probe_parallelism=8)
    run = simulate(m, Banner(b"", answers=answers))
    assert run.result.service == "norarity"
    steps_walked = 1 + 5  # NULL is silent; GenericLines GetRequest Help SSLSessionReq NoRarity
    assert m.matches <= steps_walked


def test_timer_firing_early_does_not_stall():
    # event loops may run a timer up to their clock resolution early; the machine must re-arm
    m = machine(1234, sequential=False, probe_parallelism=8)
    run = simulate(m, ServerModel(), early=0.0005)
    assert run.result.method == "table" and run.elapsed < 12.5


def test_refused_speculative_connections_fall_back_to_order():
    class Limited(ServerModel):
        """Refuses every connection beyond the first two (a connection-rate limit)."""

        def __init__(self):
            self.inner = Banner(b"", answers={b"GET": b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n"})

        def on_connect(self, conn, tls):
            return self.inner.on_connect(conn, tls)

        def on_data(self, conn, payload, since, tls):
            return self.inner.on_data(conn, payload, since, tls)

    srv = Limited()
    m = machine(80, sequential=False, probe_parallelism=8)
    real = m.handle
    from servprobe.engine.state import Connect as C
    from servprobe.engine.state import ConnectFailed

    refused: set[int] = set()

    def handle(ev, now):
        acts = real(ev, now)
        out = []
        for a in acts:
            if isinstance(a, C) and a.conn > 2:
                refused.add(a.conn)
                out.extend(real(ConnectFailed(a.conn, "refused"), now))
            else:
                out.append(a)
        return out

    m.handle = handle  # type: ignore[method-assign]
    run = simulate(m, srv)
    assert refused  # speculation was tried and refused
    assert run.result.service == "http" and run.result.product == "nginx"


def test_udp_sequential_reuses_one_socket():
    run = simulate(machine(53, proto="udp"), ServerModel())
    assert run.connections == 1 and [c for c, _ in run.sent] == [1, 1]
    run = simulate(machine(53, proto="udp", sequential=False), ServerModel())
    assert run.connections == 2


class PerProbe(ServerModel):
    """Answers probes by prefix, each after its own delay; never speaks first."""

    def __init__(self, answers: dict[bytes, tuple[float, bytes]]):
        self.answers = answers

    def on_connect(self, conn, tls):
        return []

    def on_data(self, conn, payload, since, tls):
        for k, (delay, v) in self.answers.items():
            if payload.startswith(k):
                return [(delay, v)]
        return []


def test_quiet_step_rule_passes_a_probe_the_server_ignores():
    # GenericLines comes before GetRequest at port 1234; the server ignores blank lines (nginx,
    # redis do): nmap waits NULL 6 s + GenericLines 5 s, the rule passes it after Lmax + grace
    make = lambda: PerProbe({b"GET": (0.0, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n")})  # noqa: E731
    seq = simulate(machine(1234, sequential=True), make())
    spec = simulate(machine(1234, sequential=False), make())
    assert key(seq.result) == key(spec.result) and spec.result.product == "nginx"
    assert seq.elapsed >= 11.0
    assert spec.elapsed < 1.5


def test_quiet_step_rule_waits_for_a_slower_earlier_answer():
    # the earlier step answers 0.3 s late but within the rule's bound: it still wins, as in nmap
    make = lambda: PerProbe({  # noqa: E731
        b"\r\n": (0.3, b"220 x\r\n500 what\r\n"),
        b"GET": (0.0, b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\n\r\n"),
    })
    seq = simulate(machine(1234, sequential=True), make())
    spec = simulate(machine(1234, sequential=False), make())
    assert seq.result.product == "generic ftpd"
    assert key(seq.result) == key(spec.result)


def test_datagram_rule_does_not_wait_out_a_udp_answer():
    # U1 (listed for 53) gets a datagram that matches nothing; nmap waits its 5 s for more
    make = lambda: PerProbe({b"u1": (0.0, b"\x00\x07??"), b"u2": (0.0, b"u2")})  # noqa: E731
    seq = simulate(machine(53, proto="udp", sequential=True), make())
    spec = simulate(machine(53, proto="udp", sequential=False), make())
    assert seq.result.service == "echo" and key(seq.result) == key(spec.result)
    assert seq.elapsed >= 5.0
    assert spec.elapsed < 1.5
