"""fingerprint-strings: the readable strings of an unrecognized service's responses.

Asks nothing: it reads the result's SF- fingerprint (built by the walk when no line hard-
matched and some probe got data). For each probe's response it keeps the runs of at least
MIN_RUN printable ASCII characters (spaces and tabs count, collapsed to one space), one per
line; probes whose strings are identical are listed together ("GenericLines, NULL:"), labels
sorted, as nmap's script shows them under the port.
"""

from __future__ import annotations

import re

from servprobe.post.base import Finding, Machine, PostProcessor, Trigger, format_output
from servprobe.probes.fpreader import FingerprintError, parse_fingerprint
from servprobe.report.base import unwrap_fingerprint
from servprobe.result import ScriptResult, ServiceResult

MIN_RUN = 4
_SEGMENTS = re.compile(rb"[\x21-\x7e \t]+")
_BLANKS = re.compile(rb"[ \t]+")


def strings(data: bytes, n: int = MIN_RUN) -> str:
    """The printable runs of `data` of length ≥ n, as nmap's script lays them out: each on
    its own line indented by four spaces (the value starts with that line break)."""
    runs = []
    for m in _SEGMENTS.finditer(data):
        run = _BLANKS.sub(b" ", m.group())
        if len(run) >= n and run.strip():
            runs.append(run.decode("ascii"))
    return "".join("\n    " + r for r in runs).rstrip(" \n")


def readable(fingerprint: str) -> dict[str, str]:
    """{"ProbeA, ProbeB": strings} for a fingerprint; empty when nothing is readable."""
    try:
        fp = parse_fingerprint(unwrap_fingerprint(fingerprint))
    except FingerprintError:
        return {}
    by_text: dict[str, list[str]] = {}
    for resp in fp.responses:
        found = strings(resp.data)
        if found:
            probes = by_text.setdefault(found, [])
            if resp.probe not in probes:
                probes.append(resp.probe)
    labelled = {", ".join(sorted(probes)): found for found, probes in by_text.items()}
    return dict(sorted(labelled.items()))


class FpStrings(Machine):
    def finish(self) -> Finding | None:
        table = readable(self.result.fingerprint or "")
        if not table:
            return None
        return Finding(ScriptResult("fingerprint-strings", format_output(table), table))


def _has_fingerprint(r: ServiceResult) -> bool:
    return bool(r.fingerprint)


POST_TCP = PostProcessor("fingerprint-strings", Trigger(when=_has_fingerprint), FpStrings,
                         "readable strings of an unrecognized service's responses", offline=True)
POST_UDP = PostProcessor("fingerprint-strings", Trigger(proto="udp", when=_has_fingerprint), FpStrings,
                         "readable strings of an unrecognized service's responses", offline=True)
