"""Real Debian daemons on 127.0.0.1 free ports, started and stopped by the test suite.

Owns: one context manager per daemon (sshd, nginx plain + TLS, vsftpd, postfix, redis,
memcached, dnsmasq, postgresql, stunnel4 wrapping ssh and redis) and `all_daemons()` which
starts the whole set for comparison tests, captures and benchmarks.

Every daemon runs in the foreground from its own config in a private temp directory, so the
system's configuration and any system instance are never touched. Stopping signals only the
process groups this module created (start_new_session=True makes the daemon the leader of a
fresh group, so its workers and per-connection children go with it).

Each context manager yields a `Daemon`: host, ports by endpoint, the Debian package and its
installed version (read from dpkg, never hard-coded), the log file, the work directory.
Run `python tests/daemons.py` to start everything and print the endpoints until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds; generous because CI shares 2 cores with everything else
STOP_TIMEOUT = 10.0

Proto = Literal["tcp", "udp"]


class DaemonError(RuntimeError):
    """A daemon did not start (or a prerequisite is missing); the message carries its log."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One listening port of a daemon, as a scanner sees it."""

    name: str  # unique across the set, e.g. "nginx-https"; also the capture directory name
    port: int
    proto: Proto = "tcp"
    tls: bool = False  # the port speaks TLS first (nginx ssl, stunnel)
    wraps: str | None = None  # for TLS wrappers: the Daemon.name of the plain service inside


@dataclass(slots=True)
class Daemon:
    """A running daemon started by this module."""

    name: str  # "sshd", "nginx", ...
    package: str  # Debian package whose version the service reports
    version: str  # installed Debian version of `package`, from dpkg-query
    endpoints: list[Endpoint]
    workdir: Path
    log: Path
    pid: int
    host: str = HOST
    extra: dict[str, str] = field(default_factory=dict)  # daemon-specific facts (hostname ...)

    @property
    def port(self) -> int:
        """The main (first) port."""
        return self.endpoints[0].port

    @property
    def proto(self) -> Proto:
        return self.endpoints[0].proto

    @property
    def ports(self) -> dict[str, int]:
        return {e.name: e.port for e in self.endpoints}

    def endpoint(self, name: str) -> Endpoint:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise KeyError(name)

    @property
    def upstream_version(self) -> str:
        return upstream_version(self.version)

    def log_text(self, limit: int = 4000) -> str:
        return read_log(self.log, limit)


# ---------------------------------------------------------------- package facts


@functools.cache
def dpkg_version(package: str) -> str:
    """The installed version of a Debian package, e.g. '1:9.2p1-2+deb12u3'."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as e:
        raise DaemonError("dpkg-query not found: these tests need Debian") from e
    if out.returncode != 0 or not out.stdout.strip():
        raise DaemonError(
            f"Debian package {package!r} is not installed (run `make apt`): {out.stderr.strip()}"
        )
    return out.stdout.strip()


def upstream_version(debian_version: str) -> str:
    """'1:9.2p1-2+deb12u3' -> '9.2p1' (epoch and Debian revision dropped)."""
    v = debian_version.split(":", 1)[1] if ":" in debian_version else debian_version
    return v.rsplit("-", 1)[0] if "-" in v else v


def debian_revision(debian_version: str) -> str:
    """'1:9.2p1-2+deb12u3' -> '2+deb12u3' ('' for a native package)."""
    v = debian_version.split(":", 1)[1] if ":" in debian_version else debian_version
    return v.rsplit("-", 1)[1] if "-" in v else ""


# ---------------------------------------------------------------- ports and processes

_handed_out: set[int] = set()


def free_port(*, udp_too: bool = False) -> int:
    """A port free on 127.0.0.1 for TCP (and UDP), never handed out twice in this process.

    The OS may still give it to someone else before the daemon binds; start-up then fails
    with the daemon's 'address in use' log, which is rare enough on a test machine.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        # well-known ports of our services change nmap's probe order: keep clear of them
        if port in _handed_out or port in (2181, 6379, 11211):
            continue
        if udp_too:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind((HOST, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise DaemonError("no free port found on 127.0.0.1")


def read_log(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-limit:] if len(text) > limit else text


def _require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else None)
    if not path:
        raise DaemonError(f"{binary} not found: install Debian package {package} (`make apt`)")
    return path


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], name: str, log: Path,
              extra_logs: tuple[Path, ...] = (), timeout: float = START_TIMEOUT) -> None:
    """Poll until the daemon listens on the port; fail with its log if it dies or hangs.

    A connect alone is not proof: someone else may hold the port (then our daemon fails to
    bind and exits), so the listening socket must belong to the daemon's process group.
    """
    deadline = time.monotonic() + timeout
    while True:
        rc = proc.poll()
        if rc is not None:
            raise DaemonError(_failure(f"{name} exited with status {rc} before listening on "
                                       f"{HOST}:{port}", log, extra_logs))
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                pass
            if _listens(proc.pid, port):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise DaemonError(_failure(f"{name} not listening on {HOST}:{port} after "
                                       f"{timeout:.0f} s", log, extra_logs))
        time.sleep(0.05)


def _listens(pgid: int, port: int) -> bool:
    """Whether a process of group `pgid` holds the TCP socket listening on HOST:port."""
    want = f"{socket.htonl(0x7F000001):08X}:{port:04X}"  # /proc/net/tcp's little-endian form
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                return True
        except OSError:
            continue
    return False


def _failure(what: str, log: Path, extra_logs: tuple[Path, ...]) -> str:
    parts = [what, f"--- {log}:", read_log(log)]
    for extra in extra_logs:
        parts += [f"--- {extra}:", read_log(extra)]
    return "\n".join(parts)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a daemon we started, and its process group (which only holds its own children)."""
    pgid = proc.pid  # start_new_session=True: the daemon leads its own group
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
    # leftovers of the group, e.g. a vsftpd session process still serving a client
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def _workdir(name: str, owner: str | None = None) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"servprobe-{name}-"))
    try:
        if owner:
            pw = pwd.getpwnam(owner)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


_live: set[subprocess.Popen[bytes]] = set()


def _stop_leftovers() -> None:
    for proc in list(_live):
        _stop(proc)


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _arm_cleanup() -> None:
    """Make sure the daemons go away if our process ends early.

    atexit covers normal exits and uncaught exceptions; SIGTERM (what `timeout` and CI
    runners send) would kill Python without running `finally` blocks, so it is turned into
    KeyboardInterrupt, which unwinds the context managers (pytest tears fixtures down too).
    """
    if getattr(_arm_cleanup, "done", False):
        return
    _arm_cleanup.done = True  # type: ignore[attr-defined]
    atexit.register(_stop_leftovers)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


@contextlib.contextmanager
def _running(argv: list[str], log: Path, *, stop_signal: int = signal.SIGTERM,
             env: dict[str, str] | None = None, cwd: Path | None = None,
             preexec: Callable[[], None] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    _arm_cleanup()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=cwd, preexec_fn=preexec,
        )
    _live.add(proc)
    try:
        yield proc
    finally:
        _stop(proc, stop_signal)
        _live.discard(proc)


def self_signed_cert(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A fresh self-signed RSA certificate and key made by openssl, in `directory`."""
    openssl = _require("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    out = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise DaemonError(f"openssl could not make a certificate: {out.stderr}")
    os.chmod(key, 0o600)
    return cert, key


# ---------------------------------------------------------------- the daemons


@contextlib.contextmanager
def sshd() -> Iterator[Daemon]:
    """OpenSSH's sshd in the foreground with its own config and host key."""
    binary = _require("/usr/sbin/sshd", "openssh-server")
    keygen = _require("ssh-keygen", "openssh-client")
    version = dpkg_version("openssh-server")
    # privilege separation directory; the Debian package makes it only at service start
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    with _workdir("sshd") as d:
        port = free_port()
        key = d / "ssh_host_ed25519_key"
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                       capture_output=True)
        cfg = d / "sshd_config"
        cfg.write_text(
            f"Port {port}\nListenAddress {HOST}\nHostKey {key}\nPidFile {d / 'sshd.pid'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin no\nAuthorizedKeysFile none\n"
            # scanners open many connections at once; the default 10:30:100 drops some
            "MaxStartups 200\nLoginGraceTime 30\nLogLevel INFO\n"
        )
        log = d / "sshd.log"
        with _running([binary, "-D", "-e", "-f", str(cfg)], log) as proc:
            _wait_tcp(port, proc, "sshd", log)
            yield Daemon("sshd", "openssh-server", version, [Endpoint("sshd", port)], d, log,
                         proc.pid)


@contextlib.contextmanager
def nginx() -> Iterator[Daemon]:
    """nginx serving plain HTTP on one port and HTTPS (self-signed) on another."""
    binary = _require("/usr/sbin/nginx", "nginx")
    version = dpkg_version("nginx")
    with _workdir("nginx") as d:
        http, https = free_port(), free_port()
        cert, key = self_signed_cert(d)
        (d / "html").mkdir()
        (d / "html" / "index.html").write_text("<html><body>servprobe test page</body></html>\n")
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir()
        conf = d / "nginx.conf"
        conf.write_text(f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/html;
    server {{
        listen {HOST}:{http};
        root {d}/html;
    }}
    server {{
        listen {HOST}:{https} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {d}/html;
    }}
}}
""")
        log = d / "stderr.log"
        with _running([binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)],
                      log, stop_signal=signal.SIGQUIT) as proc:
            _wait_tcp(http, proc, "nginx", log, (d / "error.log",))
            _wait_tcp(https, proc, "nginx", log, (d / "error.log",))
            yield Daemon("nginx", "nginx", version,
                         [Endpoint("nginx-http", http), Endpoint("nginx-https", https, tls=True)],
                         d, d / "error.log", proc.pid)


@contextlib.contextmanager
def vsftpd() -> Iterator[Daemon]:
    """vsftpd standalone (listen=YES) in the foreground; anonymous read-only login to an empty dir."""
    binary = _require("/usr/sbin/vsftpd", "vsftpd")
    version = dpkg_version("vsftpd")
    with _workdir("vsftpd") as d:
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
            # seccomp filters break in some containers; not what we test
            "seccomp_sandbox=NO\nmax_per_ip=0\nmax_clients=0\n"
            f"xferlog_enable=NO\nvsftpd_log_file={log}\ndual_log_enable=NO\n"
        )
        os.chmod(conf, 0o600)  # vsftpd refuses a config writable by others
        with _running([binary, str(conf)], log) as proc:
            _wait_tcp(port, proc, "vsftpd", log)
            yield Daemon("vsftpd", "vsftpd", version, [Endpoint("vsftpd", port)], d, log,
                         proc.pid)


POSTFIX_HOSTNAME = "mail.servprobe.test"


@contextlib.contextmanager
def postfix() -> Iterator[Daemon]:
    """Postfix's master in the foreground with its own config and queue; smtpd on a free port."""
    master = _require("/usr/lib/postfix/sbin/master", "postfix")
    postfix_cmd = _require("/usr/sbin/postfix", "postfix")
    version = dpkg_version("postfix")
    with _workdir("postfix") as d:
        port = free_port()
        conf = d / "etc"
        conf.mkdir()
        queue = d / "queue"
        log = d / "maillog"
        (conf / "main.cf").write_text(
            "compatibility_level = 3.6\n"
            f"queue_directory = {queue}\n"
            f"data_directory = {d / 'data'}\n"
            "command_directory = /usr/sbin\n"
            "daemon_directory = /usr/lib/postfix/sbin\n"
            "meta_directory = /etc/postfix\n"
            "shlib_directory = /usr/lib/postfix\n"
            "mail_owner = postfix\nsetgid_group = postdrop\n"
            f"myhostname = {POSTFIX_HOSTNAME}\nmydomain = servprobe.test\n"
            "mydestination =\nrelayhost =\nmynetworks = 127.0.0.0/8\n"
            "inet_interfaces = loopback-only\ninet_protocols = ipv4\n"
            "alias_maps =\nalias_database =\nlocal_recipient_maps =\n"
            "biff = no\nsmtputf8_enable = no\n"
            # Debian's packaged main.cf sets this banner; keep what real installs show
            "smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)\n"
            f"maillog_file_prefixes = {d}\nmaillog_file = {log}\n"
        )
        # only what smtpd needs to greet and answer; no chroot (the queue dir is ours)
        (conf / "master.cf").write_text(
            f"{HOST}:{port} inet n - n - - smtpd\n"
            "anvil     unix  -  -  n  -  1  anvil\n"
            "rewrite   unix  -  -  n  -  -  trivial-rewrite\n"
            "cleanup   unix  n  -  n  -  0  cleanup\n"
            "qmgr      unix  n  -  n  300 1 qmgr\n"
            "bounce    unix  -  -  n  -  0  bounce\n"
            "defer     unix  -  -  n  -  0  bounce\n"
            "trace     unix  -  -  n  -  0  bounce\n"
            "verify    unix  -  -  n  -  1  verify\n"
            "proxymap  unix  -  -  n  -  -  proxymap\n"
            "error     unix  -  -  n  -  -  error\n"
            "retry     unix  -  -  n  -  -  error\n"
            "discard   unix  -  -  n  -  -  discard\n"
            "flush     unix  n  -  n  1000? 0 flush\n"
            "scache    unix  -  -  n  -  1  scache\n"
            "postlog   unix-dgram n - n - 1 postlogd\n"
        )
        queue.mkdir()
        os.chmod(d, 0o755)  # postfix daemons run as user postfix below this directory
        setup = subprocess.run([postfix_cmd, "-c", str(conf), "set-permissions", "create-missing"],
                               capture_output=True, text=True, check=False)
        if setup.returncode != 0:
            setup = subprocess.run([postfix_cmd, "-c", str(conf), "check"],
                                   capture_output=True, text=True, check=False)
        if setup.returncode != 0 or not (queue / "public").is_dir():
            raise DaemonError(f"postfix could not set up its queue in {queue}:\n"
                              f"{setup.stdout}{setup.stderr}")
        stderr_log = d / "master.log"
        with _running([master, "-c", str(conf), "-d"], stderr_log) as proc:
            _wait_tcp(port, proc, "postfix master", stderr_log, (log,))
            yield Daemon("postfix", "postfix", version, [Endpoint("postfix", port)], d, log,
                         proc.pid, extra={"hostname": POSTFIX_HOSTNAME})


@contextlib.contextmanager
def redis() -> Iterator[Daemon]:
    """redis-server on a free port, no persistence."""
    binary = _require("redis-server", "redis-server")
    version = dpkg_version("redis-server")
    with _workdir("redis") as d:
        port = free_port()
        log = d / "redis.log"
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", str(d), "--logfile", str(log),
                "--pidfile", str(d / "redis.pid")]
        with _running(argv, d / "stdout.log") as proc:
            _wait_tcp(port, proc, "redis-server", log, (d / "stdout.log",))
            yield Daemon("redis", "redis-server", version, [Endpoint("redis", port)], d, log,
                         proc.pid)


@contextlib.contextmanager
def memcached() -> Iterator[Daemon]:
    """memcached on a free port, TCP and UDP (same number)."""
    binary = _require("memcached", "memcached")
    version = dpkg_version("memcached")
    with _workdir("memcached") as d:
        port = free_port(udp_too=True)
        log = d / "memcached.log"
        argv = [binary, "-p", str(port), "-U", str(port), "-l", HOST, "-u", "memcache", "-m", "16",
                "-v"]
        with _running(argv, log) as proc:
            _wait_tcp(port, proc, "memcached", log)
            yield Daemon("memcached", "memcached", version,
                         [Endpoint("memcached", port), Endpoint("memcached-udp", port, "udp")],
                         d, log, proc.pid)


DNS_NAME = "servprobe.test"


@contextlib.contextmanager
def dnsmasq() -> Iterator[Daemon]:
    """dnsmasq answering DNS over TCP and UDP on a free port, no upstream, one local name."""
    binary = _require("/usr/sbin/dnsmasq", "dnsmasq-base")
    # the package that ships the binary; `dnsmasq` is only the system service around it
    version = dpkg_version("dnsmasq-base")
    with _workdir("dnsmasq") as d:
        port = free_port(udp_too=True)
        log = d / "dnsmasq.log"
        # not --no-daemon: that debug mode serves TCP in the main process, one client at a
        # time, so one idle connection (a scanner's NULL probe) would block every other
        argv = [binary, "--keep-in-foreground", "--conf-file=/dev/null", f"--port={port}",
                f"--listen-address={HOST}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                f"--address=/{DNS_NAME}/127.0.0.1", f"--pid-file={d / 'dnsmasq.pid'}",
                "--log-queries", f"--log-facility={log}"]
        with _running(argv, d / "stderr.log") as proc:
            _wait_tcp(port, proc, "dnsmasq", d / "stderr.log", (log,))
            yield Daemon("dnsmasq", "dnsmasq-base", version,
                         [Endpoint("dnsmasq", port), Endpoint("dnsmasq-udp", port, "udp")],
                         d, log, proc.pid, extra={"name": DNS_NAME})


def _pg_bindir() -> Path:
    base = Path("/usr/lib/postgresql")
    versions = sorted((p for p in base.glob("*/bin/postgres")), key=lambda p: p.parts[-3])
    if not versions:
        raise DaemonError("PostgreSQL server not found under /usr/lib/postgresql (`make apt`)")
    return versions[-1].parent


def _as_user(user: str) -> Callable[[], None]:
    pw = pwd.getpwnam(user)

    def drop() -> None:
        os.setgid(pw.pw_gid)
        os.initgroups(user, pw.pw_gid)
        os.setuid(pw.pw_uid)

    return drop


@contextlib.contextmanager
def postgresql() -> Iterator[Daemon]:
    """A throw-away PostgreSQL cluster (initdb in tmp, as user postgres) on a free port."""
    bindir = _pg_bindir()
    major = bindir.parent.name
    package = f"postgresql-{major}"
    version = dpkg_version(package)
    with _workdir("postgresql", owner="postgres") as d:
        port = free_port()
        data = d / "data"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": str(d)}
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"],
            capture_output=True, text=True, check=False, env=env, cwd=d,
            preexec_fn=_as_user("postgres"),
        )
        if init.returncode != 0:
            raise DaemonError(f"initdb failed:\n{init.stdout}{init.stderr}")
        log = d / "postgres.log"
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", HOST,
                "-k", str(d), "-c", "fsync=off", "-c", "logging_collector=off",
                "-c", "max_connections=200"]
        # SIGINT is the fast shutdown: no waiting for clients to disconnect
        with _running(argv, log, stop_signal=signal.SIGINT, env=env, cwd=d,
                      preexec=_as_user("postgres")) as proc:
            _wait_tcp(port, proc, "postgres", log)
            yield Daemon("postgresql", package, version, [Endpoint("postgresql", port)], d, log,
                         proc.pid, extra={"major": major})


@contextlib.contextmanager
def stunnel(backends: dict[str, Daemon]) -> Iterator[Daemon]:
    """stunnel4 in the foreground: one TLS port per backend, e.g. {"ssh": sshd, "redis": ...}."""
    binary = _require("stunnel4", "stunnel4")
    version = dpkg_version("stunnel4")
    with _workdir("stunnel") as d:
        cert, key = self_signed_cert(d)
        log = d / "stunnel.log"
        lines = ["foreground = yes", f"pid = {d / 'stunnel.pid'}", f"output = {log}",
                 "debug = 5", ""]
        endpoints = []
        for label, backend in backends.items():
            port = free_port()
            endpoints.append(Endpoint(f"stunnel-{label}", port, tls=True, wraps=backend.name))
            lines += [f"[{label}]", f"accept = {HOST}:{port}",
                      f"connect = {backend.host}:{backend.port}", f"cert = {cert}",
                      f"key = {key}", ""]
        conf = d / "stunnel.conf"
        conf.write_text("\n".join(lines))
        with _running([binary, str(conf)], d / "stderr.log") as proc:
            for e in endpoints:
                _wait_tcp(e.port, proc, "stunnel4", log, (d / "stderr.log",))
            yield Daemon("stunnel", "stunnel4", version, endpoints, d, log, proc.pid)


# ---------------------------------------------------------------- what a scan should say

# The Debian package whose version a wrapped service reports (for stunnel endpoints).
PACKAGE_OF = {"sshd": "openssh-server", "redis": "redis-server"}


@dataclass(frozen=True, slots=True)
class Expected:
    """What nmap's database identifies on an endpoint, derived from the installed packages.

    `version` None means the database cannot tell a version at that intensity (the field
    must then be empty); `version_or_later` holds for nmap's "X or later" answers, which
    are right when the installed version is at least X.
    """

    service: str | None  # None: nothing identifiable (nmap says "unknown")
    product: str | None = None
    version: str | None = None
    version_or_later: bool = False
    extrainfo: str | None = None
    hostname: str | None = None
    tunnel: Literal["ssl"] | None = None
    # the fields that vary per run (e.g. memcached's "uptime N seconds"): not compared
    extrainfo_varies: bool = False

    def version_ok(self, version: str | None, installed: str) -> bool:
        if not self.version_or_later:
            return version == self.version
        if not version or not version.endswith(" or later"):
            return False
        return _vtuple(version.removesuffix(" or later")) <= _vtuple(upstream_version(installed))


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.replace("-", ".").split(".") if x.isdigit())


def expected_identity(daemon: Daemon, endpoint: Endpoint, *, own_probe: bool = False) -> Expected:
    """What a correct scan reports for `endpoint` (at any intensity), from dpkg's versions.

    Facts of nmap's database behind the mapping: OpenSSH's Debian banner gives
    "UPSTREAM Debian REVISION" and "protocol 2.0"; nginx, vsftpd and dnsmasq give the upstream
    version; Postfix gives no version but the SMTP hostname (with the separator: " HOST");
    PostgreSQL >= 9.6 only answers "9.6.0 or later" (a softmatch). Redis and memcached tell
    their version only to their own probes (`own_probe=True`: the answer to `redis-server` /
    `Memcache`), which a scan never reaches on a non-standard port because GetRequest /
    GenericLines hard-match first, even with --version-all. memcached over UDP is never
    recognised: 1.6's stats reply spans two datagrams and the DB's lines want exactly one.
    """
    tunnel: Literal["ssl"] | None = None
    name = daemon.name
    installed = daemon.version
    if endpoint.wraps:
        tunnel = "ssl"
        name = endpoint.wraps
        installed = dpkg_version(PACKAGE_OF[name])
    up = upstream_version(installed)
    # the probes that reveal redis/memcached versions list these ports: keep ours elsewhere
    assert endpoint.port not in (6379, 11211, 2181), endpoint
    if name == "sshd":
        return Expected("ssh", "OpenSSH", f"{up} Debian {debian_revision(installed)}",
                        extrainfo="protocol 2.0", tunnel=tunnel)
    if name == "nginx":
        return Expected("http", "nginx", up, tunnel="ssl" if endpoint.tls else None)
    if name == "vsftpd":
        return Expected("ftp", "vsftpd", up)
    if name == "postfix":
        # the DB's Postfix line captures the separator too: nmap reports " HOSTNAME"
        return Expected("smtp", "Postfix smtpd", None, hostname=" " + daemon.extra["hostname"])
    if name == "redis":
        return Expected("redis", "Redis key-value store", up if own_probe else None, tunnel=tunnel)
    if name == "memcached":
        if endpoint.proto == "udp":
            return Expected(None)
        return Expected("memcached", "Memcached", up if own_probe else None,
                        extrainfo_varies=own_probe)
    if name == "dnsmasq":
        return Expected("domain", "dnsmasq", up)
    if name == "postgresql":
        return Expected("postgresql", "PostgreSQL DB", "9.6.0", version_or_later=True)
    raise KeyError(f"no expectation for {name}")


# ---------------------------------------------------------------- scanning them


class ScanTimeout(AssertionError):
    """servprobe did not finish within the deadline (a hang is a failure, never a wait)."""


def servprobe_scan(db: Any, targets: list[Any], options: Any, deadline: float = 300.0) -> list[Any]:
    """Run servprobe.net.driver.run_service_scan with a hard deadline; results in target order.

    On timeout, raises ScanTimeout naming the targets still unfinished (their results so far
    are in the exception's `partial` attribute).
    """
    from servprobe.net.driver import new_event_loop, run_service_scan

    found: dict[tuple[str, str, int], Any] = {}

    def keep(r: Any) -> None:
        found[r.key] = r

    async def bounded() -> None:
        await asyncio.wait_for(run_service_scan(db, targets, options, keep), deadline)

    loop = new_event_loop()
    try:
        loop.run_until_complete(bounded())
    except TimeoutError:
        missing = [f"{t.address}:{t.port}/{t.proto}" for t in targets
                   if (t.address, t.proto, t.port) not in found]
        err = ScanTimeout(f"servprobe scan still running after {deadline:.0f} s; "
                          f"unfinished: {', '.join(missing)}")
        err.partial = list(found.values())  # type: ignore[attr-defined]
        raise err from None
    finally:
        loop.close()
    return [found[(t.address, t.proto, t.port)] for t in targets
            if (t.address, t.proto, t.port) in found]



def scan_endpoints(db: Any, running: dict[str, Daemon], options: Any,
                   deadline: float = 300.0) -> dict[str, Any]:
    """Scan every endpoint of a running set (servprobe_scan); results by endpoint name."""
    from servprobe.engine.options import ServiceTarget

    pairs = endpoints(running)
    targets = [ServiceTarget(d.host, e.port, e.proto) for d, e in pairs]
    results = {r.key: r for r in servprobe_scan(db, targets, options, deadline)}
    return {e.name: results[(d.host, e.proto, e.port)] for d, e in pairs
            if (d.host, e.proto, e.port) in results}


# ---------------------------------------------------------------- the whole set

# Order matters only for stunnel, which needs its backends first.
SIMPLE_DAEMONS: dict[str, Callable[[], contextlib.AbstractContextManager[Daemon]]] = {
    "sshd": sshd,
    "nginx": nginx,
    "vsftpd": vsftpd,
    "postfix": postfix,
    "redis": redis,
    "memcached": memcached,
    "dnsmasq": dnsmasq,
    "postgresql": postgresql,
}
STUNNEL_BACKENDS = ("sshd", "redis")  # wrapped services: ssl/ssh and ssl/redis


@contextlib.contextmanager
def all_daemons(names: list[str] | None = None) -> Iterator[dict[str, Daemon]]:
    """Start the whole set (or `names`), yield {daemon name: Daemon}, stop all on exit."""
    wanted = list(names) if names else [*SIMPLE_DAEMONS, "stunnel"]
    with contextlib.ExitStack() as stack:
        running: dict[str, Daemon] = {}
        if "stunnel" in wanted:
            for b in STUNNEL_BACKENDS:
                if b not in wanted:
                    wanted.insert(0, b)
        for name in wanted:
            if name == "stunnel":
                continue
            running[name] = stack.enter_context(SIMPLE_DAEMONS[name]())
        if "stunnel" in wanted:
            running["stunnel"] = stack.enter_context(
                stunnel({("ssh" if b == "sshd" else b): running[b] for b in STUNNEL_BACKENDS})
            )
        yield running


def endpoints(daemons: dict[str, Daemon]) -> list[tuple[Daemon, Endpoint]]:
    """Every (daemon, endpoint) pair of a running set, in a stable order."""
    return [(dmn, e) for dmn in daemons.values() for e in dmn.endpoints]


def _main() -> None:
    with all_daemons() as running:
        for dmn, e in endpoints(running):
            extra = f" TLS wrapping {e.wraps}" if e.wraps else (" TLS" if e.tls else "")
            print(f"{e.name:16} {dmn.host}:{e.port}/{e.proto}{extra}  "
                  f"{dmn.package} {dmn.version}  pid {dmn.pid}")
        print("running; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    _main()
