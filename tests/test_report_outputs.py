"""Reporters on hand-made results: nmap's normal layout, XML valid against nmap.dtd (and read
by python-libnmap), grepable lines, JSON Lines streaming; hostile strings stay harmless."""

from __future__ import annotations

import io
import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from servprobe.report.base import Outputs, split_ports, wrap_fingerprint
from servprobe.report.grepable import GrepableReporter
from servprobe.report.jsonl import JsonLinesReporter
from servprobe.report.normal import NormalReporter, port_table, seconds
from servprobe.report.xml import XmlReporter
from servprobe.result import ExtraPorts, HostResult, RpcInfo, ScanRun, ServiceResult

DTD = Path("/usr/share/nmap/nmap.dtd")
HOSTILE = "\x1b[31mred\x1b]0;title\x07 \x00nul <tag> & \"q\" ]]> -- \ud800 \x9b2J"
FP = (
    'SF-Port9999-TCP:V=0.1.0%I=7%D=11/24%Time=6B061D16%P=x86_64-pc-linux-gnu%r(NULL,40,"'
    + "hello\\x20world\\r\\n" * 6
    + '");'
)


def sample_run() -> tuple[ScanRun, HostResult]:
    run = ScanRun(
        args=["-p", "22,80,9999", "127.0.0.1"],
        start=1_700_000_000.0,
        db_path="/usr/share/nmap/nmap-service-probes",
        scan_types=["connect"],
        ports_spec={"tcp": "1-1000"},
    )
    ports = [
        ServiceResult("127.0.0.1", 22, "tcp", "open", "syn-ack", "ssh", "OpenSSH", "9.2p1 Debian 2",
                      "protocol 2.0", ostype="Linux", cpes=["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"],
                      method="probed", conf=10),
        ServiceResult("127.0.0.1", 443, "tcp", "open", "syn-ack", "http", "nginx", "1.22.1", tunnel="ssl",
                      method="probed", conf=10, hostname="www.example"),
        ServiceResult("127.0.0.1", 953, "tcp", "open", "syn-ack", "rndc", method="table", conf=3),
        ServiceResult("127.0.0.1", 9999, "tcp", "open", "syn-ack", None, fingerprint=FP, method="table"),
        ServiceResult("127.0.0.1", 111, "tcp", "open", "syn-ack", "rpcbind", version="2-4", extrainfo="RPC #100000",
                      rpc=RpcInfo(100000, "rpcbind", 2, 4), method="probed", conf=10),
        ServiceResult("127.0.0.1", 6666, "tcp", "open", "syn-ack", "evil", HOSTILE, HOSTILE, HOSTILE,
                      hostname=HOSTILE, method="probed", conf=10),
        ServiceResult("127.0.0.1", 113, "tcp", "filtered", "no-response", "ident"),
    ]
    ports += [ServiceResult("127.0.0.1", p, "tcp", "closed", "conn-refused") for p in range(2000, 2030)]
    host = HostResult("127.0.0.1", ["localhost"], "up", "conn-refused", ports=ports,
                      starttime=run.start, endtime=run.start + 5, latency=0.000054,
                      hostname_types=["PTR"])
    run.end = run.start + 12.5
    return run, host


def render(reporter_cls, **kw) -> str:
    run, host = sample_run()
    buf = io.StringIO()
    rep = reporter_cls(buf, **kw)
    outputs = Outputs([rep])
    outputs.start(run)
    for r in host.ports:
        if r.state == "open":  # the runner streams services as the engine finishes them
            outputs.port(r)
    outputs.host(host)
    run.hosts.append(host)
    outputs.finish(run)
    return buf.getvalue()


def test_split_ports_collapses_big_non_open_groups() -> None:
    _, host = sample_run()
    listed, extra = split_ports(host.ports)
    assert [e.count for e in extra] == [30]
    assert extra[0].reasons == {"conn-refused": 30} and extra[0].state == "closed"
    assert [r.port for r in listed] == [22, 111, 113, 443, 953, 6666, 9999]


def test_normal_output_layout_like_nmap() -> None:
    out = render(NormalReporter)
    lines = out.splitlines()
    assert lines[0].startswith("Starting servprobe ")
    assert "Probe database: /usr/share/nmap/nmap-service-probes" in lines
    assert "servprobe scan report for localhost (127.0.0.1)" in lines
    assert "Host is up (0.000054s latency)." in lines
    assert "Not shown: 30 closed tcp ports (conn-refused)" in lines
    header = next(i for i, ln in enumerate(lines) if ln.startswith("PORT"))
    assert lines[header].split() == ["PORT", "STATE", "SERVICE", "VERSION"]
    table = lines[header : header + 8]
    # every column starts where its header starts
    for name in ("STATE", "SERVICE", "VERSION"):
        col = lines[header].index(name)
        for row in table[1:]:
            if len(row) > col:  # rows without a version end early
                assert row[col - 1] == " " and row[col] != " ", (name, row)
    assert "22/tcp   open     ssh      OpenSSH 9.2p1 Debian 2 (protocol 2.0)" in table
    assert any(row.startswith("443/tcp") and "ssl/http" in row for row in table)
    assert any(row.startswith("953/tcp") and "rndc?" in row for row in table)
    assert any(row.startswith("113/tcp  filtered ident") for row in table)
    assert "1 service unrecognized despite returning data." in out
    sf = [ln for ln in lines if ln.startswith("SF")]
    assert sf[0].startswith("SF-Port9999-TCP:V=") and all(ln.startswith("SF:") for ln in sf[1:])
    assert all(len(ln) <= 78 for ln in sf)
    assert "".join([sf[0]] + [ln[3:] for ln in sf[1:]]) == FP
    info = next(ln for ln in lines if ln.startswith("Service Info:"))
    assert "OS: Linux" in info and "CPE: cpe:/o:linux:linux_kernel" in info and "Hosts: www.example" in info
    assert lines[-1] == "servprobe done: 1 IP address (1 host up) scanned in 12.50 seconds"
    assert lines[-2].startswith("Service detection performed.")


def test_normal_output_never_carries_control_characters() -> None:
    out = render(NormalReporter)
    assert not any(ord(c) < 0x20 and c != "\n" for c in out)
    assert "\x9b" not in out and "\x7f" not in out
    assert "\\x1b[31mred" in out


def test_normal_file_mode_has_comment_header_and_footer() -> None:
    out = render(NormalReporter, file_mode=True)
    lines = out.splitlines()
    assert lines[0].startswith("# servprobe 0.1.0 scan initiated ") and "as: servprobe -p 22,80,9999 127.0.0.1" in lines[0]
    assert lines[-1].startswith("# servprobe done at ") and lines[-1].endswith("scanned in 12.50 seconds")


def test_port_table_without_version_detection() -> None:
    r = ServiceResult("1.2.3.4", 80, "tcp", "open", "syn-ack", "http")
    assert port_table([r], service_scan=False) == ["PORT   STATE SERVICE", "80/tcp open  http"]


def test_latency_format() -> None:
    assert seconds(0.000054) == "0.000054"
    assert seconds(0.0012) == "0.0012"
    assert seconds(1.5) == "1.5"


def test_xml_is_valid_against_nmap_dtd(tmp_path: Path) -> None:
    path = tmp_path / "out.xml"
    path.write_text(render(XmlReporter), encoding="utf-8")
    proc = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_xml_fields_and_hostile_text_round_trip() -> None:
    root = ET.fromstring(render(XmlReporter).encode())
    assert root.tag == "nmaprun" and root.get("scanner") == "nmap" and root.get("profile_name") == "servprobe"
    assert root.find("scaninfo").attrib == {"type": "connect", "protocol": "tcp", "numservices": "1000", "services": "1-1000"}
    host = root.find("host")
    assert host.find("status").get("state") == "up"
    assert host.find("address").get("addr") == "127.0.0.1"
    assert host.find("hostnames/hostname").attrib == {"name": "localhost", "type": "PTR"}
    extra = host.find("ports/extraports")
    assert extra.get("count") == "30" and extra.find("extrareasons").get("ports") == "2000-2029"
    services = {p.get("portid"): p.find("service") for p in host.findall("ports/port")}
    ssh = services["22"]
    assert (ssh.get("name"), ssh.get("product"), ssh.get("version"), ssh.get("extrainfo"), ssh.get("ostype")) == (
        "ssh", "OpenSSH", "9.2p1 Debian 2", "protocol 2.0", "Linux")
    assert [c.text for c in ssh.findall("cpe")] == ["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"]
    assert services["443"].get("tunnel") == "ssl"
    assert services["9999"].get("servicefp") == FP and services["9999"].get("name") == "unknown"
    assert services["111"].get("rpcnum") == "100000" and services["111"].get("highver") == "4"
    evil = services["6666"].get("product")
    assert "<tag> & \"q\" ]]> --" in evil and "\x1b" not in evil and "\\x1b" in evil
    finished = root.find("runstats/finished")
    assert finished.get("exit") == "success" and finished.get("elapsed") == "12.50"
    assert root.find("runstats/hosts").attrib == {"up": "1", "down": "0", "total": "1"}


def test_xml_is_read_by_python_libnmap(tmp_path: Path) -> None:
    import libnmap.parser as libnmap_parser  # the test extra: installed by make test
    path = tmp_path / "out.xml"
    path.write_text(render(XmlReporter), encoding="utf-8")
    report = libnmap_parser.NmapParser.parse_fromfile(str(path))
    (host,) = report.hosts
    svc = {s.port: s for s in host.services}
    assert svc[22].service == "ssh" and svc[22].state == "open"
    assert svc[22].service_dict["product"] == "OpenSSH" and svc[22].service_dict["version"] == "9.2p1 Debian 2"
    assert svc[113].state == "filtered"


def test_grepable_lines() -> None:
    out = render(GrepableReporter).splitlines()
    assert out[0].startswith("# servprobe 0.1.0 scan initiated")
    assert out[1] == "# Probe database: /usr/share/nmap/nmap-service-probes"
    assert out[2] == "Host: 127.0.0.1 (localhost)\tStatus: Up"
    ports_line = out[3]
    assert ports_line.startswith("Host: 127.0.0.1 (localhost)\tPorts: ")
    assert "22/open/tcp//ssh//OpenSSH 9.2p1 Debian 2 (protocol 2.0)/" in ports_line
    assert "443/open/tcp//ssl|http//nginx 1.22.1/" in ports_line
    assert "953/open/tcp//rndc?///" in ports_line
    assert "111/open/tcp//rpcbind/(rpc #100000)|2-4 (RPC #100000)/" not in ports_line  # "/" is a separator
    assert "111/open/tcp//rpcbind/(rpc #100000)/" in ports_line
    assert ports_line.endswith("\tIgnored State: closed (30)")
    assert out[-1].startswith("# servprobe done at ") and "1 IP address (1 host up)" in out[-1]
    assert not any(ord(c) < 0x20 and c != "\t" for line in out for c in line)


def test_json_lines_stream_and_parse() -> None:
    lines = render(JsonLinesReporter).splitlines()
    objs = [json.loads(line) for line in lines]
    assert objs[0]["type"] == "start" and objs[-1]["type"] == "summary"
    ports = [o for o in objs if o["type"] == "port"]
    # every listed port once; collapsed closed ports only in the host's extraports
    assert sorted(o["port"] for o in ports) == [22, 111, 113, 443, 953, 6666, 9999]
    host = next(o for o in objs if o["type"] == "host")
    assert host["extraports"] == [{"state": "closed", "proto": "tcp", "count": 30, "reasons": {"conn-refused": 30}}]
    assert objs.index(host) > max(objs.index(p) for p in ports)
    evil = next(o for o in ports if o["port"] == 6666)
    assert evil["product"].startswith("\x1bred"[:1]) and "\\xd800" in evil["product"]
    assert objs[-1]["hosts_up"] == 1 and objs[-1]["interrupted"] is False
    for line in lines:  # strict parsers: valid UTF-8, no lone surrogates
        line.encode("utf-8")


def test_interrupted_run_is_marked_everywhere() -> None:
    run, _host = sample_run()
    run.interrupted = True
    bufs = [io.StringIO() for _ in range(4)]
    reps = [NormalReporter(bufs[0]), XmlReporter(bufs[1]), GrepableReporter(bufs[2]), JsonLinesReporter(bufs[3])]
    outs = Outputs(reps)
    outs.start(run)
    outs.finish(run)
    assert "interrupted" in bufs[0].getvalue()
    assert ET.fromstring(bufs[1].getvalue().encode()).find("runstats/finished").get("exit") == "error"
    assert "(interrupted)" in bufs[2].getvalue()
    assert json.loads(bufs[3].getvalue().splitlines()[-1])["interrupted"] is True


def test_wrap_fingerprint_accepts_wrapped_input() -> None:
    wrapped = "\n".join(wrap_fingerprint(FP))
    assert wrap_fingerprint(wrapped) == wrap_fingerprint(FP)


def test_all_ports_ignored_message() -> None:
    run = ScanRun(args=[], start=0.0)
    host = HostResult("10.0.0.1", [], "up", "user-set",
                      extra=[ExtraPorts("closed", "tcp", 1000, {"conn-refused": 1000})], extraports={"closed": 1000})
    buf = io.StringIO()
    rep = NormalReporter(buf)
    rep.start(run)
    rep.host(host)
    assert "All 1000 scanned ports on 10.0.0.1 are in ignored states." in buf.getvalue()
    assert "Not shown: 1000 closed tcp ports (conn-refused)" in buf.getvalue()


def test_progress_status_line_and_eta() -> None:
    from servprobe.report.progress import eta_seconds, status_line
    from servprobe.scan.runner import Stats

    stats = Stats(hosts_total=4, hosts_done=1, hosts_up=2, ports_total=4000, ports_done=2000,
                  services_total=10, services_done=5, started=100.0)
    assert eta_seconds(stats, now=110.0) == pytest.approx(10.0)
    line = status_line(stats, now=110.0)
    assert line == "hosts 1/4 (2 up)  ports 2000/4000  services 5 done, 5 in flight  ETA 00:00:10"
    fresh = Stats(ports_total=10, started=100.0)
    assert eta_seconds(fresh, now=100.5) is None and "ETA --:--" in status_line(fresh, now=100.5)


def test_verbose_outputs_list_down_hosts_and_stay_valid(tmp_path: Path) -> None:
    run = ScanRun(args=["-v"], start=1_700_000_000.0, verbose=1, service_scan=False,
                  ports_spec={"tcp": "80", "udp": "53"}, scan_types=["connect", "udp"], hosts_total=2, hosts_up=0)
    down = HostResult("10.9.9.9", [], "down", "no-response", starttime=run.start, endtime=run.start + 2)
    six = HostResult("::1", [], "down", "no-response")
    bufs = {cls: io.StringIO() for cls in (XmlReporter, GrepableReporter, NormalReporter, JsonLinesReporter)}
    outs = Outputs([cls(buf) for cls, buf in bufs.items()])
    outs.start(run)
    outs.host(down)
    outs.host(six)
    outs.finish(run)
    path = tmp_path / "down.xml"
    path.write_text(bufs[XmlReporter].getvalue())
    proc = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    root = ET.parse(path).getroot()
    assert [h.find("status").get("state") for h in root.findall("host")] == ["down", "down"]
    assert root.findall("host")[1].find("address").get("addrtype") == "ipv6"
    assert [s.get("protocol") for s in root.findall("scaninfo")] == ["tcp", "udp"]
    assert "Host: 10.9.9.9 ()\tStatus: Down" in bufs[GrepableReporter].getvalue()
    assert "servprobe scan report for 10.9.9.9 [host down]" in bufs[NormalReporter].getvalue()
    assert "Note: Host seems down." in bufs[NormalReporter].getvalue()
    lines = [json.loads(x) for x in bufs[JsonLinesReporter].getvalue().splitlines()]
    assert [x["status"] for x in lines if x["type"] == "host"] == ["down", "down"]
