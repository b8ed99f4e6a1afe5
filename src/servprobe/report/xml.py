"""XML output following nmap.dtd (nmaprun/scaninfo/host/ports/service/runstats), so nmap's
consumers (ndiff, python-libnmap, xsltproc with nmap.xsl, importers) read it unchanged.

nmap.dtd fixes `scanner="nmap"`; servprobe identifies itself with `profile_name="servprobe"`
and its own version. Hosts are written as each completes; the document is closed on finish
(also after Ctrl-C), so it is well-formed whatever a service sent: every attribute value goes
through servprobe.escape.xml_safe and is entity-escaped.
"""

from __future__ import annotations

import time

from servprobe.escape import xml_safe
from servprobe.report.base import (
    TextFileReporter,
    command_line,
    host_counts,
    port_count,
    split_ports,
    summary_text,
    timestr,
    unwrap_fingerprint,
)
from servprobe.result import ExtraPorts, HostResult, ScanRun, ScriptResult, ServiceResult
from servprobe.scan.ports import compress

_ENT = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\n": "&#10;",
    "\r": "&#13;",
    "\t": "&#9;",
}


_ATTR_TABLE = str.maketrans(_ENT)
_TEXT_TABLE = str.maketrans({c: _ENT[c] for c in "&<>"})


def attr(value: object) -> str:
    return xml_safe(str(value)).translate(_ATTR_TABLE)


def text_node(value: object) -> str:
    return xml_safe(str(value)).translate(_TEXT_TABLE)


def attrs(pairs: list[tuple[str, object]]) -> str:
    return "".join(f' {k}="{attr(v)}"' for k, v in pairs if v is not None and v != "")


def service_element(r: ServiceResult, service_scan: bool) -> str:
    if not r.service and not r.fingerprint and not (service_scan and r.state == "open"):
        return ""
    name = r.service or "unknown"
    if r.rpc is not None and r.service in (None, "rpc"):
        name = r.rpc.name or name
    pairs: list[tuple[str, object]] = [
        ("name", name),
        ("product", r.product),
        ("version", r.version),
        ("extrainfo", r.extrainfo),
        ("hostname", r.hostname),
        ("ostype", r.ostype),
        ("devicetype", r.devicetype),
        ("tunnel", r.tunnel),
    ]
    if r.rpc is not None:
        pairs += [
            ("proto", "rpc"),
            ("rpcnum", r.rpc.program),
            ("lowver", r.rpc.lowver),
            ("highver", r.rpc.highver),
        ]
    if r.fingerprint:
        pairs.append(("servicefp", unwrap_fingerprint(r.fingerprint)))
    pairs += [("method", r.method), ("conf", max(0, min(10, int(r.conf))))]
    cpes = "".join(f"<cpe>{text_node(c)}</cpe>" for c in r.cpes)
    if cpes:
        return f"<service{attrs(pairs)}>{cpes}</service>"
    return f"<service{attrs(pairs)}/>"


def port_element(r: ServiceResult, service_scan: bool) -> str:
    state = (
        f'<state{attrs([("state", r.state), ("reason", r.reason or "unknown")])} reason_ttl="0"/>'
    )
    scripts = "".join(script_element(sc) for sc in r.port_scripts()) if service_scan else ""
    return (
        f'<port protocol="{r.proto}" portid="{r.port}">{state}'
        f"{service_element(r, service_scan)}{scripts}</port>"
    )


def script_element(sc: ScriptResult) -> str:
    """A post-processor finding as nmap writes script output: <script id= output=> with
    <elem key=> for values and <table key=> for nested dicts and lists."""
    return (
        f'<script id="{attr(sc.id)}" output="{attr(sc.output)}">{_elements(sc.elements)}</script>'
    )


def _elements(value: object, key: str | None = None) -> str:
    k = f' key="{attr(key)}"' if key is not None else ""
    if isinstance(value, dict):
        inner = "".join(_elements(v, str(name)) for name, v in value.items())
        return inner if key is None else f"<table{k}>{inner}</table>"
    if isinstance(value, list | tuple):
        return f"<table{k}>{''.join(_elements(v) for v in value)}</table>"
    return f"<elem{k}>{text_node(value)}</elem>"


def extraports_element(e: ExtraPorts) -> str:
    reasons = "".join(
        f"<extrareasons{attrs([('reason', reason), ('count', n), ('proto', e.proto)])}"
        + (f' ports="{compress(e.ports)}"' if e.ports and len(e.reasons) == 1 else "")
        + "/>"
        for reason, n in sorted(e.reasons.items(), key=lambda kv: -kv[1])
    )
    return f'<extraports state="{attr(e.state)}" count="{e.count}">{reasons}</extraports>'


def host_element(host: HostResult, service_scan: bool) -> str:
    start = int(host.starttime) if host.starttime else None
    end = int(host.endtime) if host.endtime else None
    head = f"<host{attrs([('starttime', start), ('endtime', end)])}"
    if host.timedout:
        head += ' timedout="true"'
    if host.partial:
        head += ' comment="partial: scan interrupted before this host was finished"'
    parts = [head + ">"]
    status = "up" if host.status == "up" else ("down" if host.status == "down" else "unknown")
    parts.append(
        f'<status state="{status}"{attrs([("reason", host.reason or "unknown")])} reason_ttl="0"/>'
    )
    parts.append("\n")
    family = "ipv6" if ":" in host.address else "ipv4"
    parts.append(f'<address addr="{attr(host.address)}" addrtype="{family}"/>\n')
    names = "".join(
        f'<hostname name="{attr(n)}" type="{_htype(host, i)}"/>\n'
        for i, n in enumerate(host.hostnames)
    )
    parts.append(f"<hostnames>\n{names}</hostnames>\n" if names else "<hostnames>\n</hostnames>\n")
    if status == "up":
        listed, extra = list(host.ports), list(host.extra)
        if not extra and not host.extraports:
            listed, extra = split_ports(host.ports)
        parts.append("<ports>")
        parts.extend(extraports_element(e) + "\n" for e in extra)
        parts.extend(port_element(r, service_scan) + "\n" for r in listed)
        parts.append("</ports>\n")
        hostscripts = host.host_scripts() if service_scan else []
        if hostscripts:  # nmap.dtd: after <ports>, before <times>
            parts.append(
                f"<hostscript>{''.join(script_element(sc) for sc in hostscripts)}</hostscript>\n"
            )
        if host.latency is not None:
            us = int(host.latency * 1e6)
            parts.append(f'<times srtt="{us}" rttvar="{us}" to="{max(100000, us * 4)}"/>\n')
    parts.append("</host>\n")
    return "".join(parts)


class XmlReporter(TextFileReporter):
    def start(self, run: ScanRun) -> None:
        self._begin(run)
        cmd = command_line(run)
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            "<!DOCTYPE nmaprun>\n",
            # "--" may not appear inside an XML comment
            f"<!-- servprobe {attr(run.version)} scan initiated {timestr(run.start)} as: "
            f"{attr(cmd).replace('--', '- -')} -->\n",
            *(
                [f"<!-- probe database: {attr(run.db_path).replace('--', '- -')} -->\n"]
                if run.service_scan and run.db_path
                else []
            ),
            f'<nmaprun scanner="nmap" profile_name="servprobe" args="{attr(cmd)}" '
            f'start="{int(run.start)}" startstr="{timestr(run.start)}" '
            f'version="{attr(run.version)}" xmloutputversion="1.05">\n',
        ]
        for proto in ("tcp", "udp"):
            spec = run.ports_spec.get(proto)
            if spec is None:
                continue
            kind = "connect" if proto == "tcp" else "udp"
            n = port_count(spec)
            out.append(
                f'<scaninfo type="{kind}" protocol="{proto}" numservices="{n}" services="{attr(spec)}"/>\n'
            )
        out.append(f'<verbose level="{run.verbose}"/>\n<debugging level="{run.debugging}"/>\n')
        self._w("".join(out))

    def port(self, result: ServiceResult) -> None:
        pass

    def host(self, host: HostResult) -> None:
        if host.status == "down" and self.verbose < 1:
            return
        self._w(host_element(host, self.service_scan))

    def finish(self, run: ScanRun) -> None:
        end = run.end or time.time()
        summary = f"servprobe done at {timestr(end)}; {summary_text(run)}"
        total, up = host_counts(run)
        exit_attrs = ' exit="success"'
        if run.interrupted:
            exit_attrs = ' exit="error" errormsg="interrupted: partial results"'
        self._w(
            f'<runstats><finished time="{int(end)}" timestr="{timestr(end)}" '
            f'summary="{attr(summary)}" elapsed="{end - run.start:.2f}"{exit_attrs}/>'
            f'<hosts up="{up}" down="{total - up}" total="{total}"/>\n</runstats>\n</nmaprun>\n'
        )


def _htype(host: HostResult, i: int) -> str:
    types = host.hostname_types
    return types[i] if i < len(types) and types[i] in ("user", "PTR") else "PTR"
