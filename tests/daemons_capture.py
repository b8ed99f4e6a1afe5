"""Extra daemons for growing the bundled database's example set (run by hand, never by CI).

Owns: a table of capture daemons (Python servers from PyPI, Node servers from npm, Debian
packages that tests/daemons.py does not start), each started on a 127.0.0.1 free port from a
private work directory with tests/daemons.py's helpers (`free_port`, `_running`, `_wait_tcp`,
process groups), probed with every probe of the bundled database (one fresh connection each,
as tests/data/examples/capture.py does), and written to tests/data/examples/ as
`real-<name>-0-tcp.json` with the package and version in every example's source.

The captures are data committed once; tests/test_bundled_db.py replays them offline. CI never
runs this file (no slow daemon starts there). Usage:

    python tests/daemons_capture.py --python /path/to/venv/bin/python \\
        --node-modules /path/to/node_modules [--only waitress,tornado] [--out DIR]

Debian packages: the installed ones (inn2 h2o haproxy varnish cyrus-imapd cyrus-pop3d
mini-httpd webfs privoxy lsh-server caddy inspircd micro-httpd tinysshd socat) run from private
configurations; exim4-daemon-light, opensmtpd and inetutils-ftpd conflict with the suite's
Postfix / vsftpd, so `--debs DIR` names where `apt-get download` put their .deb files,
unpacked into the work directory and run from there.
`--python` is an interpreter with the PyPI servers installed (waitress cheroot tornado twisted
cryptography bcrypt aiohttp hypercorn daphne aiosmtpd pyftpdlib gunicorn uvicorn); `--node-modules` a directory where `npm install
koa fastify http-server` ran. Versions are read from those installs (importlib.metadata,
package.json), never written by hand. Review every file before committing it: the "expect"
fields are what the database reports now, which must equal what the bytes say.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "data" / "examples"))

import capture  # tests/data/examples/capture.py: send_tcp and the example format

import daemons
import servprobe
from servprobe.probes.examples import escape, line_ids
from servprobe.probes.model import ProbeDB

EXAMPLES = Path(__file__).resolve().parent / "data" / "examples"

WSGI_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"servprobe capture\\n"]
"""

ASGI_APP = """\
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"servprobe capture\\n"})
"""

TORNADO_APP = """\
import sys, asyncio, tornado.web
class H(tornado.web.RequestHandler):
    def get(self):
        self.write("servprobe capture\\n")
async def main():
    tornado.web.Application([(r"/", H)]).listen(int(sys.argv[1]), address="127.0.0.1")
    await asyncio.Event().wait()
asyncio.run(main())
"""

AIOHTTP_APP = """\
import sys
from aiohttp import web
async def h(request):
    return web.Response(text="servprobe capture\\n")
app = web.Application()
app.router.add_get("/", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""

WSGIREF_APP = """\
import sys
from wsgiref.simple_server import make_server
from app import app
make_server("127.0.0.1", int(sys.argv[1]), app).serve_forever()
"""

KOA_APP = """\
const Koa = require('koa');
const app = new Koa();
app.use(ctx => { if (ctx.path === '/x') ctx.body = 'x'; });
app.listen(Number(process.argv[2]), '127.0.0.1');
"""

FASTIFY_APP = """\
const fastify = require('fastify')();
fastify.get('/x', async () => 'x');
fastify.listen({port: Number(process.argv[2]), host: '127.0.0.1'});
"""


@dataclass(frozen=True, slots=True)
class Spec:
    """How to start one capture daemon: argv from (python, node_modules, workdir, port)."""

    name: str
    kind: str  # "pypi" | "npm" | "python" (the interpreter's own stdlib) | "debian"
    package: str  # PyPI/npm distribution or Debian package whose version the capture records
    argv: Callable[[str, Path, Path, int], list[str]]
    files: tuple[tuple[str, str], ...] = ()  # (file name, text) written into the workdir
    setup: Callable[[Path, int], dict[str, str]] | None = None  # more files; returns env
    user: str | None = None  # run as this system user (the workdir is given to it)
    # what the capture says, besides the probes: extra (label, bytes to send) exchanges whose
    # answer is stored as that label's probe (e.g. NNTP's MODE READER hands over to nnrpd)
    extra: tuple[tuple[str, bytes], ...] = ()
    wait: float = 2.0  # seconds a non-NULL probe's answer may take (IRC registers slowly)


H2O_CONF = """\
listen:
  host: 127.0.0.1
  port: {port}
pid-file: {dir}/h2o.pid
error-log: {dir}/error.log
hosts:
  default:
    paths:
      /:
        file.dir: {dir}/www
"""

HAPROXY_CONF = """\
global
    maxconn 64
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend capture
    bind 127.0.0.1:{port}
    default_backend none
backend none
    server down 127.0.0.1:{dead} check
"""


def _innd_setup(d: Path, port: int) -> dict[str, str]:
    """A private inn.conf (Debian's, with our port, bind address and run/log/tmp dirs)."""
    keep = [ln for ln in Path("/etc/news/inn.conf").read_text().splitlines()
            if not ln.startswith(("bindaddress:", "port:", "pathrun:", "pathlog:", "pathtmp:"))]
    for sub in ("run", "log", "tmp"):
        (d / sub).mkdir()
    keep += ["bindaddress: 127.0.0.1", f"port: {port}", f"pathrun: {d}/run",
             f"pathlog: {d}/log", f"pathtmp: {d}/tmp"]
    (d / "inn.conf").write_text("\n".join(keep) + "\n")
    return {"INNCONF": str(d / "inn.conf")}


def _cyrus_setup(service: str, binary: str) -> Callable[[Path, int], dict[str, str]]:
    """Cyrus master with one service on our port, every path in the work directory."""
    def setup(d: Path, port: int) -> dict[str, str]:
        for sub in ("conf", "part", "run"):
            (d / sub).mkdir()
        (d / "imapd.conf").write_text(
            f"configdirectory: {d}/conf\npartition-default: {d}/part\n"
            "defaultpartition: default\nservername: mail.example.invalid\n"
            f"idlesocket: {d}/run/idle\nnotifysocket: {d}/run/notify\n"
            f"lmtpsocket: {d}/run/lmtp\nproc_path: {d}/run/proc\n"
            f"mboxname_lockpath: {d}/run/lock\n")
        (d / "cyrus.conf").write_text(
            f'START {{\n}}\nSERVICES {{\n  {service} cmd="{binary} -C {d}/imapd.conf" '
            f'listen="127.0.0.1:{port}" prefork=0\n}}\nEVENTS {{\n}}\n')
        subprocess.run(["chown", "-R", "cyrus:mail", str(d)], check=True)
        return {}
    return setup


DEBS = Path("/tmp/servprobe-debs")  # --debs: .deb files of packages that cannot be installed


def _deb(package: str) -> Path:
    found = sorted(DEBS.glob(f"{package}_*.deb"))
    if not found:
        raise daemons.DaemonError(f"no {package}_*.deb in {DEBS} (apt-get download {package})")
    return found[-1]


def _extract(d: Path, package: str) -> Path:
    """Unpack a .deb into the work directory (not installed: exim4 and OpenSMTPD conflict
    with the suite's Postfix); its binaries run from there."""
    subprocess.run(["dpkg-deb", "-x", str(_deb(package)), str(d / "root")], check=True)
    return d / "root"


def _exim_setup(d: Path, port: int) -> dict[str, str]:
    """Exim from the extracted exim4-daemon-light, a minimal private configuration (no
    routers: the greeting is all we need). Exim wants its compiled-in user Debian-exim
    (`adduser --system --group --allow-bad-names Debian-exim`) and a root-owned config."""
    _extract(d, "exim4-daemon-light")
    for sub in ("spool", "log"):
        (d / sub).mkdir()
    subprocess.run(["chown", "-R", "Debian-exim:Debian-exim", str(d / "spool"), str(d / "log")],
                   check=True)
    (d / "exim.conf").write_text(
        f"primary_hostname = mail.example.invalid\ndaemon_smtp_ports = {port}\n"
        f"local_interfaces = 127.0.0.1\nspool_directory = {d}/spool\n"
        f"log_file_path = {d}/log/%slog\nbegin acl\nbegin routers\nbegin transports\n")
    os.chmod(d, 0o755)
    return {}


def _opensmtpd_setup(d: Path, port: int) -> dict[str, str]:
    """OpenSMTPD from the extracted package; it needs its users (opensmtpd, opensmtpq) and
    its compiled-in chroot /var/lib/opensmtpd/empty, which this creates."""
    _extract(d, "opensmtpd")
    Path("/var/lib/opensmtpd/empty").mkdir(parents=True, exist_ok=True)
    (d / "smtpd.conf").write_text(f'listen on 127.0.0.1 port {port}\naction "local" mbox\n'
                                  'match from local for local action "local"\n')
    return {}


def _ckeygen(d: Path) -> dict[str, str]:
    """A host key for Twisted Conch (its own ckeygen, beside the interpreter)."""
    ckeygen = Path(_PYTHON[0]).parent / "ckeygen"
    subprocess.run([str(ckeygen), "-t", "ed25519", "-f", str(d / "ssh_host_ed25519_key"),
                    "--no-passphrase", "-q"], check=True, capture_output=True)
    return {}


_PYTHON = [sys.executable]  # set by main(): the --python interpreter


def _caddy_setup(d: Path, port: int) -> dict[str, str]:
    """Caddy serving a directory; no admin endpoint, no automatic HTTPS, storage in d."""
    _www_setup(d, port)
    (d / "Caddyfile").write_text(
        f"{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {d}/data\n}}\n"
        f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\troot * {d}/www\n"
        "\tfile_server\n}\n")
    return {}


def _inspircd_setup(d: Path, port: int) -> dict[str, str]:
    (d / "motd").write_text("servprobe capture\n")
    (d / "inspircd.conf").write_text(
        '<server name="irc.example.invalid" description="servprobe capture" network="Example">\n'
        '<admin name="nobody" nick="nobody" email="nobody@example.invalid">\n'
        f'<bind address="127.0.0.1" port="{port}" type="clients">\n'
        '<connect allow="*" timeout="60" pingfreq="120" sendq="262144" recvq="8192" '
        'localmax="100" globalmax="100">\n'
        f'<pid file="{d}/inspircd.pid">\n'
        f'<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/ircd.log">\n'
        f'<files motd="{d}/motd">\n'
        f'<path configdir="{d}" datadir="{d}" logdir="{d}">\n')
    return {}


def _inetd(port: int, command: str) -> list[str]:
    return ["/usr/bin/socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr",
            f"EXEC:{command}"]


def _www_setup(d: Path, port: int) -> dict[str, str]:
    (d / "www").mkdir()
    (d / "www" / "index.html").write_text("servprobe capture\n")
    os.chmod(d, 0o755)
    return {}


def _privoxy_setup(d: Path, port: int) -> dict[str, str]:
    (d / "privoxy.conf").write_text(f"listen-address 127.0.0.1:{port}\nconfdir /etc/privoxy\n"
                                    f"logdir {d}\n")
    return {}


def _tinyssh_setup(d: Path, port: int) -> dict[str, str]:
    subprocess.run(["/usr/sbin/tinysshd-makekey", str(d / "keys")], check=True,
                   capture_output=True)
    return {}


def _h2o_setup(d: Path, port: int) -> dict[str, str]:
    (d / "www").mkdir()
    (d / "h2o.conf").write_text(H2O_CONF.format(port=port, dir=d))
    return {}


def _haproxy_setup(d: Path, port: int) -> dict[str, str]:
    (d / "haproxy.cfg").write_text(HAPROXY_CONF.format(port=port, dead=daemons.free_port()))
    return {}


SPECS = [
    Spec("waitress", "pypi", "waitress",
         lambda py, nm, d, p: [py, "-m", "waitress", f"--listen=127.0.0.1:{p}", "app:app"],
         (("app.py", WSGI_APP),)),
    Spec("cheroot", "pypi", "cheroot",
         lambda py, nm, d, p: [py, "-m", "cheroot", "--bind", f"127.0.0.1:{p}", "app:app"],
         (("app.py", WSGI_APP),)),
    Spec("hypercorn", "pypi", "hypercorn",
         lambda py, nm, d, p: [py, "-m", "hypercorn", "--bind", f"127.0.0.1:{p}", "asgi:app"],
         (("asgi.py", ASGI_APP),)),
    Spec("daphne", "pypi", "daphne",
         lambda py, nm, d, p: [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(p), "asgi:app"],
         (("asgi.py", ASGI_APP),)),
    Spec("tornado", "pypi", "tornado",
         lambda py, nm, d, p: [py, "srv.py", str(p)], (("srv.py", TORNADO_APP),)),
    Spec("aiohttp", "pypi", "aiohttp",
         lambda py, nm, d, p: [py, "srv.py", str(p)], (("srv.py", AIOHTTP_APP),)),
    Spec("twisted-web", "pypi", "twisted",
         lambda py, nm, d, p: [py, "-m", "twisted", "web", "--listen",
                               f"tcp:{p}:interface=127.0.0.1", "--path", str(d)]),
    Spec("twisted-conch", "pypi", "twisted",
         lambda py, nm, d, p: [py, "-m", "twisted", "conch", "-p",
                               f"tcp:{p}:interface=127.0.0.1", "-d", str(d)],
         setup=lambda d, p: _ckeygen(d)),
    Spec("gunicorn-pypi", "pypi", "gunicorn",
         lambda py, nm, d, p: [py, "-m", "gunicorn", "-b", f"127.0.0.1:{p}", "app:app"],
         (("app.py", WSGI_APP),)),
    Spec("uvicorn-pypi", "pypi", "uvicorn",
         lambda py, nm, d, p: [py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(p),
                               "asgi:app"],
         (("asgi.py", ASGI_APP),)),
    Spec("wsgiref", "python", "python",
         lambda py, nm, d, p: [py, "srv.py", str(p)],
         (("app.py", WSGI_APP), ("srv.py", WSGIREF_APP))),
    Spec("aiosmtpd", "pypi", "aiosmtpd",
         lambda py, nm, d, p: [py, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{p}"]),
    Spec("pyftpdlib", "pypi", "pyftpdlib",
         lambda py, nm, d, p: [py, "-m", "pyftpdlib", "-i", "127.0.0.1", "-p", str(p), "-d",
                               str(d)]),
    Spec("koa", "npm", "koa",
         lambda py, nm, d, p: ["node", "srv.js", str(p)], (("srv.js", KOA_APP),)),
    Spec("fastify", "npm", "fastify",
         lambda py, nm, d, p: ["node", "srv.js", str(p)], (("srv.js", FASTIFY_APP),)),
    Spec("innd", "debian", "inn2",
         lambda py, nm, d, p: ["/usr/lib/news/bin/innd", "-f"], setup=_innd_setup, user="news",
         extra=(("NULL", b"MODE READER\r\n"),)),
    Spec("h2o", "debian", "h2o", lambda py, nm, d, p: ["/usr/bin/h2o", "-c", f"{d}/h2o.conf"],
         setup=_h2o_setup, user="www-data"),
    Spec("haproxy", "debian", "haproxy",
         lambda py, nm, d, p: ["/usr/sbin/haproxy", "-db", "-f", f"{d}/haproxy.cfg"],
         setup=_haproxy_setup),
    Spec("varnish", "debian", "varnish",
         lambda py, nm, d, p: ["/usr/sbin/varnishd", "-F", "-a", f"127.0.0.1:{p}", "-b",
                               f"127.0.0.1:{daemons.free_port()}", "-n", f"{d}/varnish",
                               "-s", "malloc,16m", "-T", "none"]),
    Spec("cyrus-imapd", "debian", "cyrus-imapd",
         lambda py, nm, d, p: ["/usr/lib/cyrus/bin/master", "-C", f"{d}/imapd.conf", "-M",
                               f"{d}/cyrus.conf", "-p", f"{d}/run/master.pid", "-D"],
         setup=_cyrus_setup("imap", "imapd")),
    Spec("cyrus-pop3d", "debian", "cyrus-pop3d",
         lambda py, nm, d, p: ["/usr/lib/cyrus/bin/master", "-C", f"{d}/imapd.conf", "-M",
                               f"{d}/cyrus.conf", "-p", f"{d}/run/master.pid", "-D"],
         setup=_cyrus_setup("pop3", "pop3d")),
    Spec("exim4", "deb", "exim4-daemon-light",
         lambda py, nm, d, p: [f"{d}/root/usr/sbin/exim4", "-C", f"{d}/exim.conf", "-bdf"],
         setup=_exim_setup),
    Spec("opensmtpd", "deb", "opensmtpd",
         lambda py, nm, d, p: [f"{d}/root/usr/sbin/smtpd", "-d", "-f", f"{d}/smtpd.conf"],
         setup=_opensmtpd_setup),
    Spec("mini-httpd", "debian", "mini-httpd",
         lambda py, nm, d, p: ["/usr/sbin/mini_httpd", "-D", "-p", str(p), "-h", "127.0.0.1",
                               "-d", f"{d}/www", "-u", "nobody", "-i", f"{d}/mini.pid"],
         setup=_www_setup),
    Spec("webfs", "debian", "webfs",
         lambda py, nm, d, p: ["/usr/bin/webfsd", "-F", "-p", str(p), "-i", "127.0.0.1", "-r",
                               f"{d}/www", "-u", "nobody", "-g", "nogroup"],
         setup=_www_setup),
    Spec("privoxy", "debian", "privoxy",
         lambda py, nm, d, p: ["/usr/sbin/privoxy", "--no-daemon", f"{d}/privoxy.conf"],
         setup=_privoxy_setup),
    Spec("lshd", "debian", "lsh-server",
         lambda py, nm, d, p: ["/usr/sbin/lshd", "-p", str(p), "--interface=127.0.0.1",
                               "--no-syslog"]),
    # inetd-style servers: socat accepts on our port and runs one server per connection
    Spec("micro-httpd", "debian", "micro-httpd",
         lambda py, nm, d, p: _inetd(p, f"/usr/sbin/micro-httpd {d}/www"), setup=_www_setup),
    Spec("tinysshd", "debian", "tinysshd",
         lambda py, nm, d, p: _inetd(p, f"/usr/sbin/tinysshd {d}/keys"), setup=_tinyssh_setup),
    Spec("inetutils-ftpd", "deb", "inetutils-ftpd",
         lambda py, nm, d, p: _inetd(p, f"{d}/root/usr/sbin/ftpd"),
         setup=lambda d, p: (_extract(d, "inetutils-ftpd"), {})[1]),
    Spec("caddy", "debian", "caddy",
         lambda py, nm, d, p: ["/usr/bin/caddy", "run", "--config", f"{d}/Caddyfile",
                               "--adapter", "caddyfile"], setup=_caddy_setup),
    Spec("inspircd", "debian", "inspircd",
         lambda py, nm, d, p: ["/usr/sbin/inspircd", "--nofork", f"--config={d}/inspircd.conf"],
         setup=_inspircd_setup, user="irc", wait=8.0),
    Spec("http-server", "npm", "http-server",
         lambda py, nm, d, p: ["node", str(nm / "http-server" / "bin" / "http-server"), str(d),
                               "-a", "127.0.0.1", "-p", str(p), "-s"]),
]


def package_version(spec: Spec, python: str, node_modules: Path) -> str:
    """The installed version of the spec's package, read from the install itself."""
    if spec.kind == "debian":
        return daemons.dpkg_version(spec.package)
    if spec.kind == "deb":
        return subprocess.run(["dpkg-deb", "-f", str(_deb(spec.package)), "Version"],
                              capture_output=True, text=True, check=True).stdout.strip()
    if spec.kind == "npm":
        return json.loads((node_modules / spec.package / "package.json").read_text())["version"]
    code = ("import sys, importlib.metadata as m; print(sys.version.split()[0] "
            f"if {spec.kind == 'python'!r} else m.version({spec.package!r}))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def probe_all(db: ProbeDB, port: int, source: str, show: bool = False,
              wait: float = 2.0) -> list[dict]:
    """Every probe on a fresh connection; one example per #@id line that identified a reply."""
    by_line = {line: tag for tag, line in line_ids(db.path).items()}
    chosen: dict[str, dict] = {}
    for probe in db.probes:
        if probe.proto != "tcp":
            continue
        try:
            data = capture.send_tcp("127.0.0.1", port, probe.payload, False,
                                    4.0 if probe.is_null else wait)
        except OSError:
            continue
        ident = db.match(probe.name, data, "tcp") if data else None
        if show and probe.name in ("NULL", "GetRequest") and data:
            print(f"  {probe.name}: {escape(data[:600])}", file=sys.stderr)
        if ident is None or ident.source is None or ident.source.line not in by_line:
            continue
        tag = by_line[ident.source.line]
        if tag not in chosen:
            chosen[tag] = capture.to_example(ident, tag, probe.name, "tcp", data, source)
    return list(chosen.values())


def extra_exchange(db: ProbeDB, port: int, label: str, payload: bytes, source: str,
                   have: list[dict]) -> list[dict]:
    """Send `payload` after the greeting; keep the answer (without the greeting) as a
    response to probe `label` when it identifies a line not captured yet."""
    by_line = {line: tag for tag, line in line_ids(db.path).items()}
    greeting = capture.send_tcp("127.0.0.1", port, b"", False, 2.0)
    both = capture.send_tcp("127.0.0.1", port, payload, False, 2.0)
    answer = both[len(greeting):] if both.startswith(greeting) else both
    ident = db.match(label, answer, "tcp") if answer else None
    if ident is None or ident.source is None or ident.source.line not in by_line:
        return []
    tag = by_line[ident.source.line]
    if any(e["id"] == tag for e in have):
        return []
    how = source.replace("), ", f"; the reply to {payload.strip().decode()}), ", 1)
    return [capture.to_example(ident, tag, label, "tcp", answer, how)]


def capture_one(spec: Spec, python: str, node_modules: Path, out: Path, show: bool) -> str:
    version = package_version(spec, python, node_modules)
    where = {"pypi": "PyPI", "npm": "npm", "python": "CPython stdlib",
             "debian": "Debian 12", "deb": "Debian 12, binary run from the extracted .deb"
             }[spec.kind]
    source = (f"real capture: {spec.package} {version} ({where}, started by "
              f"tests/daemons_capture.py on 127.0.0.1), {dt.date.today().isoformat()}")
    db = servprobe.load_db("bundled", prefilter=False)
    with daemons._workdir(spec.name, owner=spec.user) as d:
        for fname, text in spec.files:
            (d / fname).write_text(text)
        port = daemons.free_port()
        log = d / "daemon.log"
        env = {"PATH": f"{Path(python).parent}:/usr/sbin:/usr/bin:/sbin:/bin",
               "NODE_PATH": str(node_modules), "PYTHONPATH": str(d), "HOME": str(d)}
        if spec.setup is not None:
            env.update(spec.setup(d, port))
        if spec.user:
            subprocess.run(["chown", "-R", spec.user, str(d)], check=True)
        preexec = daemons._as_user(spec.user) if spec.user else None
        with daemons._running(spec.argv(python, node_modules, d, port), log, env=env,
                              cwd=d, preexec=preexec) as proc:
            daemons._wait_tcp(port, proc, spec.name, log)
            examples = probe_all(db, port, source, show, spec.wait)
            for label, payload in spec.extra:
                examples += extra_exchange(db, port, label, payload, source, examples)
    path = out / f"real-{spec.name}-0-tcp.json"
    path.write_text(json.dumps({"examples": examples}, indent=1) + "\n")
    return f"{spec.name}: {spec.package} {version}, {len(examples)} examples -> {path.name}"


def _set_debs(path: Path) -> None:
    global DEBS
    DEBS = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="interpreter with the PyPI servers")
    ap.add_argument("--node-modules", required=True, type=Path)
    ap.add_argument("--only", default="", help="comma-separated names")
    ap.add_argument("--out", type=Path, default=EXAMPLES)
    ap.add_argument("--show", action="store_true", help="print the NULL and GET replies")
    ap.add_argument("--debs", type=Path, default=DEBS,
                    help="directory of downloaded .deb files (exim4-daemon-light, opensmtpd)")
    args = ap.parse_args(argv)
    only = {n for n in args.only.split(",") if n}
    _set_debs(args.debs)
    _PYTHON[0] = args.python
    for spec in SPECS:
        if only and spec.name not in only:
            continue
        try:
            print(capture_one(spec, args.python, args.node_modules, args.out, args.show), flush=True)
        except daemons.DaemonError as exc:
            print(f"{spec.name}: not captured: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
