"""rpc-grind: name the SunRPC program behind a port version detection found to speak RPC.

Asks: the host's portmapper for its DUMP (TCP then UDP 111, unless
EngineOptions.rpc_portmapper is off), then NULL calls on the port itself — a check of the
programs the portmapper lists there, or the whole RPC table (rpc/grind.py's rules).
Reads: which program answers and its version range (PROG_MISMATCH). Shown as nmap's
rpc-grind shows it: service = program name, version "low-high", extrainfo "RPC #n".

Runs like every post-processor (inside the host timeout, on a connection slot of the host's
budget, selected by --version-scripts), with nmap's rule for when: only at
--version-intensity 7 or more (rpc-grind's portrule), and not with EngineOptions.rpc_grind
off. Its flow (rpc.grinder.identify_flow) runs on the runner's transport, so it is the same
exchange on real sockets and in the simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from servprobe.post.base import Driven, Finding, PostProcessor, Trigger
from servprobe.rpc.grind import Outcome
from servprobe.rpc.grinder import (
    CHECK_TIMEOUT,
    GRIND_TIMEOUT,
    PMAP_TIMEOUT,
    PROMISCUOUS_NOTE,
    identify_flow,
    rpc_fields,
    wants_grind,
)
from servprobe.rpc.transport import FlowOp

if TYPE_CHECKING:
    from collections.abc import Callable

    from servprobe.engine.options import EngineOptions
    from servprobe.post.base import PostEnv
    from servprobe.result import RpcInfo, ServiceResult
    from servprobe.rpc.grind import GrindResult

MIN_INTENSITY = 7  # nmap's rpc-grind: `return nmap.version_intensity() >= 7`
# the flow's own worst case: 4 portmapper calls, the check of listed programs, a whole grind
DEADLINE = 4 * PMAP_TIMEOUT + CHECK_TIMEOUT + GRIND_TIMEOUT


def enabled(options: EngineOptions | None) -> bool:
    if options is None:
        return True
    return (
        bool(getattr(options, "rpc_grind", True))
        and getattr(options, "intensity", 7) >= MIN_INTENSITY
    )


class RpcMachine(Driven):
    """identify_flow on the runner's transport; finish() turns its answer into a Finding."""

    def __init__(self, result: ServiceResult) -> None:
        super().__init__(result)
        self.op: FlowOp | None = None
        self.answer: tuple[RpcInfo | None, GrindResult | None] | None = None
        self.wall = 0.0

    def begin(
        self, env: PostEnv, log: Callable[[str], None], done: Callable[[BaseException | None], None]
    ) -> None:
        r = self.result
        self.op = FlowOp(identify_flow(r.address, r.port, r.proto, env.options))

        def answered(value: object, error: BaseException | None) -> None:
            self.op = None
            self.done = True
            self.wall = env.transport.wall()
            if error is None:
                self.answer = value  # type: ignore[assignment]
                info, grind = self.answer or (None, None)
                if info is not None:
                    log(f"program {info.program} ({info.name}) via {info.via}")
                elif grind is not None:
                    log(f"no program named: {grind.outcome.value} {grind.detail}".rstrip())
            done(error)

        log(f"{r.proto.upper()} RPC grind requested")
        self.op.start(env.transport, answered)

    def stop(self) -> None:
        if self.op is not None:
            self.op.cancel()
            self.op = None

    def finish(self) -> Finding | None:
        if self.answer is None:
            return None
        info, grind = self.answer
        if info is not None:
            return Finding(overrides=rpc_fields(info, self.wall))
        if grind is not None and grind.outcome is Outcome.PROMISCUOUS and not self.result.extrainfo:
            return Finding(overrides={"extrainfo": PROMISCUOUS_NOTE})
        return None


def _post(proto: str) -> PostProcessor:
    return PostProcessor(
        "rpc-grind",
        Trigger(proto=proto, when=wants_grind),  # type: ignore[arg-type]
        RpcMachine,
        "SunRPC program and versions behind an RPC port (portmapper, then NULL-call grinding)",
        deadline=DEADLINE,
        enabled=enabled,
    )


POST_TCP = _post("tcp")
POST_UDP = _post("udp")
