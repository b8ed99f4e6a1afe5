"""-iL inputs from other tools (servprobe.scan.inputs), end to end against loopback listeners.

Every file is written in the tool's own documented output format: masscan's from its
src/out-*.c fprintf formats (-oL out-text.c, -oJ out-json.c, -oD out-ndjson.c, -oX
out-xml.c with one <host> per port, -oG out-grepable.c), naabu's JSON from
v2/pkg/runner/output.go (jsonResult), zmap's CSV from src/output_modules/module_csv.c (a
header line naming the fields, then one row per response); nmap's XML and -oG are produced by
running the real nmap. The scanned services are real listeners on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopback_listeners import Listener
from servprobe.scan.inputs import (
    InputError,
    PortInput,
    detect,
    merge_hosts,
    open_input,
)

SERVPROBE = [sys.executable, "-m", "servprobe", "--no-store", "--no-progress"]
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
FTP_BANNER = b"220 (vsFTPd 3.0.3)\r\n"
PROBES = r"""
Probe UDP Hello q|hello\r\n|
totalwaitms 2000
match hello m|^HELLO ([\w.]+)\r\n| p/HelloServer/ v/$1/

Probe TCP NULL q||
totalwaitms 1500
match ssh m|^SSH-([\d.]+)-OpenSSH_([\w._-]+)[ -]Debian-(\S+)\r\n| p/OpenSSH/ v/$2 Debian $3/ i/protocol $1/
match ftp m|^220 \(vsFTPd ([\d.]+)\)\r\n| p/vsftpd/ v/$1/
"""
TS = 1700000000


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[Listener, Listener, int]]:
    ssh, ftp = Listener(SSH_BANNER), Listener(FTP_BANNER)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]  # bound, never listening: refused
    yield ssh, ftp, closed
    ssh.close()
    ftp.close()
    s.close()


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("db") / "probes"
    p.write_text(PROBES)
    return p


def run(args: list[str], probes: Path, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVPROBE, "--db", str(probes), *args],
        input=stdin, capture_output=True, text=True, timeout=timeout,
    )


def ports_of(jsonl: str) -> dict[tuple[str, str, int], dict[str, object]]:
    out = {}
    for line in jsonl.splitlines():
        obj = json.loads(line)
        if obj["type"] == "port":
            out[(obj["address"], obj["proto"], obj["port"])] = obj
    return out


# -- each tool's format, written as the tool writes it -----------------------------------------


def masscan_list(entries: list[tuple[str, str, int]]) -> str:
    # out-text.c: "#masscan\n", "%s %s %u %s %u\n" (status proto port ip timestamp), "# end\n"
    lines = ["#masscan\n"]
    lines += [f"open {proto} {port} {ip} {TS + i}\n" for i, (ip, proto, port) in enumerate(entries)]
    lines.append(f"banner tcp {entries[0][2]} {entries[0][0]} {TS} ssh SSH-2.0-OpenSSH_9.2p1\n")
    return "".join(lines) + "# end\n"


def masscan_json(entries: list[tuple[str, str, int]]) -> str:
    # out-json.c: "[\n", then per record (",\n" before all but the first) "{ " + fields + "}\n"
    out = ["[\n"]
    for i, (ip, proto, port) in enumerate(entries):
        if i:
            out.append(",\n")
        out.append(
            "{ " + f'  "ip": "{ip}", '
            + f'  "timestamp": "{TS}", "ports": [ {{"port": {port}, "proto": "{proto}", '
            + '"status": "open", "reason": "syn-ack", "ttl": 64} ] ' + "}\n"
        )
    ip, proto, port = entries[0]
    out.append(",\n")  # a banner record: no status, must not add anything
    out.append(
        "{ " + f'  "ip": "{ip}", '
        + f'  "timestamp": "{TS}", "ports": [ {{"port": {port}, "proto": "{proto}", '
        + '"service": {"name": "ssh", "banner": "SSH-2.0-OpenSSH_9.2p1"} } ] ' + "}\n"
    )
    return "".join(out) + "]\n"


def masscan_ndjson(entries: list[tuple[str, str, int]]) -> str:
    # out-ndjson.c: one object per line, data.status
    return "".join(
        "{" + f'"ip":"{ip}",' + f'"timestamp":"{TS}","port":{port},"proto":"{proto}","rec_type":"status",'
        + '"data":{"status":"open","reason":"syn-ack","ttl":64}' + "}\n"
        for ip, proto, port in entries
    )


def masscan_xml(entries: list[tuple[str, str, int]]) -> str:
    # out-xml.c: CRLF lines, one <host> element per open port
    out = [
        '<?xml version="1.0"?>\r\n', "<!-- masscan v1.0 scan -->\r\n",
        f'<nmaprun scanner="masscan" start="{TS}" version="1.0-BETA"  xmloutputversion="1.03">\r\n',
        '<scaninfo type="syn" protocol="tcp" />\r\n',
    ]
    for ip, proto, port in entries:
        out.append(
            f'<host endtime="{TS}"><address addr="{ip}" addrtype="ipv4"/><ports>'
            f'<port protocol="{proto}" portid="{port}"><state state="open" reason="syn-ack" reason_ttl="64"/>'
            "</port></ports></host>\r\n"
        )
    out.append(
        "<runstats>\r\n"
        f'<finished time="{TS + 9}" timestr="2023-11-14 22:13:29" elapsed="9" />\r\n'
        f'<hosts up="{len(entries)}" down="0" total="{len(entries)}" />\r\n'
        "</runstats>\r\n</nmaprun>\r\n"
    )
    return "".join(out)


def masscan_grepable(entries: list[tuple[str, str, int]]) -> str:
    # out-grepable.c: "# Masscan VERSION scan initiated ..." header, then
    # "Timestamp: %llu\tHost: %s ()\tPorts: %u/%s/%s/%s/%s/%s/%s\n"
    out = [
        "# Masscan 1.3.2 scan initiated Tue Nov 14 22:13:20 2023\n",
        "# Ports scanned: TCP(2;22-22,21-21) UDP(0;) SCTP(0;) PROTOCOLS(0;)\n",
    ]
    out += [f"Timestamp: {TS}\tHost: {ip} ()\tPorts: {port}/open/{proto}////\n" for ip, proto, port in entries]
    return "".join(out) + "# Masscan done at Tue Nov 14 22:13:29 2023\n"


def naabu_jsonl(entries: list[tuple[str, str, int]], host: str | None = None) -> str:
    # output.go jsonResult: host (omitted when equal to ip), ip, timestamp, port, protocol, tls
    out = []
    for ip, proto, port in entries:
        d: dict[str, object] = {}
        if host:
            d["host"] = host
        d.update({"ip": ip, "timestamp": "2023-11-14T22:13:20.123456789Z", "port": port,
                  "protocol": proto, "tls": False})
        out.append(json.dumps(d, separators=(",", ":")) + "\n")
    return "".join(out)


def zmap_csv(entries: list[tuple[str, str, int]], sep: str = ",") -> str:
    # module_csv.c: a header when more than one field, then one row per response
    return f"saddr{sep}sport\n" + "".join(f"{ip},{port}\n" for ip, _, port in entries)


# -- format detection and parsing (no network) ---------------------------------------------------

ENTRIES = [("127.0.0.1", "tcp", 22), ("127.0.0.2", "tcp", 80), ("127.0.0.1", "tcp", 21)]
WRITERS = {
    "masscan-oL": masscan_list,
    "masscan-oJ": masscan_json,
    "masscan-oD": masscan_ndjson,
    "masscan-oX": masscan_xml,
    "grepable": masscan_grepable,
    "naabu": naabu_jsonl,
    "zmap": zmap_csv,
}


def parse(text: str, tmp_path: Path, fmt: str = "auto", **kw: object) -> tuple[str, list[tuple[str, str | None, tuple]]]:
    f = tmp_path / "input"
    f.write_text(text, newline="")
    detected, lines = open_input(str(f), fmt)
    src = PortInput(str(f), detected, lines, **kw)  # type: ignore[arg-type]
    merged = list(merge_hosts(src))
    return src.format, merged


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_each_tool_format_is_detected_and_merged_per_host(fmt: str, tmp_path: Path) -> None:
    detected, merged = parse(WRITERS[fmt](ENTRIES), tmp_path)
    assert detected == fmt
    assert merged == [
        ("127.0.0.1", None, (("tcp", (21, 22)),)),
        ("127.0.0.2", None, (("tcp", (80,)),)),
    ]


def test_hostport_lines_v6_and_protocol(tmp_path: Path) -> None:
    text = "# from naabu\n127.0.0.1:22\n[::1]:8080\nlocalhost:udp/53\n127.0.0.1:tcp/21\n\n[::1]:161/udp\n"
    detected, merged = parse(text, tmp_path)
    assert detected == "hostport"
    assert merged == [
        ("127.0.0.1", None, (("tcp", (21, 22)),)),
        ("::1", None, (("tcp", (8080,)), ("udp", (161,)))),
        ("localhost", None, (("udp", (53,)),)),
    ]


def test_masscan_udp_and_closed_lines(tmp_path: Path) -> None:
    text = f"#masscan\nopen udp 53 127.0.0.1 {TS}\nclosed tcp 23 127.0.0.1 {TS}\nopen tcp 22 127.0.0.1 {TS}\n# end\n"
    _, merged = parse(text, tmp_path)
    assert merged == [("127.0.0.1", None, (("tcp", (22,)), ("udp", (53,))))]


def test_naabu_host_name_kept_and_zmap_old_header(tmp_path: Path) -> None:
    _, merged = parse(naabu_jsonl([("127.0.0.1", "tcp", 22)], host="localhost"), tmp_path)
    assert merged == [("127.0.0.1", "localhost", (("tcp", (22,)),))]
    # zmap releases before 3.0 separate header fields with ", "
    detected, merged = parse(zmap_csv([("127.0.0.1", "tcp", 22)], sep=", "), tmp_path)
    assert (detected, merged) == ("zmap", [("127.0.0.1", None, (("tcp", (22,)),))])


def test_plain_target_lists_stay_targets() -> None:
    for line in ("127.0.0.1", "10.0.0.0/24 10.0.1.1", "::1", "scanme.example", "10.0.0-3.1-254"):
        assert detect(line) == "targets", line


@pytest.mark.parametrize(
    "fmt,bad",
    [
        ("hostport", "127.0.0.1:22\nnot a host port\n"),
        ("masscan-oL", f"#masscan\nopen tcp 22 127.0.0.1 {TS}\nopen tcp 99999 127.0.0.1 {TS}\n"),
        ("naabu", naabu_jsonl([("127.0.0.1", "tcp", 22)]) + '{"ip":"127.0.0.1","port":22\n'),
        ("zmap", "saddr,sport\n127.0.0.1,22\n127.0.0.300,22\n"),
    ],
)
def test_bad_line_names_file_line_and_text(fmt: str, bad: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        parse(bad, tmp_path)
    msg = str(exc.value)
    last = bad.rstrip("\n").splitlines()[-1]
    assert f"{tmp_path / 'input'}:{len(bad.splitlines())}:" in msg
    assert repr(last) in msg
    warnings: list[str] = []
    _, merged = parse(bad, tmp_path, skip_bad=True, warn=warnings.append)
    assert merged == [("127.0.0.1", None, (("tcp", (22,)),))]
    assert len(warnings) == 1 and "skipped" in warnings[0]


def test_xml_error_names_line(tmp_path: Path) -> None:
    text = masscan_xml(ENTRIES).replace("<ports>", "<ports", 1)
    with pytest.raises(InputError, match=r"input:5: not well-formed XML"):
        parse(text, tmp_path)


def test_streamed_never_read_whole() -> None:
    """An endless masscan stream: the first host comes out after at most window+1 lines."""
    consumed = 0

    def endless() -> Iterator[tuple[int, str]]:
        nonlocal consumed
        yield 1, "#masscan\n"
        for i in itertools.count(2):
            consumed += 1
            yield i, f"open tcp 22 127.0.{(i // 250) % 250}.{i % 250} {TS}\n"

    src = PortInput("-", "masscan-oL", endless())
    first = next(iter(merge_hosts(src, window=8)))
    assert first[0] == "127.0.0.2" and consumed <= 10


# -- end to end: servprobe reads each format and probes exactly the listed ports ---------------


def test_every_format_scans_listed_ports_only(services: tuple[Listener, Listener, int], probes: Path, tmp_path: Path) -> None:
    ssh, ftp, _ = services
    entries = [("127.0.0.1", "tcp", ssh.port), ("127.0.0.1", "tcp", ftp.port)]
    for fmt, writer in WRITERS.items():
        f = tmp_path / f"{fmt}.txt"
        f.write_text(writer(entries), newline="")
        before = ssh.accepted
        res = run(["-iL", str(f), "-oJ", "-"], probes)
        assert res.returncode == 0, (fmt, res.stderr)
        found = ports_of(res.stdout)
        assert set(found) == {("127.0.0.1", "tcp", ssh.port), ("127.0.0.1", "tcp", ftp.port)}, fmt
        got = found[("127.0.0.1", "tcp", ssh.port)]
        assert (got["product"], got["version"]) == ("OpenSSH", "9.2p1 Debian 2"), fmt
        assert found[("127.0.0.1", "tcp", ftp.port)]["product"] == "vsftpd", fmt
        # no port scan: the ports were taken as open from the input
        assert got["reason"] == "user-set", fmt
        assert ssh.accepted > before
        hosts = [json.loads(x) for x in res.stdout.splitlines() if '"type":"host"' in x]
        assert len(hosts) == 1, fmt  # masscan's one <host> per port merged into one host


def test_stdin_masscan_pipe_and_forced_format(services: tuple[Listener, Listener, int], probes: Path) -> None:
    ssh, _, _ = services
    res = run(["-iL", "-", "-oJ", "-"], probes, stdin=masscan_list([("127.0.0.1", "tcp", ssh.port)]))
    assert res.returncode == 0, res.stderr
    assert ports_of(res.stdout)[("127.0.0.1", "tcp", ssh.port)]["product"] == "OpenSSH"
    # forced: a zmap file read as naabu is a bad line
    res = run(["-iL", "-", "--input-format", "naabu"], probes, stdin=zmap_csv([("127.0.0.1", "tcp", ssh.port)]))
    assert res.returncode == 2
    assert "<stdin>:1:" in res.stderr and "'saddr,sport'" in res.stderr


def test_p_intersects_and_port_scans(services: tuple[Listener, Listener, int], probes: Path, tmp_path: Path) -> None:
    ssh, ftp, closed = services
    f = tmp_path / "hp.txt"
    f.write_text(f"127.0.0.1:{ssh.port}\n127.0.0.1:{ftp.port}\n127.0.0.1:{closed}\n")
    res = run(["-iL", str(f), "-p", f"{ssh.port},{closed}", "-oJ", "-"], probes)
    assert res.returncode == 0, res.stderr
    found = ports_of(res.stdout)
    assert ("127.0.0.1", "tcp", ftp.port) not in found  # not in -p
    assert found[("127.0.0.1", "tcp", ssh.port)]["reason"] == "syn-ack"  # a real port scan ran
    assert found[("127.0.0.1", "tcp", closed)]["state"] == "closed"


def test_bad_line_exits_2_before_any_packet(services: tuple[Listener, Listener, int], probes: Path, tmp_path: Path) -> None:
    ssh, _, _ = services
    f = tmp_path / "bad.txt"
    f.write_text(f"127.0.0.1:{ssh.port}\n127.0.0.1:http\n")
    before = ssh.accepted
    res = run(["-iL", str(f)], probes)
    assert res.returncode == 2
    assert f"{f}:2:" in res.stderr and "'127.0.0.1:http'" in res.stderr
    assert "Traceback" not in res.stderr
    time.sleep(0.2)
    assert ssh.accepted == before
    res = run(["-iL", str(f), "--skip-bad-input", "-oJ", "-"], probes)
    assert res.returncode == 0, res.stderr
    assert "skipped (--skip-bad-input)" in res.stderr
    assert ("127.0.0.1", "tcp", ssh.port) in ports_of(res.stdout)


def test_real_nmap_xml_and_grepable_reprobed(services: tuple[Listener, Listener, int], probes: Path, tmp_path: Path) -> None:
    """The "port scan now, version scan later" split, with nmap's own -oX and -oG files."""
    ssh, ftp, closed = services
    base = tmp_path / "nmap"
    subprocess.run(
        ["nmap", "-n", "-Pn", "-sT", "-p", f"{ssh.port},{ftp.port},{closed}", "127.0.0.1",
         "-oX", f"{base}.xml", "-oG", f"{base}.gnmap"],
        check=True, capture_output=True, timeout=120,
    )
    for path in (f"{base}.xml", f"{base}.gnmap"):
        res = run(["-iL", path, "-oJ", "-"], probes)
        assert res.returncode == 0, res.stderr
        found = ports_of(res.stdout)
        assert set(found) == {("127.0.0.1", "tcp", ssh.port), ("127.0.0.1", "tcp", ftp.port)}, path
    # and servprobe's own XML the same way
    res = run(["-p", f"{ssh.port},{closed}", "127.0.0.1", "-oX", str(tmp_path / "sp.xml")], probes)
    assert res.returncode == 0, res.stderr
    res = run(["-iL", str(tmp_path / "sp.xml"), "-oJ", "-"], probes)
    assert set(ports_of(res.stdout)) == {("127.0.0.1", "tcp", ssh.port)}


def test_stdin_is_scanned_while_the_pipe_is_still_open(services: tuple[Listener, Listener, int], probes: Path) -> None:
    """`masscan … -oL - | servprobe -iL -`: a host is probed while masscan is still running."""
    ssh, ftp, _ = services
    proc = subprocess.Popen(
        [*SERVPROBE, "--db", str(probes), "-iL", "-", "-oJ", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def port_line(port: int) -> dict[str, object]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            obj = json.loads(line)
            if obj["type"] == "port" and obj["port"] == port:
                return obj
        raise AssertionError(f"no result for port {port} while stdin is open")

    try:
        proc.stdin.write(f"#masscan\nopen tcp {ssh.port} 127.0.0.1 {TS}\n")
        proc.stdin.flush()
        assert port_line(ssh.port)["product"] == "OpenSSH"
        assert proc.poll() is None  # still reading the pipe
        proc.stdin.write(f"open tcp {ftp.port} 127.0.0.1 {TS + 1}\n")
        proc.stdin.flush()
        assert port_line(ftp.port)["product"] == "vsftpd"
        proc.stdin.write("# end\n")
        proc.stdin.close()
        proc.stdout.read()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_udp_ports_from_hostport_and_masscan(probes: Path, tmp_path: Path) -> None:
    """`host:udp/PORT` and masscan's `open udp` lines: the port is probed over UDP, no -sU."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                return
            if data.startswith(b"hello"):
                sock.sendto(b"HELLO 2.1\r\n", peer)

    threading.Thread(target=answer, daemon=True).start()
    try:
        for text in (f"127.0.0.1:udp/{port}\n", f"#masscan\nopen udp {port} 127.0.0.1 {TS}\n# end\n"):
            f = tmp_path / "udp.txt"
            f.write_text(text)
            res = run(["-iL", str(f), "-oJ", "-"], probes)
            assert res.returncode == 0, res.stderr
            found = ports_of(res.stdout)
            assert set(found) == {("127.0.0.1", "udp", port)}, text
            assert (found[("127.0.0.1", "udp", port)]["product"], found[("127.0.0.1", "udp", port)]["version"]) == ("HelloServer", "2.1")
    finally:
        sock.close()


def test_a_file_is_merged_per_host_over_its_whole_length(tmp_path: Path) -> None:
    """masscan's random order over many hosts: every host comes out once, with all its ports."""
    import random

    entries = [(f"127.1.{h // 250}.{h % 250}", "tcp", p) for h in range(3000) for p in (22, 80, 443)]
    random.Random(1).shuffle(entries)
    detected, merged = parse(masscan_list(entries), tmp_path)
    assert detected == "masscan-oL" and len(merged) == 3000
    assert {ports for _, _, ports in merged} == {(("tcp", (22, 80, 443)),)}
