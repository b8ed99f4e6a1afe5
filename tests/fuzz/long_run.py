"""The long fuzz run: every target in turn, one process at a time, figures as JSON.

    nice -n 10 .venv/bin/python tests/fuzz/long_run.py OUT_DIR [--scale 1.0] [--only a,b]

Runs each target for its share of inputs (about 1.05 million in all at scale 1), with a
time cap per target, from a seed corpus built at run time. Writes OUT_DIR/summary.json
(inputs, seconds, crashes per target) and keeps crash-* files in OUT_DIR/<target>/.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import seeds  # noqa: E402

PLAN = {  # target: (inputs, seconds cap)
    "probe_parser": (200_000, 900),
    "templates": (250_000, 600),
    "match": (200_000, 900),
    "match_regex": (5_000, 900),
    "engine": (200_000, 1800),
    "portspec": (150_000, 600),
    "targets": (150_000, 600),
    "fpreader": (100_000, 600),
}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--only", default="")
    opts = ap.parse_args()
    out, scale = opts.out, opts.scale
    only = set(filter(None, opts.only.split(",")))
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, object]] = {}
    for target, (runs, cap) in PLAN.items():
        if only and target not in only:
            continue
        runs = max(1, int(runs * scale))
        work = out / target
        corpus = work / "corpus"
        seeds.write(target, corpus)
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(HERE / "run.py"), target, f"-atheris_runs={runs}",
             f"-max_total_time={cap}", "-max_len=4096", f"-artifact_prefix={work}/",
             str(corpus)],
            capture_output=True, text=True, cwd=work,
        )
        took = time.monotonic() - t0
        (work / "log.txt").write_text(proc.stderr[-200_000:])
        done = re.search(r"Done (\d+) in (\d+) second", proc.stderr)
        execs = [int(x) for x in re.findall(r"^#(\d+)\s", proc.stderr, re.M)]
        summary[target] = {
            "inputs": int(done.group(1)) if done else (max(execs) if execs else 0),
            "seconds": round(took, 1),
            "exit": proc.returncode,
            "crashes": sorted(p.name for p in work.glob("crash-*")),
            "timeouts": sorted(p.name for p in work.glob("timeout-*")),
        }
        print(target, summary[target], flush=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    total = sum(int(v["inputs"]) for v in summary.values())  # type: ignore[call-overload]
    print(f"total inputs: {total}", flush=True)


if __name__ == "__main__":
    main()
