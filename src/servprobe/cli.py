"""The `servprobe` command: dispatches to its subcommands; a scan when none is named.

Each subcommand lives in `servprobe.commands.<name>` and exposes `main(argv) -> int`.
Usage errors exit 2, interrupted runs 130; no Python traceback reaches the user.
A first word that is not a subcommand is a scan target — unless it looks like a mistyped
subcommand (`servprobe dbx`) and is no host name either: then the user gets the suggestion
instead of a silent "Failed to resolve" scan.
"""

from __future__ import annotations

import difflib
import importlib
import socket
import sys

SUBCOMMANDS = {
    "db": "servprobe.commands.db",
    "match": "servprobe.commands.match",
    "diff": "servprobe.commands.diff",
    "convert": "servprobe.commands.convert",
}

# shown at the end of `servprobe --help` (the scan command's help)
SUBCOMMAND_HELP = """\
subcommands (servprobe SUBCOMMAND --help for each):
  db       check, compile and inspect probe databases (servprobe db check FILE)
  match    identify a captured response or re-identify nmap SF- fingerprints
  diff     what changed between two scans (stores or -oX files); exit 1 on a change
  convert  render an earlier scan (-oX file, ours or nmap's, or a store) as -oJ/-oC/-oH
"""


def suggestion(word: str) -> str | None:
    """The subcommand `word` looks like a typo of, if any."""
    if not word or word.startswith("-") or any(c in word for c in ".:/,*[]") or word.isdigit():
        return None
    close = difflib.get_close_matches(word.lower(), list(SUBCOMMANDS), n=1, cutoff=0.6)
    return close[0] if close else None


def _resolves(name: str) -> bool:
    try:
        return bool(socket.getaddrinfo(name, None, type=socket.SOCK_STREAM))
    except (OSError, UnicodeError):
        return False


def mistyped_subcommand(target: str) -> str | None:
    """For the scan command's first target: an error message when it is a near-miss of a
    subcommand and no host name (a name that resolves is scanned, with a note)."""
    near = suggestion(target)
    if near is None:
        return None
    if not _resolves(target):
        return (f"{target!r} is neither a subcommand nor a host name that resolves; "
                f"did you mean `servprobe {near}`? (servprobe --help lists them)")
    print(f"servprobe: note: scanning host {target!r}; `servprobe {near}` is the subcommand",
          file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    module = SUBCOMMANDS.get(args[0]) if args else None
    if module:
        args = args[1:]
    else:
        module = "servprobe.commands.scan"  # checks its first target with mistyped_subcommand
    try:
        return importlib.import_module(module).main(args)
    except KeyboardInterrupt:
        print("servprobe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
