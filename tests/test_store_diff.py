"""`servprobe diff`: stores and XML files (ours and nmap's), text and JSON, exit status."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from servprobe.commands import diff
from servprobe.result import ServiceResult
from servprobe.store import Store


def _store(path: Path, results: list[ServiceResult], ports: str = "1-1000") -> int:
    with Store.open(path) as store:
        sid = store.begin_scan(["-p", ports, "127.0.0.1"], {"ports_spec": {"tcp": ports}})
        store.record_host(sid, "127.0.0.1", status="up")
        for r in results:
            store.record(sid, r)
        store.end_scan(sid, "done")
    return sid


def _r(port: int, service: str | None = None, product: str | None = None,
       version: str | None = None, state: str = "open") -> ServiceResult:
    return ServiceResult("127.0.0.1", port, "tcp", state=state, service=service,  # type: ignore[arg-type]
                         product=product, version=version, method="probed")


def test_diff_two_stores_text_and_json(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    _store(a, [_r(22, "ssh", "OpenSSH", "9.2p1"), _r(21, "ftp", "vsftpd", "3.0.3"),
               _r(80, "http", "nginx", "1.22.1")], ports="1-10000")
    _store(b, [_r(22, "ssh", "OpenSSH", "9.3p1"), _r(80, "http", "nginx", "1.22.1"),
               _r(8080, "http-proxy", "evil\x1b[2J")], ports="1-10000")
    assert diff.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "~ 22/tcp" in out and "9.2p1" in out and "9.3p1" in out and "[version]" in out
    assert "- 21/tcp" in out and "+ 8080/tcp" in out
    assert "80/tcp" not in out.replace("8080/tcp", "")
    assert "\x1b" not in out and "\\x1b[2J" in out
    assert diff.main([str(a), str(b), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    kinds = {(c["port"], c["change"]) for c in doc["changes"]}
    assert kinds == {(21, "closed"), (22, "changed"), (8080, "opened")}
    assert diff.main([str(a), str(a)]) == 2  # one scan only in a single file
    capsys.readouterr()
    assert diff.main([str(b), str(tmp_path / "b.sqlite")]) == 2


def test_diff_same_store_two_scans_and_no_change(tmp_path: Path, capsys) -> None:
    path = tmp_path / "s.sqlite"
    _store(path, [_r(22, "ssh")])
    _store(path, [_r(22, "ssh")])
    assert diff.main([str(path), str(path)]) == 0
    assert "no changes" in capsys.readouterr().out
    _store(path, [_r(22, "ssh"), _r(23, "telnet")])
    assert diff.main([str(path), str(path), "--old-scan", "1", "--new-scan", "3"]) == 1
    assert "+ 23/tcp" in capsys.readouterr().out


def test_ports_outside_the_new_range_are_not_called_closed(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    _store(a, [_r(22, "ssh"), _r(5000, "upnp")], ports="1-65535")
    _store(b, [_r(22, "ssh")], ports="1-1000")
    # not a change both scans saw: listed apart, exit 0 (monitoring must not alert on it)
    assert diff.main([str(a), str(b), "--json"]) == 0
    (change,) = json.loads(capsys.readouterr().out)["changes"]
    assert change["change"] == "unscanned" and change["port"] == 5000
    # and the other way round: open now, outside the old scan's ports
    assert diff.main([str(b), str(a)]) == 0
    out = capsys.readouterr().out
    assert "? 5000/tcp" in out and "not scanned before" in out and "opened" not in out


def test_bad_inputs_exit_2_with_the_file_name(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    bad_xml = tmp_path / "bad.xml"
    bad_xml.write_text("<nmaprun><host>")
    for args in ([str(junk), str(junk)], [str(bad_xml), str(bad_xml)],
                 [str(tmp_path / "nope.xml"), str(junk)], ["--bogus"]):
        assert diff.main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip()


def test_diff_reads_real_nmap_xml(tmp_path: Path, capsys) -> None:
    """nmap's own -oX against one of our stores: the open port both saw is not a change."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    xml = tmp_path / "nmap.xml"
    try:
        subprocess.run(["nmap", "-n", "-Pn", "-sT", "-p", f"{port},{closed_port}", "127.0.0.1",
                        "-oX", str(xml)], check=True, capture_output=True, timeout=60)
    finally:
        listener.close()
    store = tmp_path / "ours.sqlite"
    _store(store, [_r(closed_port, "http", "nginx")], ports=f"{port},{closed_port}")
    assert diff.main([str(xml), str(store), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    kinds = {(c["port"], c["change"]) for c in doc["changes"]}
    assert kinds == {(port, "closed"), (closed_port, "opened")}


def test_diff_our_xml_against_our_store_of_the_same_scan(tmp_path: Path, capsys) -> None:
    """A CLI scan's -oX and its --store describe the same ports: no difference."""
    import sys

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    xml, store = tmp_path / "scan.xml", tmp_path / "scan.sqlite"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "servprobe", "--no-sV", "-Pn", "-n", "-p", f"{port},1-20",
             "127.0.0.1", "-oX", str(xml), "--store", str(store), "--no-progress"],
            capture_output=True, text=True, timeout=120)
    finally:
        listener.close()
    assert proc.returncode == 0, proc.stderr
    code = diff.main([str(xml), str(store)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert diff.main([str(store), str(xml), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"] == []


def test_entity_bomb_xml_is_refused_quickly(tmp_path: Path, capsys) -> None:
    """A billion-laughs XML input ends in an error (exit 2), not in gigabytes of memory."""
    import time

    ents = ['<!ENTITY e0 "lol">'] + [
        f'<!ENTITY e{i} "{f"&e{i - 1};" * 10}">' for i in range(1, 10)
    ]
    doc = (
        '<?xml version="1.0"?>\n<!DOCTYPE nmaprun [' + "\n".join(ents) + "]>\n"
        '<nmaprun><host><address addr="127.0.0.1" addrtype="ipv4"/><ports>'
        '<port protocol="tcp" portid="1"><state state="open"/><service name="&e9;"/></port>'
        "</ports></host></nmaprun>\n"
    )
    bomb = tmp_path / "bomb.xml"
    bomb.write_text(doc)
    t = time.monotonic()
    assert diff.main([str(bomb), str(bomb)]) == 2
    assert time.monotonic() - t < 10
    assert "cannot read XML" in capsys.readouterr().err
