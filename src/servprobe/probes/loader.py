"""Finding and loading a probe database: nmap's installed file, ours (bundled), or a path.

`load_db(None)` prefers nmap's installed nmap-service-probes (the reference users compare us
with) and falls back to the bundled file. `ProbeDB.path` always names the file used.

Checking every pattern ("cannot match empty", templates fit the groups) costs ≈ 1.5 s on
nmap's 12,000 lines (≈ 7 s when `db check` also compiles each with `regex`), so verdicts are
cached in the user cache dir keyed by the file's sha256, the `regex` version and our format
version: the next load of an unchanged file only parses (~0.2 s).
Patterns themselves compile lazily, on first use (see probes.matcher).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import regex

from servprobe.probes.cache import cache_dir
from servprobe.probes.matcher import Matcher
from servprobe.probes.model import ProbeDB
from servprobe.probes.parser import ParseError, ProbeFileError, parse_bytes, read_file

FORMAT_VERSION = 4  # bump when the checks change: cached verdicts are then recomputed
BUNDLED = Path(__file__).resolve().parent.parent / "data" / "servprobe-service-probes"
NMAP_FILE = "nmap-service-probes"


def nmap_dirs() -> list[Path]:
    """Where nmap keeps its data files, in nmap's own search order."""
    dirs: list[Path] = []
    if os.environ.get("NMAPDIR"):
        dirs.append(Path(os.environ["NMAPDIR"]))
    dirs.append(Path.home() / ".nmap")
    dirs += [
        Path("/usr/share/nmap"),
        Path("/usr/local/share/nmap"),
        Path("/opt/homebrew/share/nmap"),
    ]
    return dirs


def find_nmap_db() -> Path | None:
    for d in nmap_dirs():
        candidate = d / NMAP_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The file `load_db(path)` would read; ProbeFileError when there is none."""
    if path is None:
        return find_nmap_db() or BUNDLED
    if str(path) == "bundled":
        return BUNDLED
    if str(path) == "nmap":
        found = find_nmap_db()
        if found is None:
            where = ", ".join(str(d) for d in nmap_dirs())
            raise ProbeFileError(
                [ParseError("nmap", 0, f"nmap-service-probes not found in {where}")]
            )
        return found
    return Path(path)


def _check_key(sha256: str, full: bool) -> str:
    mode = "full" if full else "fast"
    return f"check-{sha256}-regex{regex.__version__}-f{FORMAT_VERSION}-{mode}.json"


def _cached_pattern_errors(sha256: str, full: bool) -> list[tuple[int, str, str]] | None:
    d = cache_dir()
    if d is None:
        return None
    # a full verdict also answers a fast check
    for key in [_check_key(sha256, True)] + ([] if full else [_check_key(sha256, False)]):
        try:
            data = json.loads((d / key).read_text())
            return [(int(line), str(msg), str(kind)) for line, msg, kind in data["pattern_errors"]]
        except Exception:
            continue
    return None


def _store_pattern_errors(sha256: str, full: bool, errors: list[tuple[int, str, str]]) -> None:
    d = cache_dir()
    if d is None:
        return
    key = _check_key(sha256, full)
    tmp = d / f".{key}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps({"pattern_errors": errors}))
        os.replace(tmp, d / key)


def has_cached_verdict(data: bytes, full: bool = True) -> bool:
    """Whether parse_checked(data) would be answered from the cache."""
    import hashlib

    return _cached_pattern_errors(hashlib.sha256(data).hexdigest(), full) is not None


def parse_checked(
    data: bytes, path: str, *, use_cache: bool = True, full: bool = True
) -> tuple[ProbeDB, list[ParseError], bool]:
    """Parse + check every pattern, via the cache when possible.

    Returns (db, errors, from_cache). The cache holds only the pattern verdicts; the file is
    always parsed again, so structural errors are always current. full: compile every
    pattern with `regex` (`db check`); otherwise the faster check load_db() uses.
    """
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    cached = _cached_pattern_errors(sha, full) if use_cache else None
    if cached is not None:
        db, errors = parse_bytes(data, path, validate=False)
        bad_lines = {line for line, _, kind in cached if kind == "pattern"}
        errors += [ParseError(path, line, msg, kind) for line, msg, kind in cached]
        errors.sort(key=lambda e: e.line)
        for p in db.probes:  # lines whose pattern is bad are dropped, as a full parse does
            if any(m.source.line in bad_lines for m in p.matches):
                p.matches = [m for m in p.matches if m.source.line not in bad_lines]
                for i, m in enumerate(p.matches):
                    m.index = i
        return db, errors, True
    db, errors = parse_bytes(data, path, validate=True, full=full)
    if use_cache:
        # what validation found: pattern errors, and the template warnings it raises
        found = [(e.line, e.message, e.kind) for e in errors if e.kind == "pattern"]
        found += [
            (e.line, e.message, e.kind)
            for e in errors
            if e.kind == "warning" and e.message.endswith("(the field will always be empty)")
        ]
        _store_pattern_errors(sha, full, sorted(found))
    return db, errors, False


def make_prefilter(db: ProbeDB, prefilter: bool | None) -> Any:
    """A hyperscan prefilter for db, or None (prefilter False, or hyperscan unavailable)."""
    if prefilter is False:
        return None
    try:
        from servprobe.probes.prefilter import HyperscanPrefilter, available
    except ImportError:
        return None
    if not available():
        if prefilter:
            raise RuntimeError("prefilter requested but hyperscan is not importable")
        return None
    # auto mode builds uncached probes in the background; an explicit request waits for them
    return HyperscanPrefilter(db, background=prefilter is None)


def load_db(
    path: str | os.PathLike[str] | None = None,
    *,
    prefilter: bool | None = None,
    strict: bool = True,
    use_cache: bool = True,
) -> ProbeDB:
    """Load a probe database: a PATH, "bundled", "nmap", or None (nmap's if installed, else ours).

    strict: raise ProbeFileError (every FILE:LINE error) when the file has errors; otherwise
    keep what parsed. Warnings (mistakes nmap accepts) never stop a load; see `db.errors`. prefilter: None = use hyperscan when importable, True = require, False = off.
    """
    file = resolve_path(path)
    data = read_file(file)
    db, errors, _ = parse_checked(data, str(file), use_cache=use_cache, full=False)
    if strict and any(not e.is_warning for e in errors):
        raise ProbeFileError(errors)
    db.errors = errors
    db.matcher = Matcher(db, prefilter=make_prefilter(db, prefilter))
    return db
