"""Real daemons that cap connections per client (issue 17), started hermetically for tests.

Owns three context managers, each a Debian daemon in the foreground with its own config, pid
and log in a private temp directory, on a free 127.0.0.1 port (tests/daemons.py's helpers):

  * `ngircd_capped()`  ngIRCd with `MaxConnectionsIP = 2` (refuses the third connection from
    an address with `ERROR :Connection refused, too many connections from your IP address`);
  * `sshd_capped()`    OpenSSH with `MaxStartups 2:100:2` (drops every unauthenticated
    connection past two);
  * `vsftpd_capped()`  vsftpd with `max_per_ip=2` (answers the third `421 There are too many
    connections from your internet address.` and closes).

`capped_daemons()` starts all three. `wait_idle(port)` waits until the daemon holds no client
connection any more (a run must not inherit the previous run's connections, which a capped
server still counts). `refusals(daemon)` counts the refusals a daemon logged, for
bench/bench_caps.py (sshd and ngircd log each one; vsftpd logs none, so it is None there).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from daemons import (
    HOST,
    Daemon,
    Endpoint,
    _require,
    _running,
    _wait_tcp,
    _workdir,
    dpkg_version,
    free_port,
)

CAP = 2  # connections per client the three daemons allow
NGIRCD_NAME = "irc.servprobe.test"
NGIRCD_REFUSAL = "Connection refused, too many connections from your IP address"
VSFTPD_REFUSAL = "There are too many connections from your internet address"


@contextlib.contextmanager
def ngircd_capped(cap: int | None = CAP) -> Iterator[Daemon]:
    """ngIRCd in the foreground (-n), at most `cap` connections per client (None: no cap)."""
    binary = _require("/usr/sbin/ngircd", "ngircd")
    version = dpkg_version("ngircd")
    with _workdir("ngircd", owner="nobody") as d:
        port = free_port()
        conf = d / "ngircd.conf"
        # DNS/Ident off: no lookups (and no NOTICE AUTH lines) on loopback; PAM off: no login
        conf.write_text(
            f"[Global]\nName = {NGIRCD_NAME}\nInfo = servprobe test\nListen = {HOST}\n"
            f"Ports = {port}\nPidFile = {d / 'ngircd.pid'}\nMotdPhrase = servprobe\n"
            "AdminInfo1 = servprobe\nAdminInfo2 = test\nAdminEMail = root@localhost\n"
            f"[Limits]\nMaxConnectionsIP = {cap or 0}\n"
            "[Options]\nDNS = no\nIdent = no\nPAM = no\n"
        )
        os.chmod(conf, 0o644)
        log = d / "ngircd.log"
        with _running([binary, "-n", "-f", str(conf)], log) as proc:
            _wait_tcp(port, proc, "ngircd", log)
            yield Daemon(
                "ngircd",
                "ngircd",
                version,
                [Endpoint("ngircd", port)],
                d,
                log,
                proc.pid,
                extra={"hostname": NGIRCD_NAME},
            )


@contextlib.contextmanager
def sshd_capped(cap: int | None = CAP) -> Iterator[Daemon]:
    """OpenSSH's sshd in the foreground, dropping unauthenticated connections past `cap`
    (None: tests/daemons.py's 200)."""
    binary = _require("/usr/sbin/sshd", "openssh-server")
    keygen = _require("ssh-keygen", "openssh-client")
    version = dpkg_version("openssh-server")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    with _workdir("sshd-capped") as d:
        port = free_port()
        key = d / "ssh_host_ed25519_key"
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
            check=True,
            capture_output=True,
        )
        cfg = d / "sshd_config"
        cfg.write_text(
            f"Port {port}\nListenAddress {HOST}\nHostKey {key}\nPidFile {d / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin no\nAuthorizedKeysFile none\n"
            + (f"MaxStartups {cap}:100:{cap}\n" if cap else "MaxStartups 200\n")
            + "LoginGraceTime 30\nLogLevel INFO\n"
        )
        log = d / "sshd.log"
        with _running([binary, "-D", "-e", "-f", str(cfg)], log) as proc:
            _wait_tcp(port, proc, "sshd", log)
            yield Daemon(
                "sshd", "openssh-server", version, [Endpoint("sshd", port)], d, log, proc.pid
            )


@contextlib.contextmanager
def vsftpd_capped(cap: int | None = CAP) -> Iterator[Daemon]:
    """vsftpd standalone in the foreground, at most `cap` sessions per client (None: no cap)."""
    binary = _require("/usr/sbin/vsftpd", "vsftpd")
    version = dpkg_version("vsftpd")
    with _workdir("vsftpd-capped") as d:
        port = free_port()
        empty = d / "empty"
        empty.mkdir(mode=0o755)
        log = d / "vsftpd.log"
        conf = d / "vsftpd.conf"
        conf.write_text(
            f"listen=YES\nlisten_ipv6=NO\nlisten_address={HOST}\nlisten_port={port}\n"
            "background=NO\nanonymous_enable=YES\nno_anon_password=YES\n"
            f"anon_root={empty}\nlocal_enable=NO\nwrite_enable=NO\n"
            f"secure_chroot_dir={empty}\npam_service_name=vsftpd\n"
            f"seccomp_sandbox=NO\nmax_per_ip={cap or 0}\nmax_clients=0\n"
            f"xferlog_enable=NO\nvsftpd_log_file={log}\ndual_log_enable=NO\n"
        )
        os.chmod(conf, 0o600)  # vsftpd refuses a config writable by others
        with _running([binary, str(conf)], log) as proc:
            _wait_tcp(port, proc, "vsftpd", log)
            yield Daemon("vsftpd", "vsftpd", version, [Endpoint("vsftpd", port)], d, log, proc.pid)


@contextlib.contextmanager
def capped_daemons(cap: int | None = CAP) -> Iterator[dict[str, Daemon]]:
    """All three daemons with that cap (None: the same daemons uncapped), by name."""
    with ngircd_capped(cap) as irc, sshd_capped(cap) as ssh, vsftpd_capped(cap) as ftp:
        yield {"ngircd": irc, "sshd": ssh, "vsftpd": ftp}


def _busy(port: int) -> list[str]:
    """The daemon's own sockets on `port` it still holds for a client, as "local remote
    state": SYN_RECV, ESTABLISHED or CLOSE_WAIT (the client closed, the daemon has not yet,
    so it still counts the client). Sockets the daemon closed already (FIN_WAIT, TIME_WAIT)
    and the client ends (ours) do not count against its cap."""
    hexport = f"{port:04X}"
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] in ("01", "03", "08") and fields[1].endswith(":" + hexport):
                    out.append(" ".join(fields[1:4]))
    return out


def wait_idle(port: int, timeout: float = 60.0) -> None:
    """Wait until the daemon on `port` holds no client connection (`_busy`)."""
    deadline = time.monotonic() + timeout
    while (busy := _busy(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not busy, f"connections to port {port} still open after {timeout:.0f} s: {busy}"


def refusals(daemon: Daemon) -> int | None:
    """Refusals the daemon logged so far (None: this daemon does not log them)."""
    text = Path(daemon.log).read_text(errors="replace") if Path(daemon.log).exists() else ""
    if daemon.name == "ngircd":
        return text.count("Refused connection from")
    if daemon.name == "sshd":
        return text.count("past MaxStartups")
    return None


def probe_cap(port: int, n: int = CAP + 1) -> list[bytes]:
    """Open n connections at once and return what each got within a second (the last ones
    show the daemon's refusal: proves the cap is really configured)."""
    socks = [socket.create_connection((HOST, port), timeout=2) for _ in range(n)]
    out = []
    try:
        time.sleep(0.3)
        for s in socks:
            s.settimeout(1.0)
            try:
                out.append(s.recv(4096))
            except TimeoutError:
                out.append(b"")
            except OSError:
                out.append(b"")
    finally:
        for s in socks:
            s.close()
    return out
