"""Post-processors: what nmap -sV's `version` scripts do, natively, after the walk.

After the engine has decided a service (hard match, softmatch or nothing), every
post-processor whose trigger fits runs a short exchange of its own and may refine the result
(product, version, extrainfo, hostname, OS, device type, CPEs) and add a ScriptResult, shown
as nmap shows script output. One module per post-processor (a sans-IO machine, see
post/base.py); post/runner.py runs them. The driver calls `refine()` once per service.

`--version-scripts all|none|ID[,ID...]` (EngineOptions.version_scripts) picks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servprobe.post import (
    amqp,
    docker,
    fpstrings,
    git,
    http,
    ike,
    kerberos,
    ldap,
    memcached,
    mqtt,
    redis,
    rfc868,
    rpc,
    smb,
    snmp,
    stun,
    xmpp,
)
from servprobe.post.base import PostProcessor
from servprobe.post.runner import run_post

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.options import EngineOptions
    from servprobe.engine.state import ConnBudget
    from servprobe.result import ServiceResult

# Registry order is the order findings are applied in (later ones win a field).
REGISTRY: tuple[PostProcessor, ...] = (
    rpc.POST_TCP,  # first: the RPC program renames the service (nmap's rpc-grind)
    rpc.POST_UDP,
    amqp.POST,
    mqtt.POST,
    snmp.POST,
    snmp.POST_SYSDESCR,
    http.POST,
    docker.POST,
    redis.POST,
    memcached.POST,
    memcached.POST_UDP,
    ldap.POST,
    git.POST,
    xmpp.POST,
    xmpp.POST_NAME,
    kerberos.POST_UDP,
    kerberos.POST_TCP,
    rfc868.POST_TCP,
    rfc868.POST_UDP,
    stun.POST_UDP,
    stun.POST_TCP,
    ike.POST,
    smb.POST,
    smb.POST_SMB1,  # after SMB2: a version SMB1 states replaces the dropped guess
    fpstrings.POST_TCP,
    fpstrings.POST_UDP,
)
IDS = tuple(dict.fromkeys(p.id for p in REGISTRY))  # one id may serve TCP and UDP


class SelectionError(ValueError):
    """A --version-scripts value naming no post-processor."""


def select(spec: str | None) -> tuple[str, ...]:
    """The ids chosen by `all`, `none` or a comma-separated list; raises SelectionError."""
    text = (spec or "all").strip()
    if text == "all":
        return IDS
    if text == "none":
        return ()
    chosen = []
    for item in text.split(","):
        name = item.strip()
        if name not in IDS:
            raise SelectionError(f"unknown version script {name!r} (known: all, none, {', '.join(IDS)})")
        chosen.append(name)
    return tuple(chosen)


def applicable(result: ServiceResult, ids: tuple[str, ...] = IDS) -> list[PostProcessor]:
    return [p for p in REGISTRY if p.id in ids and p.trigger.fits(result)]


async def refine(
    result: ServiceResult,
    options: EngineOptions,
    budget: ConnBudget | None = None,
    deadline: float | None = None,
    trace: Callable[[str], None] | None = None,
) -> ServiceResult:
    """Run the post-processors that apply to `result`; return it refined."""
    try:
        ids = select(getattr(options, "version_scripts", "all"))
    except SelectionError:
        ids = IDS  # the CLI validates; a library caller's typo must not lose the scan
    chosen = applicable(result, ids)
    if not chosen:
        return result
    return await run_post(result, chosen, budget, deadline, trace)


__all__ = ["IDS", "REGISTRY", "SelectionError", "applicable", "refine", "select"]
