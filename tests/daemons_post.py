"""Real Debian daemons the post-processor tests need, on 127.0.0.1 free ports.

Owns: rabbitmq-server (with its own epmd), mosquitto, snmpd, strongSwan charon (in a
network namespace) and podman's Docker API service, each hermetic (own config,
state and log directories, node name and ports), reusing tests/daemons.py's helpers for
ports, process groups, waiting and dpkg versions. Stopping signals only the process groups
started here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemons import (
    HOST,
    Daemon,
    DaemonError,
    Endpoint,
    _as_user,
    _require,
    _running,
    _wait_tcp,
    _workdir,
    dpkg_version,
    free_port,
    read_log,
    self_signed_cert,
)

RABBITMQ_START_TIMEOUT = 90.0  # Erlang boots slowly on 2 shared cores


@contextlib.contextmanager
def rabbitmq() -> Iterator[Daemon]:
    """RabbitMQ on a free AMQP port, with its own epmd, node name, Mnesia and logs."""
    server = _require("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")
    epmd = _require("epmd", "erlang-base")
    version = dpkg_version("rabbitmq-server")
    with _workdir("rabbitmq") as d:
        amqp, dist, epmd_port = free_port(), free_port(), free_port()
        node = f"servprobe{amqp}@localhost"
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{amqp}\nloopback_users = none\n"
            "log.console = true\nlog.file = false\n"
        )
        (d / "enabled_plugins").write_text("[].\n")
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": str(d),
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(amqp),
            "RABBITMQ_DIST_PORT": str(dist),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
        }
        log = d / "rabbitmq.log"
        # epmd in the foreground in a group of ours: the one erl would start daemonizes
        with _running(
            [epmd, "-port", str(epmd_port), "-address", HOST], d / "epmd.log", env=env
        ) as ep:
            _wait_tcp(epmd_port, ep, "epmd", d / "epmd.log")
            with _running([server], log, env=env, cwd=d) as proc:
                _wait_tcp(amqp, proc, "rabbitmq-server", log, timeout=RABBITMQ_START_TIMEOUT)
                yield Daemon(
                    "rabbitmq",
                    "rabbitmq-server",
                    version,
                    [Endpoint("rabbitmq", amqp)],
                    d,
                    log,
                    proc.pid,
                    extra={"node": node},
                )


@contextlib.contextmanager
def mosquitto() -> Iterator[Daemon]:
    """Mosquitto with one anonymous listener on a free port."""
    binary = _require("/usr/sbin/mosquitto", "mosquitto")
    version = dpkg_version("mosquitto")
    with _workdir("mosquitto") as d:
        port = free_port()
        conf = d / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {HOST}\nallow_anonymous true\npersistence false\n"
            f"pid_file {d / 'mosquitto.pid'}\nlog_dest stderr\nuser root\n"
        )
        log = d / "mosquitto.log"
        with _running([binary, "-c", str(conf)], log) as proc:
            _wait_tcp(port, proc, "mosquitto", log)
            yield Daemon(
                "mosquitto", "mosquitto", version, [Endpoint("mosquitto", port)], d, log, proc.pid
            )


LDAP_SUFFIX = "dc=servprobe,dc=test"


@contextlib.contextmanager
def slapd() -> Iterator[Daemon]:
    """OpenLDAP's slapd in the foreground: one mdb database, its own slapd.conf and state."""
    binary = _require("/usr/sbin/slapd", "slapd")
    version = dpkg_version("slapd")
    with _workdir("slapd") as d:
        port = free_port()
        (d / "db").mkdir()
        conf = d / "slapd.conf"
        conf.write_text(
            "include /etc/ldap/schema/core.schema\n"
            f"pidfile {d / 'slapd.pid'}\nargsfile {d / 'slapd.args'}\n"
            "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
            f'database mdb\nsuffix "{LDAP_SUFFIX}"\nrootdn "cn=admin,{LDAP_SUFFIX}"\n'
            f"directory {d / 'db'}\nmaxsize 10485760\n"
        )
        log = d / "slapd.log"
        argv = [binary, "-d", "0", "-f", str(conf), "-h", f"ldap://{HOST}:{port}/"]
        with _running(argv, log) as proc:
            _wait_tcp(port, proc, "slapd", log)
            yield Daemon(
                "slapd",
                "slapd",
                version,
                [Endpoint("slapd", port)],
                d,
                log,
                proc.pid,
                extra={"suffix": LDAP_SUFFIX},
            )


@contextlib.contextmanager
def git_daemon() -> Iterator[Daemon]:
    """`git daemon` serving one bare repository (with one commit) as its base path."""
    git = _require("git", "git")
    version = dpkg_version("git")
    with _workdir("git-daemon") as d:
        port = free_port()
        repo = d / "repo.git"
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(d),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        for argv in (
            ["init", "-q", "--bare", str(repo)],
            [
                "--git-dir",
                str(repo),
                "commit-tree",
                "-m",
                "x",
                "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
            ],
        ):
            out = subprocess.run([git, *argv], capture_output=True, text=True, env=env, check=False)
            if out.returncode:
                raise DaemonError(f"git {argv[0]} failed: {out.stderr}")
        commit = out.stdout.strip()
        subprocess.run(
            [git, "--git-dir", str(repo), "update-ref", "refs/heads/main", commit],
            check=True,
            env=env,
        )
        log = d / "git-daemon.log"
        argv = [
            git,
            "daemon",
            "--reuseaddr",
            "--export-all",
            f"--base-path={repo}",
            f"--listen={HOST}",
            f"--port={port}",
            "--informative-errors",
            str(repo),
        ]
        with _running(argv, log, env=env) as proc:
            _wait_tcp(port, proc, "git daemon", log)
            yield Daemon(
                "git-daemon", "git", version, [Endpoint("git-daemon", port)], d, log, proc.pid
            )


SMB_WORKGROUP, SMB_NAME = "SERVPROBE", "SPTEST"


@contextlib.contextmanager
def smbd(smb1: bool = False) -> Iterator[Daemon]:
    """Samba's smbd (standalone, no NetBIOS) on a free port, every directory its own;
    `smb1` also enables the SMB1 dialect NT1 (off by default since Samba 4.11)."""
    binary = _require("/usr/sbin/smbd", "samba")
    version = dpkg_version("samba")
    with _workdir("smbd") as d:
        port = free_port()
        for sub in ("run", "lock", "state", "cache", "private", "ncalrpc", "share"):
            (d / sub).mkdir()
        conf = d / "smb.conf"
        conf.write_text(
            f"[global]\nworkgroup = {SMB_WORKGROUP}\nnetbios name = {SMB_NAME}\n"
            "server role = standalone server\n"
            f"smb ports = {port}\ninterfaces = {HOST}\nbind interfaces only = yes\n"
            f"pid directory = {d / 'run'}\nlock directory = {d / 'lock'}\n"
            f"state directory = {d / 'state'}\ncache directory = {d / 'cache'}\n"
            f"private dir = {d / 'private'}\nncalrpc dir = {d / 'ncalrpc'}\n"
            f"log file = {d / 'log.%m'}\ndisable netbios = yes\nload printers = no\n"
            "printing = bsd\nprintcap name = /dev/null\ndisable spoolss = yes\n"
            "passdb backend = tdbsam\nserver services = -nbt\n"
            + ("server min protocol = NT1\n" if smb1 else "")
            + f"[share]\npath = {d / 'share'}\nread only = yes\n"
        )
        log = d / "smbd.log"
        argv = [binary, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)]
        with _running(argv, log) as proc:
            _wait_tcp(port, proc, "smbd", log)
            yield Daemon(
                "smbd",
                "samba",
                version,
                [Endpoint("smbd", port)],
                d,
                log,
                proc.pid,
                extra={"workgroup": SMB_WORKGROUP, "name": SMB_NAME},
            )


XMPP_DOMAIN = "localhost"


@contextlib.contextmanager
def prosody() -> Iterator[Daemon]:
    """Prosody in the foreground: client-to-server only, on a free port, its own data dir."""
    binary = _require("/usr/bin/prosody", "prosody")
    version = dpkg_version("prosody")
    with _workdir("prosody", owner="prosody") as d:
        port = free_port()
        (d / "data").mkdir()
        os.chown(d / "data", *_ids("prosody"))
        conf = d / "prosody.cfg.lua"
        conf.write_text(
            f'pidfile = "{d}/prosody.pid"\ndata_path = "{d}/data"\n'
            f'c2s_ports = {{ {port} }}\nc2s_interfaces = {{ "{HOST}" }}\n'
            "s2s_ports = { }\nhttp_ports = { }\nhttps_ports = { }\ncomponent_ports = { }\n"
            'log = { { levels = { min = "info" }, to = "console" } }\n'
            'modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "version" }\n'
            'modules_disabled = { "s2s"; "posix" }\nc2s_require_encryption = false\n'
            f'authentication = "internal_hashed"\nVirtualHost "{XMPP_DOMAIN}"\n'
        )
        log = d / "prosody.log"
        argv = [binary, "--config", str(conf), "-F"]
        with _running(
            argv,
            log,
            preexec=_as_user("prosody"),
            cwd=d,
            env={"PATH": "/usr/bin:/bin", "HOME": str(d)},
        ) as proc:
            _wait_tcp(port, proc, "prosody", log)
            yield Daemon(
                "prosody",
                "prosody",
                version,
                [Endpoint("prosody", port)],
                d,
                log,
                proc.pid,
                extra={"domain": XMPP_DOMAIN},
            )


def _ids(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


KRB_REALM = "SERVPROBE.TEST"


@contextlib.contextmanager
def krb5kdc() -> Iterator[Daemon]:
    """MIT krb5kdc with a fresh realm database (kdb5_util) in its own directory, UDP and TCP."""
    kdc = _require("/usr/sbin/krb5kdc", "krb5-kdc")
    kdb5_util = _require("/usr/sbin/kdb5_util", "krb5-kdc")
    version = dpkg_version("krb5-kdc")
    with _workdir("krb5kdc") as d:
        port = free_port(udp_too=True)
        (d / "kdc.conf").write_text(
            f"[kdcdefaults]\n kdc_ports = {port}\n kdc_tcp_ports = {port}\n kdc_listen = {HOST}:{port}\n"
            f" kdc_tcp_listen = {HOST}:{port}\n[realms]\n {KRB_REALM} = {{\n  database_name = {d}/principal\n"
            f"  key_stash_file = {d}/stash\n  acl_file = {d}/kadm5.acl\n }}\n"
            f"[logging]\n kdc = FILE:{d}/kdc.log\n"
        )
        (d / "krb5.conf").write_text(f"[libdefaults]\n default_realm = {KRB_REALM}\n")
        env = {
            "PATH": "/usr/bin:/bin:/usr/sbin",
            "KRB5_CONFIG": str(d / "krb5.conf"),
            "KRB5_KDC_PROFILE": str(d / "kdc.conf"),
            "HOME": str(d),
        }
        made = subprocess.run(
            [kdb5_util, "create", "-s", "-r", KRB_REALM, "-P", "servprobe-test-master"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if made.returncode:
            raise DaemonError(f"kdb5_util create failed: {made.stderr}")
        log = d / "krb5kdc.log"
        argv = [kdc, "-n", "-r", KRB_REALM, "-P", str(d / "krb5kdc.pid")]
        with _running(argv, log, env=env) as proc:
            _wait_tcp(port, proc, "krb5kdc", log, (d / "kdc.log",))
            yield Daemon(
                "krb5kdc",
                "krb5-kdc",
                version,
                [Endpoint("krb5kdc", port), Endpoint("krb5kdc-udp", port, "udp")],
                d,
                log,
                proc.pid,
                extra={"realm": KRB_REALM},
            )


@contextlib.contextmanager
def varnish() -> Iterator[Daemon]:
    """varnishd in the foreground on a free port, its backend a port nobody listens on."""
    binary = _require("/usr/sbin/varnishd", "varnish")
    version = dpkg_version("varnish")
    with _workdir("varnish") as d:
        port, dead = free_port(), free_port()
        os.chmod(d, 0o755)  # varnishd reads the VCL after dropping to its own users
        vcl = d / "default.vcl"
        vcl.write_text(f'vcl 4.1;\nbackend default {{ .host = "{HOST}"; .port = "{dead}"; }}\n')
        log = d / "varnishd.log"
        argv = [
            binary,
            "-F",
            "-a",
            f"{HOST}:{port}",
            "-f",
            str(vcl),
            "-n",
            str(d / "work"),
            "-s",
            "malloc,16m",
            "-T",
            "none",
            "-p",
            "thread_pools=1",
            "-p",
            "thread_pool_min=5",
        ]
        with _running(argv, log) as proc:
            _wait_tcp(port, proc, "varnishd", log)
            yield Daemon(
                "varnish", "varnish", version, [Endpoint("varnish", port)], d, log, proc.pid
            )


@contextlib.contextmanager
def haproxy() -> Iterator[Daemon]:
    """HAProxy in the foreground: one HTTP frontend on a free port, no server behind it."""
    binary = _require("/usr/sbin/haproxy", "haproxy")
    version = dpkg_version("haproxy")
    with _workdir("haproxy") as d:
        port = free_port()
        cfg = d / "haproxy.cfg"
        cfg.write_text(
            f"global\n  pidfile {d}/haproxy.pid\ndefaults\n  mode http\n  timeout connect 1s\n"
            f"  timeout client 5s\n  timeout server 5s\nfrontend web\n  bind {HOST}:{port}\n"
            "  default_backend none\nbackend none\n"
        )
        log = d / "haproxy.log"
        with _running([binary, "-db", "-f", str(cfg)], log) as proc:
            _wait_tcp(port, proc, "haproxy", log)
            yield Daemon(
                "haproxy", "haproxy", version, [Endpoint("haproxy", port)], d, log, proc.pid
            )


@contextlib.contextmanager
def xinetd_time() -> Iterator[Daemon]:
    """xinetd's internal RFC 868 time service, TCP and UDP, on one free port (own config)."""
    binary = _require("/usr/sbin/xinetd", "xinetd")
    version = dpkg_version("xinetd")
    with _workdir("xinetd") as d:
        port = free_port(udp_too=True)
        conf = d / "xinetd.conf"
        blocks = []
        for kind, sock in (("stream", "stream"), ("dgram", "dgram")):
            proto = "tcp" if kind == "stream" else "udp"
            blocks.append(
                f"service time\n{{\n  type = INTERNAL UNLISTED\n  id = time-{kind}\n"
                f"  socket_type = {sock}\n  protocol = {proto}\n  port = {port}\n  user = root\n"
                f"  wait = {'yes' if kind == 'dgram' else 'no'}\n  bind = {HOST}\n}}\n"
            )
        conf.write_text("defaults\n{\n  instances = 60\n}\n" + "".join(blocks))
        log = d / "xinetd.log"
        argv = [
            binary,
            "-dontfork",
            "-f",
            str(conf),
            "-pidfile",
            str(d / "xinetd.pid"),
            "-filelog",
            str(log),
        ]
        with _running(argv, d / "stderr.log") as proc:
            _wait_tcp(port, proc, "xinetd", d / "stderr.log", (log,))
            yield Daemon(
                "xinetd",
                "xinetd",
                version,
                [Endpoint("xinetd-time", port), Endpoint("xinetd-time-udp", port, "udp")],
                d,
                log,
                proc.pid,
            )


@contextlib.contextmanager
def coturn(*extra: str) -> Iterator[Daemon]:
    """coturn's turnserver as a plain STUN server (no TLS/DTLS, no relay users), UDP and TCP;
    `extra` arguments go on its command line (--no-software-attribute: no SOFTWARE name)."""
    binary = _require("/usr/bin/turnserver", "coturn")
    version = dpkg_version("coturn")
    with _workdir("coturn") as d:
        port = free_port(udp_too=True)
        log = d / "turnserver.log"
        argv = [
            binary,
            "-n",
            "--listening-ip",
            HOST,
            "--listening-port",
            str(port),
            "--stun-only",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file",
            "stdout",
            "--simple-log",
            "--pidfile",
            str(d / "turnserver.pid"),
            "--db",
            str(d / "turndb"),
            "--min-port",
            "49152",
            "--max-port",
            "49200",
            *extra,
        ]
        with _running(argv, log) as proc:
            _wait_tcp(port, proc, "turnserver", log)
            yield Daemon(
                "coturn",
                "coturn",
                version,
                [Endpoint("coturn", port), Endpoint("coturn-udp", port, "udp")],
                d,
                log,
                proc.pid,
            )


@contextlib.contextmanager
def nginx_redirect() -> Iterator[Daemon]:
    """nginx with one TLS port that answers plain HTTP with a redirect to https:// on the same
    port (`error_page 497`), as many sites configure it."""
    binary = _require("/usr/sbin/nginx", "nginx")
    version = dpkg_version("nginx")
    with _workdir("nginx-redirect") as d:
        port = free_port()
        cert, key = self_signed_cert(d)
        for sub in ("html", "body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (d / sub).mkdir()
        (d / "html" / "index.html").write_text("<html><body>servprobe</body></html>\n")
        conf = d / "nginx.conf"
        conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n"
            f"  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
            f"  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
            f"  server {{\n    listen {HOST}:{port} ssl;\n    ssl_certificate {cert};\n"
            f"    ssl_certificate_key {key};\n    root {d}/html;\n"
            "    error_page 497 =301 https://$server_addr:$server_port$request_uri;\n  }\n}\n"
        )
        log = d / "stderr.log"
        argv = [binary, "-p", str(d), "-e", str(d / "error.log"), "-c", str(conf)]
        with _running(argv, log, stop_signal=signal.SIGQUIT) as proc:
            _wait_tcp(port, proc, "nginx", log, (d / "error.log",))
            yield Daemon(
                "nginx-redirect",
                "nginx",
                version,
                [Endpoint("nginx-redirect", port, tls=True)],
                d,
                d / "error.log",
                proc.pid,
            )


SNMP_COMMUNITY = "public"


@contextlib.contextmanager
def snmpd() -> Iterator[Daemon]:
    """net-snmp's snmpd on a free UDP port: read-only community `public`, its own state."""
    binary = _require("/usr/sbin/snmpd", "snmpd")
    version = dpkg_version("snmpd")
    with _workdir("snmpd") as d:
        port = free_port(udp_too=True)
        conf = d / "snmpd.conf"
        conf.write_text(
            f"agentAddress udp:{HOST}:{port}\nrocommunity {SNMP_COMMUNITY} {HOST}\n"
            "sysLocation servprobe test\nsysContact nobody\nsysServices 72\n"
        )
        log = d / "snmpd.log"
        env = {"PATH": "/usr/bin:/bin", "SNMPCONFPATH": str(d), "MIBS": "", "HOME": str(d)}
        argv = [
            binary,
            "-f",
            "-C",
            "-c",
            str(conf),
            "-Lf",
            str(log),
            "-p",
            str(d / "snmpd.pid"),
            "-I",
            "-smux,mteTrigger,mteTriggerConf",
            f"--persistentDir={d / 'state'}",
        ]
        with _running(argv, d / "stderr.log", env=env) as proc:
            _wait_udp_snmp(port, proc.poll, log)
            yield Daemon(
                "snmpd", "snmpd", version, [Endpoint("snmpd", port, "udp")], d, log, proc.pid
            )


# a v1 GetRequest for sysDescr.0 with community public (RFC 1157 encoding)
_SNMP_V1_GET = bytes.fromhex(
    "302602010004067075626c6963a019020101020100020100300e300c06082b060102010101000500"
)


def _wait_udp_snmp(port: int, poll: object, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if callable(poll) and poll() is not None:
                raise DaemonError(f"snmpd exited before answering:\n{read_log(log)}")
            with contextlib.suppress(OSError):
                s.sendto(_SNMP_V1_GET, (HOST, port))
                if s.recv(4096):
                    return
    raise DaemonError(f"snmpd not answering on {HOST}:{port}/udp:\n{read_log(log)}")


if __name__ == "__main__":
    import sys

    with contextlib.ExitStack() as stack:
        for name in sys.argv[1:] or ["mosquitto", "snmpd", "rabbitmq"]:
            dmn = stack.enter_context(
                {
                    "rabbitmq": rabbitmq,
                    "mosquitto": mosquitto,
                    "snmpd": snmpd,
                    "slapd": slapd,
                    "git_daemon": git_daemon,
                    "smbd": smbd,
                    "prosody": prosody,
                    "krb5kdc": krb5kdc,
                    "varnish": varnish,
                    "haproxy": haproxy,
                    "xinetd_time": xinetd_time,
                    "coturn": coturn,
                    "nginx_redirect": nginx_redirect,
                }[name]()
            )
            print(name, dmn.host, dmn.endpoints, dmn.version, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


IKE_PSK = "servprobe-test-psk"  # never used: the exchange stops at the responder's message 2
CHARON_PLUGINS = "random nonce aes sha1 sha2 md5 hmac gmp kdf pem pkcs1 x509 pubkey kernel-netlink socket-default vici"


@contextlib.contextmanager
def charon(ns: Any, send_vendor_id: bool = True) -> Iterator[Daemon]:
    """strongSwan's charon (IKEv1 responder, PSK, AES proposals) inside the network namespace
    `ns` (rpcservers.Netns: IKE's ports 500/4500 are fixed, never the host's); its own
    strongswan.conf (STRONGSWAN_CONF), vici socket and log in a temp dir, /run private; the
    connection is loaded with swanctl over that socket. `send_vendor_id` is charon's option
    of that name (its strongSwan vendor ID)."""
    binary = _require("/usr/lib/ipsec/charon", "strongswan-charon")
    swanctl = _require("/usr/sbin/swanctl", "strongswan-swanctl")
    version = dpkg_version("strongswan-charon")
    with _workdir("charon") as d:
        vici = d / "charon.vici"
        log = d / "charon.log"
        conf = d / "strongswan.conf"
        conf.write_text(
            "charon {\n  port = 500\n  port_nat_t = 4500\n"
            f"  send_vendor_id = {'yes' if send_vendor_id else 'no'}\n  install_routes = no\n"
            f"  load_modular = no\n  load = {CHARON_PLUGINS}\n"
            f"  plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n  }}\n"
            f"  filelog {{\n    log {{\n      path = {log}\n      default = 1\n      ike = 2\n    }}\n  }}\n}}\n"
        )
        (d / "swanctl.conf").write_text(
            "connections {\n  v1 {\n    version = 1\n    local_addrs = 127.0.0.1\n    remote_addrs = %any\n"
            "    proposals = aes128-sha1-modp2048,aes128-sha1-modp1024,aes256-sha256-modp2048\n"
            "    local {\n      auth = psk\n      id = 127.0.0.1\n    }\n    remote {\n      auth = psk\n    }\n"
            "    children {\n      c {\n        local_ts = 127.0.0.1/32\n      }\n    }\n  }\n}\n"
            f"secrets {{\n  ike-1 {{\n    secret = {IKE_PSK}\n  }}\n}}\n"
        )
        env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
        out = d / "stdout.log"
        with _running(ns.argv([binary]), out, env=env) as proc:
            deadline = time.monotonic() + 30
            while not vici.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise DaemonError(f"charon did not start: {read_log(out)}")
                time.sleep(0.1)
            loaded = subprocess.run(
                [
                    swanctl,
                    "--load-all",
                    "--file",
                    str(d / "swanctl.conf"),
                    "--uri",
                    f"unix://{vici}",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            if loaded.returncode != 0:
                raise DaemonError(f"swanctl --load-all failed: {loaded.stdout}{loaded.stderr}")
            yield Daemon(
                "charon",
                "strongswan-charon",
                version,
                [Endpoint("ike", 500, "udp")],
                d,
                log,
                proc.pid,
            )


@contextlib.contextmanager
def podman_api(ns: Any = None) -> Iterator[Daemon]:
    """podman's Docker-compatible API service (`podman system service`) on a free loopback
    port, or on the API's own 2375 inside the network namespace `ns` (rpcservers.Netns, with
    its private /run); storage, run and config directories its own. (Debian's dockerd cannot
    start on this machine: "failed to start daemon: Devices cgroup isn't mounted".)"""
    binary = _require("/usr/bin/podman", "podman")
    version = dpkg_version("podman")
    with _workdir("podman") as d:
        port = 2375 if ns is not None else free_port()
        for sub in ("root", "runroot", "tmp", "config", "data"):
            (d / sub).mkdir()
        (d / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{d / "root"}"\nrunroot = "{d / "runroot"}"\n'
        )
        (d / "containers.conf").write_text(
            '[engine]\nevents_logger = "none"\ncgroup_manager = "cgroupfs"\n'
        )
        env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(d / "storage.conf"),
            "CONTAINERS_CONF": str(d / "containers.conf"),
            "XDG_CONFIG_HOME": str(d / "config"),
            "XDG_DATA_HOME": str(d / "data"),
            "TMPDIR": str(d / "tmp"),
        }
        log = d / "podman.log"
        argv = [
            binary,
            "--root",
            str(d / "root"),
            "--runroot",
            str(d / "runroot"),
            "--tmpdir",
            str(d / "tmp"),
            "system",
            "service",
            "--time",
            "0",
            f"tcp:{HOST}:{port}",
        ]
        if ns is not None:
            argv = ns.argv(argv)
        with _running(argv, log, env=env) as proc:
            if ns is None:
                _wait_tcp(port, proc, "podman system service", log)
            else:
                _wait_tcp_in(ns, port, proc, "podman system service", log)
            yield Daemon(
                "podman", "podman", version, [Endpoint("podman-api", port)], d, log, proc.pid
            )


def _wait_tcp_in(
    ns: Any, port: int, proc: subprocess.Popen[bytes], name: str, log: Path, timeout: float = 30.0
) -> None:
    """Wait until `port` accepts connections inside the namespace `ns`."""
    deadline = time.monotonic() + timeout
    while True:
        with ns.entered(), socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((HOST, port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise DaemonError(f"{name} did not listen on {port}: {read_log(log)}")
        time.sleep(0.1)
