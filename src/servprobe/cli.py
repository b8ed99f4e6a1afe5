"""The `servprobe` command: dispatches to its subcommands; a scan when none is named.

Each subcommand lives in `servprobe.commands.<name>` and exposes `main(argv) -> int`.
Usage errors exit 2, interrupted runs 130; no Python traceback reaches the user.
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {
    "db": "servprobe.commands.db",
    "match": "servprobe.commands.match",
    "diff": "servprobe.commands.diff",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    module = SUBCOMMANDS.get(args[0]) if args else None
    if module:
        args = args[1:]
    else:
        module = "servprobe.commands.scan"
    try:
        return importlib.import_module(module).main(args)
    except KeyboardInterrupt:
        print("servprobe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
