"""`servprobe db check FILE`: parse and check a probe database, report counts and errors.

Every error is printed as FILE:LINE: message (all of them, not just the first); the exit
status is 1 when there is any, 0 otherwise, 2 for usage errors. Pattern verdicts are cached
per file content (sha256), so re-checking an unchanged file takes a fraction of a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EPILOG = """\
examples:
  servprobe db check /usr/share/nmap/nmap-service-probes
  servprobe db check bundled --json
  servprobe db check my-probes --examples tests/data/examples

FILE may be a path, "nmap" (nmap's installed file) or "bundled" (ours); default: the file
a scan would use (nmap's if installed, else the bundled one).
Exit status: 0 no error (warnings allowed), 1 errors in the file (or failing examples),
2 usage error. Warnings are mistakes nmap accepts silently (duplicate directives, a template
that can never be filled, …): listed, they do not stop servprobe from loading the file.
"""


LINT_EPILOG = """\
examples:
  servprobe db lint bundled --examples tests/data/examples
  servprobe db lint /usr/share/nmap/nmap-service-probes --json

Exit status: 0 nothing found, 1 findings, 2 usage error (or a file that does not load).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"servprobe db: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="servprobe db",
        description="Probe-database tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)
    chk = sub.add_parser(
        "check",
        help="parse and compile every line; print counts and every FILE:LINE error",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chk.add_argument("file", nargs="?", default=None, metavar="FILE")
    chk.add_argument("--json", action="store_true", help="print the report as JSON")
    chk.add_argument("--examples", metavar="DIR", help="also check example responses in DIR")
    chk.add_argument("--no-cache", action="store_true", help="ignore cached pattern verdicts")
    chk.add_argument(
        "--no-prefilter",
        action="store_true",
        help="do not build/check the hyperscan prefilter databases",
    )
    lnt = sub.add_parser(
        "lint",
        help="find shadowed lines, backtracking risks, products spelled two ways, bad CPEs",
        epilog=LINT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lnt.add_argument("file", nargs="?", default=None, metavar="FILE")
    lnt.add_argument("--examples", metavar="DIR", help="also list lines no example in DIR reaches")
    lnt.add_argument("--json", action="store_true", help="print the report as JSON")
    lnt.add_argument("--budget-ms", type=float, default=50.0, metavar="MS",
                     help="time one near-miss search may take (default 50)")
    sub.add_parser("path", help="print the probe file a scan would use")
    return ap


def counts(db: Any) -> dict[str, Any]:
    lines = [m for p in db.probes for m in p.matches]
    return {
        "probes": len(db.probes),
        "tcp_probes": sum(1 for p in db.probes if p.proto == "tcp"),
        "udp_probes": sum(1 for p in db.probes if p.proto == "udp"),
        "match": sum(1 for m in lines if not m.soft),
        "softmatch": sum(1 for m in lines if m.soft),
        "services": len({m.service for m in lines}),
        "lines_with_cpe": sum(1 for m in lines if m.template.cpes),
        "excluded_ports": len(db.exclude),
    }


def _examples(db: Any, directory: str) -> dict[str, Any]:
    """Run servprobe.probes.examples.check (the bundled-DB helper's checker) on DIR."""
    try:
        from servprobe.probes import examples
    except ImportError:
        return {"error": "example checking is not available (servprobe.probes.examples missing)"}
    try:
        result = examples.check(db, directory)
    except Exception as exc:  # ExampleError (bad example file) or an unreadable directory
        return {"error": f"cannot check examples in {directory}: {exc}"}
    if isinstance(result, tuple) and len(result) == 2:
        missing, failing = result
        unknown: list[Any] = []
        ok = not failing
    else:
        missing = getattr(result, "missing", [])
        failing = getattr(result, "failures", getattr(result, "failing", []))
        unknown = getattr(result, "unknown_ids", [])
        ok = bool(getattr(result, "ok", not (failing or unknown)))
    return {
        "examples": getattr(result, "examples", None),
        "lines_without_examples": [str(x) for x in missing],
        "failing": [str(x) for x in failing] + [f"unknown id {u}" for u in unknown],
        "ok": ok,
    }


def check(args: argparse.Namespace) -> int:
    from servprobe.probes.loader import make_prefilter, parse_checked, resolve_path
    from servprobe.probes.matcher import Matcher
    from servprobe.probes.parser import ProbeFileError, read_file

    t0 = time.perf_counter()
    try:
        path = resolve_path(args.file)
        data = read_file(path)
    except ProbeFileError as exc:
        print(f"servprobe db: {exc}", file=sys.stderr)
        return 2
    if not args.no_cache and not args.json:
        from servprobe.probes.loader import has_cached_verdict

        if not has_cached_verdict(data):
            print(
                f"servprobe db: checking every pattern of {path} "
                "(first time for this file; cached afterwards)…",
                file=sys.stderr,
                flush=True,
            )
    db, errors, cached = parse_checked(data, str(path), use_cache=not args.no_cache)
    report: dict[str, Any] = {"file": str(path), "sha256": db.sha256, **counts(db)}
    report["patterns_checked"] = "cache" if cached else "compiled"
    prefilter_info: dict[str, Any] | None = None
    if not args.no_prefilter:
        try:
            pf = make_prefilter(db, None)
        except Exception as exc:  # hyperscan present but unusable on this CPU
            pf = None
            prefilter_info = {"error": str(exc)}
        if pf is not None:
            missing = sum(1 for p in db.probes if not pf.cached(p))
            if missing and not args.json:
                print(
                    f"servprobe db: compiling hyperscan prefilters for {missing} probes "
                    "(first time for this file; cached afterwards)…",
                    file=sys.stderr,
                    flush=True,
                )
            pf.build_all()
            always = sum(len(pf.filter_for(p, wait=True).always) for p in db.probes)
            prefilter_info = {
                "engine": "hyperscan",
                "always_candidate_lines": always,
                "built_seconds": round(pf.compile_seconds, 3),
            }
    else:
        pf = None
    db.matcher = Matcher(db, prefilter=pf)
    report["prefilter"] = prefilter_info
    report["errors"] = [
        {"file": e.file, "line": e.line, "message": e.message, "kind": e.kind} for e in errors
    ]
    real = [e for e in errors if not e.is_warning]
    report["warning_count"] = len(errors) - len(real)
    status = 1 if real else 0
    if args.examples:
        ex = _examples(db, args.examples)
        report["examples"] = ex
        if "error" in ex or not ex["ok"]:
            status = 1
    report["seconds"] = round(time.perf_counter() - t0, 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return status
    for e in errors:
        print(e)
    print(f"{report['file']}  sha256 {db.sha256[:16]}…")
    print(
        f"  probes     {report['probes']} ({report['tcp_probes']} TCP, {report['udp_probes']} UDP)"
    )
    print(f"  match      {report['match']}")
    print(f"  softmatch  {report['softmatch']}")
    print(f"  services   {report['services']}")
    print(f"  with cpe   {report['lines_with_cpe']}")
    print(f"  excluded   {report['excluded_ports']} ports")
    if prefilter_info and "engine" in prefilter_info:
        print(
            f"  prefilter  hyperscan, {prefilter_info['always_candidate_lines']} lines it cannot filter"
        )
    elif prefilter_info:
        print(f"  prefilter  unavailable: {prefilter_info['error']}")
    if "examples" in report:
        ex = report["examples"]
        if "error" in ex:
            print(f"  examples   {ex['error']}")
        else:
            for line in ex["lines_without_examples"]:
                print(f"no example: {line}")
            for line in ex["failing"]:
                print(f"failing example: {line}")
            print(
                f"  examples   {ex['examples']} checked, {len(ex['failing'])} failing, "
                f"{len(ex['lines_without_examples'])} lines without an example"
            )
    print(f"  warnings   {len(errors) - len(real)}  (mistakes nmap accepts; the file still loads)")
    print(f"  errors     {len(real)}" + ("" if not cached else "  (pattern checks from cache)"))
    return status


def lint_cmd(args: argparse.Namespace) -> int:
    from servprobe.probes.examples import ExampleError
    from servprobe.probes.lint import lint
    from servprobe.probes.loader import load_db, resolve_path
    from servprobe.probes.parser import ProbeFileError

    if args.budget_ms <= 0:
        print(f"servprobe db: error: --budget-ms must be positive, not {args.budget_ms:g}",
              file=sys.stderr)
        return 2
    try:
        db = load_db(str(resolve_path(args.file)), prefilter=False)
    except (ProbeFileError, OSError) as exc:
        print(f"servprobe db: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        report = lint(db, args.examples, budget=args.budget_ms / 1000)
    except (ExampleError, OSError) as exc:
        print(f"servprobe db: cannot check examples in {args.examples}: {exc}", file=sys.stderr)
        return 2
    seconds = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps({**report.as_dict(), "seconds": seconds}, indent=2))
        return 0 if report.ok else 1
    for finding in report.findings:
        print(finding)
    counts = report.counts()
    print(f"{report.db_path}: {report.lines} lines, {report.checked_shadow} checked for "
          f"shadowing, {report.risky_shapes} risky repeats tried on near-miss inputs ({seconds} s)")
    print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "check":
        return check(args)
    if args.cmd == "lint":
        return lint_cmd(args)
    if args.cmd == "path":
        from servprobe.probes.loader import resolve_path

        print(resolve_path(None))
        return 0
    ap.print_usage(sys.stderr)
    print("servprobe db: error: a command is required (check, lint, path)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
