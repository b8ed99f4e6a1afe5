"""`servprobe match`: identify a response offline, as a scan would, or re-identify fingerprints.

    servprobe match --probe NULL --hex '5353482d322e30...'
    printf 'SSH-2.0-OpenSSH_9.2p1\\r\\n' | servprobe match --probe NULL
    servprobe match --fingerprint nmap-output.txt --json

Exit status: 0 when something matched, 1 when nothing did, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import Any

from servprobe.escape import terminal_safe

EPILOG = """\
examples:
  servprobe match --probe NULL --hex 5353482d322e302d4f70656e5353485f392e3270310d0a
  printf 'HTTP/1.1 200 OK\\r\\nServer: nginx/1.22.1\\r\\n\\r\\n' | servprobe match --probe GetRequest
  servprobe match --probe DNSVersionBindReq --proto udp --file answer.bin --json
  servprobe match --fingerprint scan.nmap        # SF-Port… blocks from nmap -sV output or XML
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"servprobe match: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="servprobe match",
        description="Identify a service response with the probe database, as a scan would.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--probe", metavar="NAME", help="the probe the response answered (e.g. NULL)")
    ap.add_argument(
        "--proto", choices=("tcp", "udp"), help="probe protocol (default: tcp, else udp)"
    )
    ap.add_argument(
        "--db", metavar="FILE", help='probe file, "nmap" or "bundled" (default: as a scan)'
    )
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--hex", metavar="HEX", help="the response as hex (spaces and colons allowed)")
    src.add_argument("--file", metavar="F", help="read the raw response from F (default: stdin)")
    src.add_argument(
        "--fingerprint", metavar="FILE", help="re-identify nmap service fingerprints in FILE"
    )
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument(
        "--no-prefilter", action="store_true", help="match without the hyperscan prefilter"
    )
    return ap


def _read_input(args: argparse.Namespace) -> bytes:
    if args.hex is not None:
        cleaned = "".join(args.hex.replace(":", " ").split())
        if cleaned.lower().startswith("0x"):
            cleaned = cleaned[2:]
        try:
            return bytes.fromhex(cleaned)
        except ValueError:
            raise UsageError(f"--hex: not hexadecimal: {args.hex[:60]!r}") from None
    if args.file is not None:
        try:
            with open(args.file, "rb") as fh:
                return fh.read(1 << 20)
        except OSError as exc:
            raise UsageError(f"--file: cannot read {args.file!r}: {exc.strerror}") from None
    if sys.stdin.isatty():
        raise UsageError("give the response with --hex, --file, or on standard input")
    return sys.stdin.buffer.read(1 << 20)


def _find_probe(db: Any, name: str, proto: str | None) -> Any:
    protos = [proto] if proto else ["tcp", "udp"]
    for pr in protos:
        try:
            return db.probe(name, pr)
        except KeyError:
            continue
    names = sorted({p.name for p in db.probes if not proto or p.proto == proto})
    lower = {n.lower(): n for n in names}
    close = [lower[c] for c in difflib.get_close_matches(name.lower(), list(lower), n=3)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    where = f"{proto.upper()} " if proto else ""
    raise UsageError(f"no {where}probe named {name!r} in {db.path}{hint}")


def version_column(ident: Any) -> str:
    """The VERSION column text nmap prints for an identification."""
    parts = [x for x in (ident.product, ident.version) if x]
    if ident.info:
        parts.append(f"({ident.info})")
    return " ".join(parts)


def describe(ident: Any) -> list[str]:
    kind = "soft match" if ident.soft else "hard match"
    lines = [f"{ident.service}  {version_column(ident)}".rstrip()]
    lines.append(f"  {kind}: {ident.source} (probe {ident.probe})")
    for label, value in (
        ("product", ident.product),
        ("version", ident.version),
        ("info", ident.info),
        ("hostname", ident.hostname),
        ("os", ident.ostype),
        ("device", ident.devicetype),
    ):
        if value:
            lines.append(f"  {label + ':':10}{value}")
    for cpe in ident.cpes:
        lines.append(f"  {'cpe:':10}{cpe}")
    return [terminal_safe(s) for s in lines]


def _load(args: argparse.Namespace) -> Any:
    from servprobe.probes.loader import load_db
    from servprobe.probes.parser import ProbeFileError

    try:
        return load_db(args.db, prefilter=False if args.no_prefilter else None)
    except ProbeFileError as exc:
        raise UsageError(f"cannot load the probe database:\n{exc}") from None


def match_one(args: argparse.Namespace) -> int:
    db = _load(args)
    probe = _find_probe(db, args.probe, args.proto)
    data = _read_input(args)
    ident = db.matcher.match(probe, data)
    if args.json:
        print(
            json.dumps(
                {
                    "db": db.path,
                    "probe": probe.name,
                    "proto": probe.proto,
                    "length": len(data),
                    "match": ident.as_dict() if ident else None,
                },
                indent=2,
            )
        )
    elif ident is None:
        print(f"no match ({len(data)} bytes, probe {probe.proto.upper()} {probe.name}, {db.path})")
    else:
        print("\n".join(describe(ident)))
    return 0 if ident else 1


def match_fingerprints(args: argparse.Namespace) -> int:
    from servprobe.probes.fpreader import FingerprintError, read_fingerprints

    try:
        with open(args.fingerprint, encoding="latin-1") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(
            f"--fingerprint: cannot read {args.fingerprint!r}: {exc.strerror}"
        ) from None
    try:
        fps = read_fingerprints(text)
    except FingerprintError as exc:
        raise UsageError(f"--fingerprint: {args.fingerprint}: {exc}") from None
    if not fps:
        raise UsageError(f"--fingerprint: no SF-Port… fingerprint found in {args.fingerprint!r}")
    db = _load(args)
    results = []
    any_match = False
    for fp in fps:
        best = None
        records = []
        for resp in fp.responses:
            try:
                probe = db.probe(resp.probe, fp.proto)  # type: ignore[arg-type]
            except KeyError:
                records.append(
                    {"probe": resp.probe, "length": resp.length, "error": "unknown probe"}
                )
                continue
            ident = db.matcher.match(probe, resp.data)
            records.append(
                {
                    "probe": resp.probe,
                    "length": resp.length,
                    "truncated": resp.truncated,
                    "match": ident.as_dict() if ident else None,
                }
            )
            if ident and (best is None or (best.soft and not ident.soft)):
                best = ident
        any_match = any_match or best is not None
        results.append((fp, best, records))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "port": fp.port,
                        "proto": fp.proto,
                        "line": fp.line,
                        "fields": fp.fields,
                        "result": best.as_dict() if best else None,
                        "responses": recs,
                    }
                    for fp, best, recs in results
                ],
                indent=2,
            )
        )
        return 0 if any_match else 1
    for fp, best, recs in results:
        head = f"{args.fingerprint}:{fp.line}: {fp.port}/{fp.proto}"
        if best is None:
            print(f"{head}  no match")
        else:
            print(f"{head}  " + "\n".join(describe(best)))
        for r in recs:
            m = r.get("match")
            what = r.get("error") or (
                f"{m['service']} ({'soft' if m['soft'] else 'hard'}, {m['line']})"
                if m
                else "no match"
            )
            trunc = " [truncated]" if r.get("truncated") else ""
            print(terminal_safe(f"    r({r['probe']}, {r['length']} bytes{trunc}): {what}"))
    return 0 if any_match else 1


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.fingerprint:
            if args.probe:
                raise UsageError("--probe and --fingerprint do not go together")
            return match_fingerprints(args)
        if not args.probe:
            raise UsageError("--probe NAME is required (or --fingerprint FILE)")
        return match_one(args)
    except UsageError as exc:
        ap.print_usage(sys.stderr)
        print(f"servprobe match: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
