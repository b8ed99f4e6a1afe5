"""`python -m servprobe` is the `servprobe` command."""

from servprobe.cli import main

raise SystemExit(main())
