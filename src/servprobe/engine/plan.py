"""Probe planning: which probes a service gets, in which order (nmap's selection rules).

Owns the static part of the probe order: NULL first (TCP only), then every probe whose
`ports` (inside a TLS tunnel: `sslports`) lists the port, in file order, whatever its
rarity, then the other probes whose rarity is at most the intensity, in file order.
A probe without a `rarity` line counts as rarity 5 (nmap's ServiceProbe default).

The softmatch filter is dynamic and lives in the state machine (`engine.state`); this module
only answers "may this probe still run after a softmatch of service S?".
Plans are shared, immutable tuples cached per (proto, port, tunnel, intensity), so ten
thousand services on the same few ports cost one plan each, not one per service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servprobe.probes.model import Probe, ProbeDB

DEFAULT_RARITY = 5  # nmap: "the default rarity level for a probe without a rarity directive"


def rarity_of(probe: Probe) -> int:
    return DEFAULT_RARITY if probe.rarity is None else probe.rarity


class Planner:
    """Computes and caches probe orders for one ProbeDB."""

    def __init__(self, db: ProbeDB) -> None:
        self.db = db
        self._null = next((p for p in db.probes if p.is_null), None)
        self._cache: dict[tuple[str, int, bool, int], tuple[Probe, ...]] = {}
        self._services: dict[int, frozenset[str]] = {}

    @property
    def null_probe(self) -> Probe | None:
        return self._null

    def excluded(self, proto: str, port: int) -> bool:
        return (proto, port) in self.db.exclude

    def order(self, proto: str, port: int, tls: bool, intensity: int) -> tuple[Probe, ...]:
        """The probe order before any softmatch: NULL, port-listed, then rarity-selected."""
        key = (proto, port, tls, intensity)
        plan = self._cache.get(key)
        if plan is None:
            plan = self._build(proto, port, tls, intensity)
            self._cache[key] = plan
        return plan

    def listed_end(self, proto: str, port: int, tls: bool, intensity: int) -> int:
        """Index in order() just past the port-listed probes (where rarity selection starts)."""
        order = self.order(proto, port, tls, intensity)
        k = 1 if order and order[0].is_null else 0
        while k < len(order) and port in (order[k].sslports if tls else order[k].ports):
            k += 1
        return k

    def _build(self, proto: str, port: int, tls: bool, intensity: int) -> tuple[Probe, ...]:
        out: list[Probe] = []
        if proto == "tcp" and self._null is not None:
            out.append(self._null)
        others = [p for p in self.db.probes if p.proto == proto and not p.is_null]
        listed = [p for p in others if port in (p.sslports if tls else p.ports)]
        out.extend(listed)
        listed_ids = {id(p) for p in listed}
        out.extend(
            p for p in others if id(p) not in listed_ids and rarity_of(p) <= intensity
        )
        return tuple(out)


    def allowed(self, probe: Probe, soft_service: str | None, intensity: int) -> bool:
        """After a softmatch only probes with a line for that service run (not at intensity 9).

        nmap's source only filters the rarity-selected probes; the documented rule (and the
        project's facts) filter port-listed ones too, which is what we do.
        """
        if soft_service is None or intensity >= 9 or probe.is_null:
            return True
        services = self._services.get(id(probe))
        if services is None:
            services = self._services[id(probe)] = probe.services
        return soft_service in services
