"""The port table: port/proto → registered service name (and frequency, for --top-ports).

Placeholder until the scanner issue lands: reads the system's /etc/services.
"""

from __future__ import annotations

from functools import cache


@cache
def _etc_services() -> dict[tuple[str, int], str]:
    table: dict[tuple[str, int], str] = {}
    try:
        with open("/etc/services", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and "/" in fields[1]:
                    port, _, proto = fields[1].partition("/")
                    if port.isdigit():
                        table.setdefault((proto, int(port)), fields[0])
    except OSError:
        pass
    return table


def service_name(port: int, proto: str) -> str | None:
    """The registered name of a port, e.g. (953, "tcp") → "rndc"; None when unknown."""
    return _etc_services().get((proto, port))
