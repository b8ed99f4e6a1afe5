"""Post-processors against real Debian daemons on loopback, side by side with nmap 7.93.

One module-scoped set: rabbitmq-server, mosquitto, snmpd, slapd, git daemon, smbd
(tests/daemons_post.py) plus the suite's nginx, redis, memcached and stunnel4 (conftest).
servprobe scans it once (nmap's database; mosquitto and git with our bundled one, the only
one naming them on free ports), while nmap -sV runs once per protocol, in parallel, with the
matching NSE scripts named so their output shows.
Expected values come from dpkg (package versions) and from nmap's run. Deliberate
differences from nmap are named in the test that asserts them.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import daemons_post
import servprobe
from daemons import HOST, Daemon, upstream_version
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.net.driver import new_event_loop, run_service_scan

pytestmark = pytest.mark.daemon

NMAP_TCP_SCRIPTS = ("amqp-info,http-server-header,redis-info,memcached-info,smb2-security-mode,smb2-time,"
                    "rfc868-time")


@pytest.fixture(scope="module")
def post_set(nginx_daemon: Daemon, redis_daemon: Daemon, memcached_daemon: Daemon,
             stunnel_daemon: Daemon) -> Iterator[dict[str, Daemon]]:
    with contextlib.ExitStack() as stack:
        yield {
            "rabbitmq": stack.enter_context(daemons_post.rabbitmq()),
            "mosquitto": stack.enter_context(daemons_post.mosquitto()),
            "snmpd": stack.enter_context(daemons_post.snmpd()),
            "slapd": stack.enter_context(daemons_post.slapd()),
            "git": stack.enter_context(daemons_post.git_daemon()),
            "smbd": stack.enter_context(daemons_post.smbd()),
            "smbd1": stack.enter_context(daemons_post.smbd(smb1=True)),
            "prosody": stack.enter_context(daemons_post.prosody()),
            "krb5kdc": stack.enter_context(daemons_post.krb5kdc()),
            "varnish": stack.enter_context(daemons_post.varnish()),
            "haproxy": stack.enter_context(daemons_post.haproxy()),
            "time": stack.enter_context(daemons_post.xinetd_time()),
            "coturn": stack.enter_context(daemons_post.coturn()),
            "nginx_redirect": stack.enter_context(daemons_post.nginx_redirect()),
            "nginx": nginx_daemon, "redis": redis_daemon, "memcached": memcached_daemon,
            "stunnel": stunnel_daemon,
        }


def _nmap_ports(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """nmap's XML: per (proto, port) its service attributes and scripts {id: (output, elem)}."""
    out = {}
    for port in ET.parse(path).getroot().iter("port"):
        svc = port.find("service")
        scripts = {}
        for sc in port.findall("script"):
            elems = {e.get("key"): e.text for e in sc.iter("elem") if e.get("key")}
            scripts[sc.get("id")] = (sc.get("output"), elems)
        out[(port.get("protocol"), int(port.get("portid")))] = {
            "service": dict(svc.attrib) if svc is not None else {}, "scripts": scripts,
            "state": port.find("state").get("state"),
        }
    for sc in ET.parse(path).getroot().iter("hostscript"):
        for s in sc.findall("script"):
            out[("host", s.get("id"))] = {"output": s.get("output")}
    return out


def _our_scan(db: Any, targets: list[ServiceTarget], trace: list[str]) -> dict[tuple[str, int], Any]:
    found: dict[tuple[str, int], Any] = {}
    opts = EngineOptions(version_trace=True)

    async def go() -> None:
        await run_service_scan(db, targets, opts, lambda r: found.__setitem__((r.proto, r.port), r),
                               trace.append)

    loop = new_event_loop()
    try:
        loop.run_until_complete(go())
    finally:
        loop.close()
    return found


@pytest.fixture(scope="module")
def scans(post_set: dict[str, Daemon], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = post_set
    tmp = tmp_path_factory.mktemp("post-nmap")
    tcp = [d["rabbitmq"].port, d["nginx"].ports["nginx-http"], d["redis"].port, d["memcached"].port,
           d["slapd"].port, d["smbd"].port, d["prosody"].port, d["krb5kdc"].port, d["varnish"].port,
           d["haproxy"].port, d["time"].port, d["nginx_redirect"].port]
    udp = [d["snmpd"].port, d["memcached"].ports["memcached-udp"], d["krb5kdc"].port, d["time"].port]
    bundled = servprobe.load_db("bundled")
    runs = {
        # the scripts are named so their output shows (-sV alone runs them silently)
        # nmap's SMB scripts are host scripts: smbport points them at smbd's free port
        "tcp": ["nmap", "-sV", "-Pn", "-p", ",".join(map(str, tcp)), "--script", NMAP_TCP_SCRIPTS,
                "--script-args", f"smbport={d['smbd'].port}"],
        # intensity 4 still reaches SNMPv1public (rarity 4) and keeps nmap's UDP run short
        "udp": ["nmap", "-sU", "-sV", "--version-intensity", "4", "-Pn", "-p", ",".join(map(str, udp)),
                "--script", "snmp-info,snmp-sysdescr,rfc868-time"],
        # a silent-to-probes UDP port costs nmap every probe's wait: intensity 0 keeps it short
        "stun": ["nmap", "-sU", "-sV", "--version-intensity", "0", "-Pn", "-p", str(d["coturn"].port),
                 "--script", "stun-version"],
        # only our bundled database names MQTT and git on free ports; nmap reads it (--versiondb)
        "mqtt": ["nmap", "-sV", "-Pn", "-p", f"{d['mosquitto'].port},{d['git'].port}", "--versiondb", str(bundled.path),
                 "--script", "mqtt-subscribe", "--script-args",
                 "mqtt-subscribe.topic=$SYS/broker/version,mqtt-subscribe.listen-msgs=1"],
    }
    # no -sV: only the host script, to see what nmap makes of an SMB1-enabled smbd
    smb1 = d["smbd1"].port
    runs["smb1"] = ["nmap", "-Pn", "-p", str(smb1), "--script", "smb-os-discovery", "--script-args", f"smbport={smb1}"]
    done: dict[str, subprocess.CompletedProcess[str]] = {}

    def nmap(name: str, argv: list[str]) -> None:
        done[name] = subprocess.run([*argv, "-oX", str(tmp / f"{name}.xml"), HOST],
                                    capture_output=True, text=True, timeout=300)

    threads = [threading.Thread(target=nmap, args=item) for item in runs.items()]
    for t in threads:
        t.start()
    trace: list[str] = []
    db = servprobe.load_db()
    targets = [ServiceTarget(HOST, p, "tcp") for p in
               [*tcp, d["nginx"].ports["nginx-https"], d["stunnel"].ports["stunnel-redis"], smb1]]
    targets += [ServiceTarget(HOST, p, "udp") for p in [*udp, d["coturn"].port]]
    ours = _our_scan(db, targets, trace)
    ours.update(_our_scan(bundled, [ServiceTarget(HOST, d[n].port, "tcp") for n in ("mosquitto", "git")], trace))
    for t in threads:
        t.join()
    nm: dict[tuple[str, int], Any] = {}
    for name, proc in done.items():
        assert proc.returncode == 0, f"nmap {name} failed: {proc.stderr}"
        nm.update({(name, *k) if name == "smb1" else k: v for k, v in _nmap_ports(tmp / f"{name}.xml").items()})
    return {"ours": ours, "nmap": nm, "trace": trace}


def _pair(scans: dict[str, Any], proto: str, port: int) -> tuple[Any, dict[str, Any]]:
    return scans["ours"][(proto, port)], scans["nmap"][(proto, port)]


def _script(r: Any, sid: str) -> Any:
    found = [s for s in r.scripts if s.id == sid]
    assert found, f"no {sid} in {[s.id for s in r.scripts]}"
    return found[0]


def test_amqp_info_equals_nmap(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["rabbitmq"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product, r.version, r.extrainfo) == ("amqp", "RabbitMQ", upstream_version(d.version), "0-9")
    assert (r.product, r.version, r.extrainfo) == tuple(n["service"].get(k) for k in ("product", "version", "extrainfo"))
    # nmap's amqp-info output string ends with a newline its normal output drops; ours has none
    assert _script(r, "amqp-info").output == n["scripts"]["amqp-info"][0].rstrip("\n")


def test_mqtt_version_and_name(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["mosquitto"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product, r.version) == ("mqtt", "Mosquitto", upstream_version(d.version))
    payload = _script(r, "mqtt-subscribe").elements["Topics and their most recent payloads"]["$SYS/broker/version"]
    assert payload == n["scripts"]["mqtt-subscribe"][1]["$SYS/broker/version"]
    # deliberate difference: nmap 7.93 writes the payload over the service name (GH#2657)
    assert n["service"]["name"] == payload != r.service


def test_snmp_equals_nmap(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["snmpd"]
    r, n = _pair(scans, "udp", d.port)
    assert (r.service, r.product, r.extrainfo, r.hostname) == tuple(
        n["service"].get(k) for k in ("name", "product", "extrainfo", "hostname"))
    assert "net-snmp SNMPv3 server" in r.product
    ours, theirs = _script(r, "snmp-info").elements, n["scripts"]["snmp-info"][1]
    # engine time moves between the two scans; everything else is the engine's identity
    for key in ("enterprise", "engineIDFormat", "engineIDData", "snmpEngineBoots"):
        assert ours[key] == theirs[key], key
    first = _script(r, "snmp-sysdescr").output.split("\n")[0]
    assert first == n["scripts"]["snmp-sysdescr"][0].split("\n")[0]


def test_http_server_header_equals_nmap(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["nginx"]
    r, n = _pair(scans, "tcp", d.ports["nginx-http"])
    assert _script(r, "http-server-header").output == n["scripts"]["http-server-header"][0]
    assert _script(r, "http-server-header").output == f"nginx/{upstream_version(d.version)}"
    assert (r.product, r.version) == ("nginx", upstream_version(d.version))  # the walk's, untouched
    tls = scans["ours"][("tcp", d.ports["nginx-https"])]
    assert tls.tunnel == "ssl" and _script(tls, "http-server-header").output == f"nginx/{upstream_version(d.version)}"
    assert "https-redirect" not in [s.id for s in r.scripts]  # nginx answers plain HTTP itself


def test_redis_info_equals_nmap_and_works_in_tls(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["redis"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.product, r.version, r.extrainfo) == tuple(n["service"].get(k) for k in ("product", "version", "extrainfo"))
    assert r.version == upstream_version(d.version)
    ours, theirs = _script(r, "redis-info").elements, n["scripts"]["redis-info"][1]
    for key in ("Version", "Operating System", "Architecture", "Process ID"):
        assert ours[key] == theirs[key], key
    # beyond nmap: the same answer through stunnel's TLS
    s = scans["ours"][("tcp", post_set["stunnel"].ports["stunnel-redis"])]
    assert (s.tunnel, s.service, s.version) == ("ssl", "redis", upstream_version(d.version))


def test_memcached_version_tcp_and_udp(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["memcached"]
    r, n = _pair(scans, "tcp", d.port)
    assert r.product == n["service"]["product"] == "Memcached"
    # deliberate difference: nmap's memcached-info does not ask `version`, so nmap has none
    assert r.version == upstream_version(d.version) and "version" not in n["service"]
    u, nu = _pair(scans, "udp", d.ports["memcached-udp"])
    # deliberate difference: nmap's UDP probes lack the frame header: "unknown", open|filtered
    assert (u.state, u.service, u.product, u.version) == ("open", "memcached", "Memcached", upstream_version(d.version))
    assert nu["state"] == "open|filtered" and nu["service"].get("name") in (None, "unknown")


def test_ldap_rootdse(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["slapd"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product) == (n["service"]["name"], n["service"]["product"]) == ("ldap", "OpenLDAP")
    # deliberate difference: nmap's "2.2.X - 2.3.X" is a guess the probe file attaches to any
    # OpenLDAP (this one is 2.5); OpenLDAP publishes no version, so we state none
    assert n["service"]["version"] == "2.2.X - 2.3.X" and r.version is None
    assert not upstream_version(d.version).startswith(("2.2", "2.3"))
    el = _script(r, "ldap-rootdse").elements
    assert el["namingContexts"] == d.extra["suffix"] and el["supportedLDAPVersion"] == "3"


def test_git_agent(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["git"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product) == (n["service"]["name"], n["service"]["product"]) == ("git", "git daemon")
    # beyond nmap (no script of its asks upload-pack): the version from agent=git/x.y.z
    assert r.version == upstream_version(d.version) and "version" not in n["service"]
    assert _script(r, "git-info").elements["agent"] == f"git/{upstream_version(d.version)}"


def test_smb2_and_ntlm(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["smbd"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product) == (n["service"]["name"], n["service"]["product"]) == ("netbios-ssn", "Samba smbd")
    # deliberate difference: nmap's "4.6.2" is fixed text of its SMB2 line (this smbd is 4.17);
    # neither SMB2 nor NTLMSSP states Samba's version, so we state none
    assert n["service"]["version"] == "4.6.2" and r.version is None
    assert not upstream_version(d.version).startswith("4.6.")
    # nmap shows these as host scripts; we attach them to the port that answered
    assert _script(r, "smb2-security-mode").output == scans["nmap"][("host", "smb2-security-mode")]["output"]
    assert _script(r, "smb2-time").elements["start_date"] == "N/A"
    assert "start_date: N/A" in scans["nmap"][("host", "smb2-time")]["output"]
    ntlm = _script(r, "smb-ntlm-info").elements
    assert ntlm["NetBIOS_Computer_Name"] == d.extra["name"] == r.hostname
    assert ntlm["Target_Name"] == d.extra["name"]  # standalone server: its own name is the domain


def test_smb1_states_samba_version(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["smbd1"]
    r = scans["ours"][("tcp", d.port)]
    assert r.product == "Samba smbd" and r.version.startswith(upstream_version(d.version).split("+")[0] + "-")
    el = _script(r, "smb-os-discovery").elements
    assert el["NativeLanMan"] == f"Samba {r.version}" and el["Domain name"] == d.extra["workgroup"]
    # deliberate difference: nmap 7.93's smb-os-discovery fails on this smbd (script error)
    assert "ERROR" in scans["nmap"][("smb1", "host", "smb-os-discovery")]["output"]


def test_xmpp_named_before_login(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["prosody"]
    r, n = _pair(scans, "tcp", d.port)
    # deliberate difference: nmap 7.93 knows no line for Prosody's answers, and its xmpp-info
    # only runs on 5222 or a service already named xmpp: nmap says unknown
    assert n["service"].get("name") in (None, "unknown") and "product" not in n["service"]
    assert (r.service, r.product, r.method) == ("xmpp", "Prosody XMPP server", "probed")
    el = _script(r, "xmpp-info").elements
    # the scan addressed 127.0.0.1, which Prosody does not serve (its VirtualHost is localhost)
    assert el["version"] == "1.0" and el["error"] == "host-unknown"


def test_kerberos_krb_error(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["krb5kdc"]
    r, n = _pair(scans, "tcp", d.port)
    assert (r.service, r.product, r.hostname) == tuple(n["service"].get(k) for k in ("name", "product", "hostname"))
    el = _script(r, "krb5-info").elements
    assert el["realm"] == d.extra["realm"] == r.hostname and el["error"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"
    assert abs(int(el["clock skew"][:-1])) <= 2  # same machine, same clock
    u, nu = _pair(scans, "udp", d.port)
    # deliberate difference: nmap 7.93 has no UDP line for MIT's KRB-ERROR: unknown there
    assert nu["service"].get("name") in (None, "unknown")
    assert u.service == "kerberos-sec", "\n".join(t for t in scans["trace"] if "post krb5" in t)
    assert _script(u, "krb5-info").elements["error"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"


def test_varnish_and_haproxy(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    v = post_set["varnish"]
    r, n = _pair(scans, "tcp", v.port)
    assert r.product == n["service"]["product"] == "Varnish http accelerator"
    # beyond nmap: Via says "varnish (Varnish/7.1)", the package's major.minor
    assert "version" not in n["service"] and upstream_version(v.version).startswith(r.version + ".")
    h = post_set["haproxy"]
    r, n = _pair(scans, "tcp", h.port)
    # deliberate difference: nmap 7.93 names no product for HAProxy's own 503 page
    assert "product" not in n["service"]
    assert (r.service, r.product) == ("http", "HAProxy http proxy")


def test_rfc868_time_equals_nmap(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    from datetime import datetime

    port = post_set["time"].port
    for proto in ("tcp", "udp"):
        r, n = _pair(scans, proto, port)
        assert (r.service, r.extrainfo) == (n["service"]["name"], n["service"]["extrainfo"]) == ("time", "32 bits")
        ours = datetime.fromisoformat(_script(r, "rfc868-time").output)
        theirs = datetime.fromisoformat(n["scripts"]["rfc868-time"][0])
        assert abs((ours - theirs).total_seconds()) < 120, proto  # both read the same clock, minutes apart at most


def test_stun_software(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["coturn"]
    r, n = _pair(scans, "udp", d.port)
    assert (r.service, r.product, r.version) == ("stun", "Coturn", upstream_version(d.version))
    el = _script(r, "stun-version").elements
    assert el["software"].startswith(f"Coturn-{upstream_version(d.version)}") and el["mapped"].startswith("127.0.0.1:")
    # deliberate difference: nmap's stun-version only runs on 3478 or a port already named
    # stun, and its probes never name this one (and it would put the whole SOFTWARE string
    # in the product)
    assert "product" not in n["service"], n


def test_https_redirect_equals_nmap(post_set: dict[str, Daemon], scans: dict[str, Any]) -> None:
    d = post_set["nginx_redirect"]
    r, n = _pair(scans, "tcp", d.port)
    # the walk matched nginx's plain-HTTP redirect; https-redirect puts it inside TLS, as nmap's does
    assert (r.tunnel, r.service, r.product) == (n["service"].get("tunnel"), n["service"]["name"],
                                                 n["service"]["product"]) == ("ssl", "http", "nginx")
    assert _script(r, "https-redirect").elements["location"] == f"https://127.0.0.1:{d.port}/"


def test_version_trace_shows_exchanges(scans: dict[str, Any]) -> None:
    trace = "\n".join(scans["trace"])
    for sid in ("amqp-info", "mqtt-subscribe", "snmp-info", "redis-info", "ldap-rootdse"):
        assert f"post {sid} SEND" in trace and f"post {sid} READ" in trace, sid
