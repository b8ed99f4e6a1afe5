"""Response corpora on disk: `<label>/<layer>-<probe>.bin` files (layer tcp, udp or ssl).

The layout of tests/data/responses (hand-written) and tests/data/captures (real daemons);
used by the matcher's equivalence tests and bench/bench_match.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Response:
    path: Path
    label: str
    layer: str  # tcp | udp | ssl
    probe: str
    data: bytes

    @property
    def proto(self) -> str:
        return "udp" if self.layer == "udp" else "tcp"


def read_corpus(dirs: Iterable[str | Path]) -> Iterator[Response]:
    """Every response file under the given directories (missing directories are skipped)."""
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            continue
        for f in sorted(root.glob("*/*.bin")):
            layer, sep, probe = f.stem.partition("-")
            if not sep or layer not in ("tcp", "udp", "ssl"):
                continue
            yield Response(f, f.parent.name, layer, probe, f.read_bytes())
