"""Run every benchmark: each bench/bench_*.py module's main(), in name order.

`python -m bench` (what `make bench` does). A benchmark that fails is reported and the others
still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    root = here.parent
    for p in (str(root / "src"), str(root)):
        if p not in sys.path:
            sys.path.insert(0, p)
    failed = []
    for path in sorted(here.glob("bench_*.py")):
        print(f"=== {path.stem} ===", flush=True)
        spec = importlib.util.spec_from_file_location(f"bench.{path.stem}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        saved = sys.argv
        sys.argv = [str(path)]  # benchmarks read their own optional arguments
        try:
            spec.loader.exec_module(module)
            entry = getattr(module, "main", None)
            if entry is None:
                print(f"(no main() in {path.name})")
                continue
            entry()
        except KeyboardInterrupt:
            raise
        except BaseException:  # a broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(path.stem)
        finally:
            sys.argv = saved
        print(flush=True)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
