"""nmap itself accepts our bundled database and reads the same answers from it as servprobe.

Our file is copied as DIR/nmap-service-probes and handed to `nmap --datadir DIR -sV` (and
once to the undocumented-but-real `--versiondb FILE`). nmap parses the whole file and compiles
every pattern before probing, so a syntax it rejects fails the run. The fields nmap then
reports for real daemons must equal servprobe's for the same ports with the same file.
Kept fast: banner-first and HTTP daemons, low version intensity, a handful of ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import daemons
import servprobe
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import scan_services

pytestmark = pytest.mark.daemon

DB_PATH = Path(__file__).resolve().parents[1] / "src" / "servprobe" / "data" / "servprobe-service-probes"
FIELDS = ("name", "product", "version", "extrainfo", "hostname", "ostype")


def _nmap() -> str:
    nmap = shutil.which("nmap")
    assert nmap, "nmap is not installed (make apt)"
    return nmap


def nmap_services(args: list[str], ports: list[int]) -> dict[int, dict[str, str | None]]:
    cmd = [_nmap(), "-n", "-Pn", "-sT", "-sV", "--version-intensity", "2", *args,
           "-p", ",".join(map(str, ports)), "127.0.0.1", "-oX", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "parse" not in proc.stderr.lower() and "error" not in proc.stderr.lower(), proc.stderr
    out: dict[int, dict[str, str | None]] = {}
    for port in ET.fromstring(proc.stdout).iter("port"):
        svc = port.find("service")
        assert svc is not None
        out[int(port.get("portid", "0"))] = {f: svc.get(f) for f in FIELDS}
    return out


def servprobe_services(ports: list[int]) -> dict[int, dict[str, str | None]]:
    db = servprobe.load_db(str(DB_PATH))
    results = scan_services(db, [ServiceTarget("127.0.0.1", p, "tcp") for p in ports],
                            EngineOptions(intensity=2, version_scripts="none"))
    return {r.port: {"name": r.service, "product": r.product, "version": r.version,
                     "extrainfo": r.extrainfo, "hostname": r.hostname, "ostype": r.ostype}
            for r in results}


@pytest.fixture(scope="module")
def datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("nmapdata")
    shutil.copy(DB_PATH, d / "nmap-service-probes")
    return d


def test_nmap_datadir_reads_our_db_like_servprobe(datadir: Path, sshd_daemon: daemons.Daemon,
                                                    vsftpd_daemon: daemons.Daemon,
                                                    nginx_daemon: daemons.Daemon) -> None:
    ports = [sshd_daemon.port, vsftpd_daemon.port, nginx_daemon.ports["nginx-http"]]
    theirs = nmap_services(["--datadir", str(datadir)], ports)
    ours = servprobe_services(ports)
    assert set(theirs) == set(ports)
    for port in ports:
        assert theirs[port] == ours[port], f"port {port}: nmap {theirs[port]} servprobe {ours[port]}"
    # and the answers are the ones our lines are for, not nmap's own database's
    assert theirs[sshd_daemon.port]["product"] == "OpenSSH"
    assert theirs[sshd_daemon.port]["ostype"] == "Linux"
    assert theirs[vsftpd_daemon.port]["version"] == daemons.upstream_version(vsftpd_daemon.version)


def test_nmap_versiondb_option_accepts_our_file(postfix_daemon: daemons.Daemon) -> None:
    theirs = nmap_services(["--versiondb", str(DB_PATH)], [postfix_daemon.port])
    assert theirs[postfix_daemon.port]["name"] == "smtp"
    assert theirs[postfix_daemon.port]["product"] == "Postfix smtpd"
    # our Postfix line captures the hostname without nmap's leading separator
    assert theirs[postfix_daemon.port]["hostname"] == postfix_daemon.extra["hostname"]


@pytest.mark.slow
def test_nmap_reads_our_db_like_servprobe_on_the_whole_daemon_set(
    datadir: Path, all_daemons: dict[str, daemons.Daemon]
) -> None:
    # every TCP endpoint of the real-daemon suite at the default intensity (TLS ones included:
    # our ClientHello line is a hard `ssl` match, so both tools restart inside TLS)
    ports = [e.port for _, e in daemons.endpoints(all_daemons) if e.proto == "tcp"]
    cmd = [_nmap(), "-n", "-Pn", "-sT", "-sV", "--datadir", str(datadir),
           "-p", ",".join(map(str, ports)), "127.0.0.1", "-oX", "-"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    theirs: dict[int, dict[str, str | None]] = {}
    for port in ET.fromstring(proc.stdout).iter("port"):
        svc = port.find("service")
        assert svc is not None
        theirs[int(port.get("portid", "0"))] = {f: svc.get(f) for f in (*FIELDS, "tunnel")}
    db = servprobe.load_db(str(DB_PATH))
    ours = {
        r.port: {"name": r.service, "product": r.product, "version": r.version,
                 "extrainfo": r.extrainfo, "hostname": r.hostname, "ostype": r.ostype,
                 "tunnel": r.tunnel}
        # the database's answers: servprobe's post-processors stay out of it (its redis-info
        # adds extrainfo "64 bits"; nmap -sV does not run redis-info, a discovery script)
        for r in scan_services(db, [ServiceTarget("127.0.0.1", p, "tcp") for p in ports],
                               EngineOptions(version_scripts="none"))
    }
    assert set(theirs) == set(ports) == set(ours)
    diffs = {p: (theirs[p], ours[p]) for p in ports if theirs[p] != ours[p]}
    assert not diffs, f"nmap vs servprobe with our database: {diffs}"


class _PjlPrinter:
    """A stand-in for a network printer on a raw-print port (9100-9107) of 127.0.0.1: silent
    until it reads, answers PJL's INFO ID as the PJL Technical Reference shows, and keeps
    every byte it was sent (a real printer would print them). No printer runs here."""

    MODEL = b"HP LaserJet 4250"

    def __init__(self) -> None:
        self.sock = socket.socket()
        for port in range(9100, 9108):
            try:
                self.sock.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            raise AssertionError("every port 9100-9107 of 127.0.0.1 is taken")
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while chunk := conn.recv(4096):
                    data += chunk
                    self.received += chunk
                    if b"@PJL INFO ID" in data and data.rstrip().endswith(b"X"):
                        conn.sendall(b'@PJL INFO ID\r\n"' + self.MODEL + b'"\r\n\x0c')
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def pjl_printer():
    printer = _PjlPrinter()
    yield printer
    printer.close()


def test_pjl_probe_only_with_allports_like_nmap(datadir: Path, pjl_printer: _PjlPrinter) -> None:
    """Our hp-pjl probe obeys the file's Exclude T:9100-9107 as nmap does: without
    --allports neither tool sends anything to the printer; with it both name the model."""
    port = pjl_printer.port
    db = servprobe.load_db(str(DB_PATH))
    target = [ServiceTarget("127.0.0.1", port, "tcp")]
    plain_nmap = nmap_services(["--datadir", str(datadir)], [port])[port]
    plain_ours = scan_services(db, target, EngineOptions(intensity=2, version_scripts="none"))[0]
    assert pjl_printer.received == b"", bytes(pjl_printer.received)  # nothing printed
    # both fall back to the port table's name; nmap also writes product "Excluded from
    # version scan" there, which servprobe does not (reported to the engine's owner)
    assert plain_nmap["name"] == plain_ours.service == "jetdirect"
    assert plain_nmap["version"] is None and plain_ours.version is None

    theirs = nmap_services(["--datadir", str(datadir), "--allports"], [port])[port]
    ours = scan_services(db, target, EngineOptions(intensity=2, allports=True,
                                                     version_scripts="none"))[0]
    assert theirs["name"] == "hp-pjl" and theirs["product"] == "HP LaserJet 4250"
    assert (ours.service, ours.product) == (theirs["name"], theirs["product"])
    assert b"@PJL INFO ID" in pjl_printer.received
