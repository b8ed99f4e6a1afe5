"""HTML output (-oH): one self-contained page — no CDN, no network, CSS and a little JS inline.

Contents: a summary (hosts, open ports, identified %, scan time, database, command), bar
charts of services and of products/versions (inline SVG), a host list, and a sortable,
filterable table of every listed port, grouped by host by default, with CPEs, script
(post-processor) results, and unrecognized fingerprints collapsed in <details>.

Safety: every piece of service text goes through `_e` (control characters as \\xHH, then
HTML-escaped, quotes included), so a banner can never become markup or script. The page
also carries a Content-Security-Policy that allows only its own inline script (by hash) and
no network fetches at all, so even a bug in the escaping could not load or run anything.
The script reads the table's text (textContent) and never writes HTML.

Written at `finish` (the end of the scan, or Ctrl-C/SIGTERM, like every other output).
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from collections import Counter
from typing import IO

from servprobe.report.base import (
    command_line,
    safe_text,
    split_ports,
    summary_text,
    timestr,
    unwrap_fingerprint,
)
from servprobe.result import HostResult, ScanRun, ServiceResult

OPEN_STATES = ("open", "open|filtered")
CHART_BARS = 12


def _e(value: object) -> str:
    """Untrusted text as HTML text or attribute value."""
    return html.escape(safe_text("" if value is None else str(value)), quote=True)


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1f23;background:#fff}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .5em}
.summary{display:flex;flex-wrap:wrap;gap:.8em}.card{border:1px solid #d0d7de;border-radius:6px;padding:.5em .9em}
.card b{display:block;font-size:1.4em}.meta{color:#57606a;font-size:.9em;word-break:break-all}
.charts{display:flex;flex-wrap:wrap;gap:2em}svg text{font:12px system-ui,sans-serif}
table{border-collapse:collapse;width:100%;margin-top:.5em}th,td{border-bottom:1px solid #d8dee4;padding:.25em .5em;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f6f8fa;user-select:none;white-space:nowrap}th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
tr.hostfirst td{border-top:2px solid #8c959f}.st-open{color:#116329;font-weight:600}.st-closed{color:#82071e}
.guess{color:#9a6700}.unfinished{color:#9a6700;font-style:italic}pre{white-space:pre-wrap;word-break:break-all;margin:.2em 0;font-size:.85em}
#filter{font-size:1em;padding:.3em .5em;width:min(30em,90%)}details summary{cursor:pointer;color:#0969da}
ul.hosts{columns:3 18em;padding-left:1.2em}
"""

# Sorting and filtering only; reads textContent, writes only attributes and counts.
JS = """
(function(){
var table=document.getElementById('ports'),body=table.tBodies[0],filter=document.getElementById('filter'),
shown=document.getElementById('shown');
function rows(){return Array.prototype.slice.call(body.rows);}
function apply(){var q=filter.value.toLowerCase().trim(),n=0;
rows().forEach(function(r){var hit=!q||r.textContent.toLowerCase().indexOf(q)>=0;r.hidden=!hit;if(hit)n++;});
shown.textContent=String(n);}
['input','change','search','keyup'].forEach(function(t){filter.addEventListener(t,apply);});
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
th.addEventListener('click',function(){var asc=th.getAttribute('aria-sort')!=='ascending';
Array.prototype.forEach.call(table.tHead.rows[0].cells,function(o){o.removeAttribute('aria-sort');});
th.setAttribute('aria-sort',asc?'ascending':'descending');var num=th.dataset.type==='num';
var rs=rows();rs.sort(function(a,b){var x=a.cells[i].dataset.key||a.cells[i].textContent,y=b.cells[i].dataset.key||b.cells[i].textContent;
var c=num?(parseFloat(x)||0)-(parseFloat(y)||0):x.localeCompare(y);return asc?c:-c;});
rs.forEach(function(r){r.classList.remove('hostfirst');body.appendChild(r);});});});
var m=/[#&]filter=([^&]*)/.exec(location.hash);if(m){filter.value=decodeURIComponent(m[1]);}
apply();
})();
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(JS.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'; form-action 'none'; base-uri 'none'"
    )


def bar_chart(title: str, counts: list[tuple[str, int]], width: int = 460) -> str:
    """A horizontal bar chart as inline SVG (labels escaped like any service text)."""
    if not counts:
        return f'<figure><figcaption>{_e(title)}</figcaption><p class="meta">nothing to chart</p></figure>'
    bar_h, gap, label_w = 18, 6, 190
    top = max(n for _, n in counts)
    height = len(counts) * (bar_h + gap) + gap
    parts = [
        f"<figure><figcaption>{_e(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}">'
    ]
    for i, (label, n) in enumerate(counts):
        y = gap + i * (bar_h + gap)
        w = max(2, int((width - label_w - 40) * n / top))
        shown = label if len(label) <= 28 else label[:27] + "\u2026"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end"><title>{_e(label)}</title>{_e(shown)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" fill="#4c8bf5"/>'
            f'<text x="{label_w + w + 4}" y="{y + 13}">{n}</text>'
        )
    parts.append("</svg></figure>")
    return "".join(parts)


def _service_cell(r: ServiceResult) -> str:
    text = _e(r.display_service())
    if getattr(r, "unfinished", False):
        return (
            f'<span class="unfinished" title="service scan unfinished">{text} (unfinished)</span>'
        )
    if r.method == "table" and r.state in OPEN_STATES:
        return f'<span class="guess" title="port-table guess, not probed">{text}</span>'
    return text


def _details(r: ServiceResult) -> str:
    out = []
    for s in r.scripts:
        out.append(
            f'<details class="script"><summary>{_e(s.id)}</summary><pre>{_e(s.output)}</pre></details>'
        )
    if r.fingerprint:
        out.append(
            '<details class="fp"><summary>unrecognized: fingerprint</summary>'
            f"<pre>{_e(unwrap_fingerprint(r.fingerprint))}</pre></details>"
        )
    return "".join(out)


def _host_key(address: str) -> str:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"9:{address}"
    return f"{ip.version}:{int(ip):039d}"


class HtmlReporter:
    """A reporter (servprobe.report.base) that writes the page at `finish`."""

    def __init__(self, fh: IO[str], *, close: bool = False) -> None:
        self.fh = fh
        self._close = close
        self.hosts: list[HostResult] = []

    def start(self, run: ScanRun) -> None:
        pass

    def port(self, result: ServiceResult) -> None:
        pass  # the page lists hosts, complete

    def host(self, host: HostResult) -> None:
        if host.status == "up" or host.ports:
            self.hosts.append(host)

    def finish(self, run: ScanRun) -> None:
        self.fh.write(render(run, self.hosts))
        self.fh.flush()

    def close(self) -> None:
        if self._close:
            self.fh.close()


def render(run: ScanRun, hosts: list[HostResult]) -> str:
    """The whole page for a run and its reported hosts."""
    hosts = sorted(hosts, key=lambda h: _host_key(h.address))
    listed_by_host: list[tuple[HostResult, list[ServiceResult]]] = []
    for h in hosts:
        listed = list(h.ports)
        if not h.extra and not h.extraports:
            listed, _ = split_ports(listed)
        listed_by_host.append((h, listed))
    all_ports = [r for _, listed in listed_by_host for r in listed]
    open_ports = [r for r in all_ports if r.state in OPEN_STATES]
    identified = [r for r in open_ports if r.method == "probed"]
    pct = f"{100 * len(identified) / len(open_ports):.0f}%" if open_ports else "\u2013"
    elapsed = (run.end or time.time()) - run.start
    services = Counter(r.display_service() for r in open_ports).most_common(CHART_BARS)
    products = Counter(
        " ".join(p for p in (r.product, r.version) if p) for r in open_ports if r.product
    ).most_common(CHART_BARS)
    status = "interrupted: partial results" if run.interrupted else "complete"

    out: list[str] = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_csp()}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>servprobe report \u2014 {_e(timestr(run.start))}</title>",
        f"<style>{CSS}</style></head><body>",
        f'<h1>servprobe scan report</h1><p class="meta">{_e(command_line(run))}<br>'
        f"started {_e(timestr(run.start))}; {_e(summary_text(run))}; {status}</p>",
        '<h2>Summary</h2><div class="summary">',
        f'<div class="card" id="sum-hosts"><b>{len(hosts)}</b>hosts up</div>',
        f'<div class="card" id="sum-open"><b>{len(open_ports)}</b>open ports</div>',
        f'<div class="card" id="sum-identified"><b>{pct}</b>identified ({len(identified)} probed)</div>',
        f'<div class="card" id="sum-time"><b>{elapsed:.1f} s</b>scan time</div>',
        f'<div class="card" id="sum-db"><b>{_e(_db_name(run.db_path))}</b>'
        f'<span class="meta">{_e(run.db_path or "no version detection")}</span></div>',
        "</div>",
        '<h2>Charts</h2><div class="charts">',
        bar_chart("Services (open ports)", services),
        bar_chart("Products and versions", products),
        "</div>",
        '<h2>Hosts</h2><ul class="hosts">',
    ]
    for h, listed in listed_by_host:
        n_open = sum(1 for r in listed if r.state in OPEN_STATES)
        names = f" ({_e(', '.join(h.hostnames))})" if h.hostnames else ""
        flags = " \u2014 partial" if h.partial else (" \u2014 timed out" if h.timedout else "")
        out.append(f"<li>{_e(h.address)}{names}: {n_open} open{flags}</li>")
    out.append("</ul>")
    out.append(
        '<h2>Ports</h2><p><input id="filter" type="search" placeholder="filter: host, port, service, product, CPE\u2026" '
        f'aria-label="filter ports"> <span id="shown">{len(all_ports)}</span> of {len(all_ports)} ports shown</p>'
    )
    out.append(
        '<table id="ports"><thead><tr><th data-type="host">host</th><th data-type="num">port</th>'
        "<th>proto</th><th>state</th><th>service</th><th>version</th><th>CPE</th>"
        '<th data-type="num">conf</th><th>details</th></tr></thead><tbody>'
    )
    for h, listed in listed_by_host:
        name = h.hostnames[0] if h.hostnames else ""
        for i, r in enumerate(listed):
            cls = ' class="hostfirst"' if i == 0 else ""
            host_cell = _e(h.address) + (
                f'<br><span class="meta">{_e(name)}</span>' if name else ""
            )
            out.append(
                f'<tr{cls}><td data-key="{_host_key(h.address)}|{r.port:05d}">{host_cell}</td>'
                f"<td>{r.port}</td><td>{r.proto}</td>"
                f'<td class="st-{_e(r.state.split("|")[0])}">{_e(r.state)}</td>'
                f"<td>{_service_cell(r)}</td><td>{_e(r.display_version())}</td>"
                f"<td>{'<br>'.join(_e(c) for c in r.cpes)}</td><td>{r.conf}</td>"
                f"<td>{_details(r)}</td></tr>"
            )
    out.append("</tbody></table>")
    out.append(f"<script>{JS}</script></body></html>\n")
    return "\n".join(out)


def _db_name(path: str) -> str:
    if not path:
        return "none"
    return path.rsplit("/", 1)[-1]
