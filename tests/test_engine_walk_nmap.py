"""The walk with the direct provider sends exactly nmap 7.93's probe sequence.

tests/data/nmap-sequences.json holds, for the scripted servers of tests/scripted_servers.py,
the probes `nmap -sV --version-trace` sent (in order) and what it reported, recorded by
tests/record_nmap_sequences.py against real loopback servers. Here the same behaviours run
as models in the engine's virtual-time simulator, against nmap's own probe file, on the
same port numbers (the order depends on the port): the direct provider (`--sequential`)
must send the same probes in the same order; the speculative provider must reach the same
answer (it sends probes earlier and on more connections, so only its answer is compared).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scripted_servers import SimServer
from servprobe import load_db
from servprobe.engine.options import EngineOptions, ServiceTarget
from servprobe.engine.plan import Planner
from servprobe.engine.sim import simulate
from servprobe.engine.state import ServiceMachine

NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")
RECORD = json.loads((Path(__file__).parent / "data" / "nmap-sequences.json").read_text())
CASES = sorted(RECORD["sequences"].items())


@pytest.fixture(scope="module")
def db():
    return load_db(str(NMAP_DB))


def sent_probes(notes: list[str]) -> list[str]:
    out = []
    for line in notes:
        _, _, text = line.strip().partition(" ")
        if text.startswith("sending probe "):
            out.append(text.split()[2])
    return out


def run(db, behaviour: str, port: int, intensity: int, sequential: bool):
    opts = EngineOptions(intensity=intensity, sequential=sequential, version_trace=True)
    m = ServiceMachine(ServiceTarget("127.0.0.1", port, "tcp"), db, Planner(db), opts)
    return simulate(m, SimServer(behaviour), rtt=0.0001)


def nmap_line(r) -> str:
    """Our result as nmap's SERVICE VERSION columns (a port-table guess has no table here)."""
    svc = r.display_service() if r.service else "unknown"
    return f"{svc} {r.display_version()}".strip()


@pytest.mark.parametrize(("behaviour", "rec"), CASES, ids=[c[0] for c in CASES])
def test_direct_provider_sends_nmaps_sequence(db, behaviour, rec):
    got = run(db, behaviour, rec["port"], rec["intensity"], sequential=True)
    assert sent_probes(got.notes) == rec["probes"]
    assert nmap_line(got.result) == rec["nmap_line"]


@pytest.mark.parametrize(("behaviour", "rec"), CASES, ids=[c[0] for c in CASES])
def test_speculative_provider_reaches_the_same_answer(db, behaviour, rec):
    seq = run(db, behaviour, rec["port"], rec["intensity"], sequential=True)
    spec = run(db, behaviour, rec["port"], rec["intensity"], sequential=False)
    assert nmap_line(spec.result) == nmap_line(seq.result) == rec["nmap_line"]
    assert spec.result.fingerprint == seq.result.fingerprint
    assert spec.elapsed <= seq.elapsed + 0.01


@pytest.mark.parametrize("intensity", sorted(RECORD["fingerprints"]))
def test_fingerprint_probes_at_low_intensity_are_nmaps(db, intensity):
    """nmap prints an SF- fingerprint at every intensity (bug 2 of issue 11)."""
    rec = RECORD["fingerprints"][intensity]
    got = run(db, "chatty", rec["port"], int(intensity), sequential=True)
    assert sent_probes(got.notes) == rec["probes_sent"]
    assert rec["fingerprint"] and got.result.fingerprint is not None
    flat = got.result.fingerprint.replace("\nSF:", "")
    assert [p.split(",")[0] for p in flat.split("%r(")[1:]] == rec["fingerprint_probes"]
    assert f"%I={intensity}%" in flat
