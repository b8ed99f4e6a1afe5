"""The `servprobe` scanner command end to end, as a subprocess against loopback listeners:
usage errors, every output format (xmllint against nmap.dtd, python-libnmap, ndiff), a
terminal (pty) fed ANSI escapes by a service, Ctrl-C / SIGTERM, --host-timeout, UDP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from pty_run import run_on_pty

# --no-store: tests leave nothing in the user state dir (the store has its own tests)
SERVPROBE = [sys.executable, "-m", "servprobe", "--no-store"]
DTD = Path("/usr/share/nmap/nmap.dtd")
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
EVIL_BANNER = b'EVIL \x1b[31mred\x1b]0;pwned\x07 \x9b2J <&"x>\r\n'

# a tiny probe file of our own: fast and independent of which databases are installed
PROBES = r"""
Probe TCP NULL q||
totalwaitms 1500
tcpwrappedms 500
match evil m|^EVIL ([^\r\n]*)\r\n| p/EvilServer/ v/1.0/ i/$1/
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]Debian-(\S+)\r\n| p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/ o/Linux/ cpe:/a:openbsd:openssh:$2/ cpe:/o:linux:linux_kernel/a

Probe TCP SlowHello q|hello\r\n|
rarity 1
totalwaitms 30000
match echo m|^hello| p/echo/
"""


class BannerServer:
    """Threaded TCP server: sends `banner` on connect (or nothing), keeps the connection
    open for a while, then closes. Stopped by the fixture."""

    def __init__(self, banner: bytes | None) -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.banner:
                    conn.sendall(self.banner)
                conn.settimeout(0.2)
                deadline = time.monotonic() + 40
                while not self.stopping and time.monotonic() < deadline:
                    try:
                        if conn.recv(4096) == b"":
                            return
                    except TimeoutError:
                        continue
            except OSError:
                return

    def close(self) -> None:
        self.stopping = True
        # shutdown wakes the thread blocked in accept(); close alone would leave it listening
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def servers(*banners: bytes | None) -> Iterator[list[BannerServer]]:
    started = [BannerServer(b) for b in banners]
    try:
        yield started
    finally:
        for s in started:
            s.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db") / "probes"
    path.write_text(PROBES.lstrip())
    return path


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = (
        str(Path(__file__).resolve().parents[1] / "src") + os.pathsep + e.get("PYTHONPATH", "")
    )
    e.pop("COLUMNS", None)
    return e


def run_cli(
    *args: str, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVPROBE, *args], capture_output=True, text=True, timeout=timeout, env=env(), input=stdin
    )


def xml_valid(path: Path) -> None:
    if shutil.which("xmllint") is None or not DTD.is_file():
        pytest.fail("xmllint and /usr/share/nmap/nmap.dtd are needed (Makefile APT_PACKAGES)")
    proc = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------------------------

USAGE = [
    (["-p", "1-70000"], "'1-70000'"),
    (["-p", "nosuchsvc"], "unknown service name: 'nosuchsvc'"),
    (["127.0.0.300"], "octet out of range 0-255: '127.0.0.300'"),
    (["::1"], "IPv6 target needs -6: '::1'"),
    (["-T9"], "bad timing template '9'"),
    (["--host-timeout", "10x"], "bad time '10x'"),
    (["--version-intensity", "12"], "'12' out of range (0-9)"),
    (["--top-ports", "0"], "'0' out of range"),
    (["-F", "--top-ports", "10"], "-F and --top-ports cannot be used together"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["-iL", "/nonexistent/targets"], "cannot read target file"),
    (["--db", "/nonexistent/probes"], "cannot load probe database '/nonexistent/probes'"),
    (
        ["-oX", "/nonexistent/dir/out.xml", "--no-sV"],
        "cannot write output file '/nonexistent/dir/out.xml'",
    ),
    (["--exclude", "1.2.3.4.5"], "bad --exclude entry"),
]


@pytest.mark.parametrize(("args", "message"), USAGE)
def test_usage_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_help_has_examples() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for flag in (
        "-sV",
        "-p PORTS",
        "--top-ports",
        "-oA BASE",
        "-oJ FILE",
        "--version-intensity",
        "--db",
        "examples:",
    ):
        assert flag in proc.stdout


def test_scan_writes_every_format_and_they_agree(tmp_path: Path, probes: Path) -> None:
    closed = free_port()
    with servers(SSH_BANNER, EVIL_BANNER) as (ssh, evil):
        ports = f"{ssh.port},{evil.port},{closed}"
        base = tmp_path / "scan"
        proc = run_cli(
            "--db",
            str(probes),
            "--version-light",
            "-p",
            ports,
            "-oA",
            str(base),
            "-oJ",
            str(base) + ".jsonl",
            "127.0.0.1",
        )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"Probe database: {probes}" in out
    assert f"{ssh.port}/tcp" in out and "OpenSSH 9.2p1 Debian 2 (protocol 2.0)" in out
    assert "\x1b" not in out and "\\x1b[31mred" in out
    assert "servprobe done: 1 IP address (1 host up) scanned in" in out

    xml = base.with_suffix(".xml")
    xml_valid(xml)
    root = ET.parse(xml).getroot()
    assert root.find("runstats/finished").get("exit") == "success"

    objs = [json.loads(line) for line in (tmp_path / "scan.jsonl").read_text().splitlines()]
    assert objs[0]["type"] == "start" and objs[0]["db"] == str(probes)
    assert objs[-1]["type"] == "summary" and objs[-1]["hosts_up"] == 1
    jports = {o["port"]: o for o in objs if o["type"] == "port"}
    assert set(jports) == {ssh.port, evil.port, closed}
    assert jports[ssh.port]["product"] == "OpenSSH" and jports[ssh.port]["method"] == "probed"
    assert jports[closed]["state"] == "closed"

    from libnmap.parser import NmapParser

    report = NmapParser.parse_fromfile(str(xml))
    (host,) = report.hosts
    assert host.address == "127.0.0.1"
    for svc in host.services:
        j = jports[svc.port]
        assert svc.state == j["state"]
        if j["state"] == "open":
            d = svc.service_dict
            assert d.get("name") == (j["service"] or "unknown")
            for field in ("product", "version", "extrainfo"):
                assert d.get(field) == j[field], (field, d, j)
            assert d.get("cpelist", []) == j["cpes"]

    gnmap = base.with_suffix(".gnmap").read_text()
    assert f"{ssh.port}/open/tcp//ssh//OpenSSH 9.2p1 Debian 2 (protocol 2.0)/" in gnmap
    assert f"{closed}/closed/tcp//" in gnmap
    normal = base.with_suffix(".nmap").read_text()
    assert normal.startswith("# servprobe ") and "\x1b" not in normal


def test_ndiff_compares_two_of_our_xml_files(tmp_path: Path, probes: Path) -> None:
    with servers(SSH_BANNER) as (ssh,):
        other = BannerServer(SSH_BANNER)
        try:
            ports = f"{ssh.port},{other.port}"
            a, b = tmp_path / "a.xml", tmp_path / "b.xml"
            assert (
                run_cli(
                    "--db", str(probes), "-n", "-p", ports, "-oX", str(a), "127.0.0.1"
                ).returncode
                == 0
            )
        finally:
            other.close()
        assert (
            run_cli("--db", str(probes), "-n", "-p", ports, "-oX", str(b), "127.0.0.1").returncode
            == 0
        )
    same = subprocess.run(["ndiff", str(a), str(a)], capture_output=True, text=True)
    assert same.returncode == 0, same.stderr
    diff = subprocess.run(["ndiff", str(a), str(b)], capture_output=True, text=True)
    assert diff.returncode == 1, diff.stderr  # 1 = differences found
    assert f"-{other.port}/tcp open" in diff.stdout and f"+{other.port}/tcp closed" in diff.stdout


def test_terminal_shows_ansi_from_a_service_escaped(probes: Path) -> None:
    with servers(EVIL_BANNER) as (evil,):  # the scanner on a real terminal (stdout and stderr)
        screen, code = run_on_pty(
            [*SERVPROBE, "--db", str(probes), "-n", "-p", str(evil.port), "127.0.0.1"],
            env(), timeout=90)
    assert code == 0, screen.decode(errors="replace")
    assert b"EvilServer 1.0" in screen
    assert (
        b"\x1b[31mred" not in screen and b"\x1b]0;pwned" not in screen and b"\x9b2J" not in screen
    )
    assert b"\\x1b[31mred" in screen
    # the live progress line (stderr): rendered at least once, when the display stops
    assert b"ETA" in screen and re.search(rb"hosts [01]/1 \(", screen)


def test_no_progress_display_when_piped(probes: Path) -> None:
    with servers(SSH_BANNER) as (ssh,):
        proc = run_cli("--db", str(probes), "-n", "-p", str(ssh.port), "127.0.0.1")
    assert proc.returncode == 0
    assert "ETA" not in proc.stderr and "\x1b" not in proc.stderr


def test_verbose_announces_open_ports(probes: Path) -> None:
    with servers(SSH_BANNER) as (ssh,):
        proc = run_cli("--db", str(probes), "-v", "-n", "-p", str(ssh.port), "127.0.0.1")
    assert proc.returncode == 0
    assert f"Discovered open port {ssh.port}/tcp on 127.0.0.1" in proc.stdout


def _wait_for(path: Path, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in {path}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_writes_every_finished_result(
    tmp_path: Path, probes: Path, signum: int, code: int
) -> None:
    with servers(SSH_BANNER, None) as (ssh, silent):
        base = tmp_path / "int"
        jsonl = tmp_path / "int.jsonl"
        proc = subprocess.Popen(
            [
                *SERVPROBE,
                "--db",
                str(probes),
                "-n",
                "-p",
                f"{ssh.port},{silent.port}",
                "-oA",
                str(base),
                "-oJ",
                str(jsonl),
                "127.0.0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        try:
            _wait_for(jsonl, '"product":"OpenSSH"')  # the silent port is still waiting (30 s probe)
            proc.send_signal(signum)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert "OpenSSH 9.2p1 Debian 2" in stdout and "scan interrupted" in stdout
    xml = base.with_suffix(".xml")
    xml_valid(xml)
    root = ET.parse(xml).getroot()
    assert root.find("runstats/finished").get("exit") == "error"
    ports = {p.get("portid"): p for p in root.iter("port")}
    assert ports[str(ssh.port)].find("service").get("product") == "OpenSSH"
    assert ports[str(silent.port)].find("state").get("state") == "open"  # found, not identified
    objs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert objs[-1]["type"] == "summary" and objs[-1]["interrupted"] is True
    assert {o["port"] for o in objs if o["type"] == "port"} == {ssh.port, silent.port}
    assert "interrupted" in base.with_suffix(".gnmap").read_text()


def test_host_timeout_reports_what_was_found(tmp_path: Path, probes: Path) -> None:
    with servers(SSH_BANNER, None) as (ssh, silent):
        start = time.monotonic()
        proc = run_cli(
            "--db",
            str(probes),
            "-n",
            "--host-timeout",
            "4s",
            "-p",
            f"{ssh.port},{silent.port}",
            "-oJ",
            "-",
            "127.0.0.1",
        )
        elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 25  # the silent service alone would take 30 s
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    host = next(o for o in objs if o["type"] == "host")
    assert host["timedout"] is True
    ports = {o["port"]: o for o in objs if o["type"] == "port"}
    assert ports[ssh.port]["product"] == "OpenSSH"
    assert ports[silent.port]["state"] == "open"


def test_default_target_is_localhost_top_1000(tmp_path: Path) -> None:
    proc = run_cli("--no-sV", "-n", "-oJ", "-")
    assert proc.returncode == 0, proc.stderr
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    start = objs[0]
    assert start["service_scan"] is False
    from servprobe.scan.ports import select_ports

    assert start["ports"]["tcp"] == select_ports(["tcp"]).spec_strings()["tcp"]
    host = next(o for o in objs if o["type"] == "host")
    assert host["address"] == "127.0.0.1" and host["status"] == "up"


def test_port_scan_only_normal_output(tmp_path: Path) -> None:
    closed = free_port()
    with servers(SSH_BANNER) as (ssh,):
        proc = run_cli("--no-sV", "-n", "-p", f"{ssh.port},{closed}", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("PORT"))
    assert header.split() == ["PORT", "STATE", "SERVICE"]
    assert any(ln.startswith(f"{ssh.port}/tcp") and " open " in ln for ln in lines)
    assert any(ln.startswith(f"{closed}/tcp") and " closed " in ln for ln in lines)
    assert "Probe database" not in proc.stdout


def test_udp_port_states_without_version_detection() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    try:
        proc = run_cli(
            "--no-sV",
            "-n",
            "-sU",
            "-p",
            f"{silent.getsockname()[1]},{closed}",
            "-oG",
            "-",
            "127.0.0.1",
        )
    finally:
        silent.close()
    assert proc.returncode == 0, proc.stderr
    assert "/open|filtered/udp//" in proc.stdout
    assert f"{closed}/closed/udp//" in proc.stdout


def test_down_host_and_exclusions(tmp_path: Path) -> None:
    # every target excluded: nothing scanned, still a complete report
    proc = run_cli(
        "--no-sV", "-n", "-p", "1", "--exclude", "127.0.0.0/30", "127.0.0.1-3", "-oX", "-"
    )
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    assert root.find("runstats/hosts").attrib == {"up": "0", "down": "0", "total": "0"}


def test_open_reason_and_nmap_habits(probes: Path) -> None:
    closed = free_port()
    with servers(SSH_BANNER) as (ssh,):
        proc = run_cli(
            "--db",
            str(probes),
            "-n",
            "-sSV",
            "--open",
            "--reason",
            "--max-retries",
            "0",
            "-p",
            f"{ssh.port},{closed}",
            "127.0.0.1",
        )
    assert proc.returncode == 0, proc.stderr
    assert "connect scan (-sT) instead" in proc.stderr
    lines = proc.stdout.splitlines()
    header = next(ln for ln in lines if ln.startswith("PORT"))
    assert header.split() == ["PORT", "STATE", "SERVICE", "REASON", "VERSION"]
    assert any(ln.startswith(f"{ssh.port}/tcp") and "syn-ack" in ln for ln in lines)
    assert not any(ln.startswith(f"{closed}/tcp") for ln in lines)  # --open hides it
    assert "Not shown: 1 closed tcp port (conn-refused)" in lines
    # --open: a host without open ports is not reported at all
    proc = run_cli("--no-sV", "-n", "--open", "-p", str(closed), "127.0.0.1")
    assert "scan report" not in proc.stdout and "(1 host up)" in proc.stdout


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_ndiff_finds_no_difference_between_nmap_and_us(tmp_path: Path) -> None:
    closed = free_port()
    # nmap-services names some ports literally "unknown"; nmap lists that name on closed ones
    named_unknown = next(
        int(fields[1].split("/")[0])
        for fields in (ln.split() for ln in Path("/usr/share/nmap/nmap-services").read_text().splitlines())
        if len(fields) > 1 and fields[0] == "unknown" and fields[1].endswith("/tcp")
        and int(fields[1].split("/")[0]) > 1024 and _port_is_free(int(fields[1].split("/")[0]))
    )
    with servers(SSH_BANNER) as (ssh,):
        ports = f"{ssh.port},{closed},{named_unknown}"
        theirs, ours = tmp_path / "nmap.xml", tmp_path / "servprobe.xml"
        nm = subprocess.run(["nmap", "-sV", "-n", "-Pn", "-p", ports, "-oX", str(theirs), "127.0.0.1"],
                            capture_output=True, text=True, timeout=120)
        assert nm.returncode == 0, nm.stderr
        sp = run_cli("--db", "nmap", "-n", "-Pn", "-p", ports, "-oX", str(ours), "127.0.0.1")
        assert sp.returncode == 0, sp.stderr
    diff = subprocess.run(["ndiff", str(theirs), str(ours)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout  # same hosts, ports, states, services, versions
    assert "/tcp" not in diff.stdout


def test_ipv6_scan(tmp_path: Path, probes: Path) -> None:
    srv = socket.socket(socket.AF_INET6)
    try:
        srv.bind(("::1", 0))
    except OSError:
        srv.close()
        pytest.skip("no IPv6 loopback in this environment")
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = srv.accept()
                conn.sendall(SSH_BANNER)
                threading.Timer(2, conn.close).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        xml = tmp_path / "v6.xml"
        proc = run_cli("--db", str(probes), "-6", "-n", "-p", str(port), "-oX", str(xml), "::1")
    finally:
        with contextlib.suppress(OSError):
            srv.shutdown(socket.SHUT_RDWR)
        srv.close()
    assert proc.returncode == 0, proc.stderr
    assert f"{port}/tcp open  ssh     OpenSSH 9.2p1 Debian 2 (protocol 2.0)" in proc.stdout
    xml_valid(xml)
    assert ET.parse(xml).getroot().find("host/address").attrib == {"addr": "::1", "addrtype": "ipv6"}


def test_list_scan_and_ping_scan() -> None:
    # -sL sends nothing at all; loopback anyway, should that ever break
    proc = run_cli("-sL", "-n", "127.0.3.0/30", "-oG", "-")
    assert proc.returncode == 0, proc.stderr
    assert [ln.split("\t") for ln in proc.stdout.splitlines() if ln.startswith("Host:")] == [
        [f"Host: 127.0.3.{i} ()", "Status: Unknown"] for i in range(4)]
    assert "4 IP addresses (0 hosts up)" in proc.stdout
    proc = run_cli("-sn", "-n", "127.0.0.1-2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Host is up") == 2 and "PORT" not in proc.stdout
    assert "2 IP addresses (2 hosts up)" in proc.stdout
    bad = run_cli("-sn", "-p", "80", "127.0.0.1")
    assert bad.returncode == 2 and "-sn scans no ports" in bad.stderr
