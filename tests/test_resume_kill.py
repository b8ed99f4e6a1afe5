"""kill -9 at a random moment, then --resume: the final store equals an uninterrupted scan.

Real daemons (tests/daemons.py: redis, memcached, nginx http+https, sshd) plus silent Python
listeners that keep the scan busy for several seconds, through the real CLI. The kill
moment is random (the seed is printed, set SERVPROBE_KILL_SEED to replay one).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile import HostileServers, run_bounded
from servprobe.store import Store, StoreError

pytestmark = [pytest.mark.daemon, pytest.mark.slow]

# what must agree between the two scans (fingerprints carry a timestamp, so they differ)
COMPARED = ("state", "service", "product", "version", "extrainfo", "hostname", "ostype",
            "devicetype", "cpes", "tunnel", "method", "conf", "soft")


def _argv(ports: list[int], store: Path, tmp: Path, tag: str) -> list[str]:
    return [sys.executable, "-m", "servprobe", "-sV", "-Pn", "-n",
            "-p", ",".join(map(str, sorted(ports))), "127.0.0.1",
            "-oX", str(tmp / f"{tag}.xml"), "-oJ", str(tmp / f"{tag}.jsonl"),
            "--store", str(store), "--no-progress"]


def _final(store: Path) -> dict[tuple[str, str, int], tuple]:
    with Store.open(store, create=False) as s:
        info = s.scan()
        assert info.status == "done", info.status
        return {r.key: tuple(getattr(r, f) for f in COMPARED) for r in s.results(info.id)}


def test_kill_9_then_resume_equals_uninterrupted(
    tmp_path: Path, redis_daemon, memcached_daemon, nginx_daemon, sshd_daemon
) -> None:
    ports = [redis_daemon.port, memcached_daemon.port, sshd_daemon.port,
             *nginx_daemon.ports.values()]
    seed = int(os.environ.get("SERVPROBE_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"SERVPROBE_KILL_SEED={seed}")
    with HostileServers(only=frozenset(), silent_count=3) as silent:
        ports += [s.port for s in silent.scenarios.values()]

        reference = tmp_path / "reference.sqlite"
        code, ref_secs, _, _, err = run_bounded(_argv(ports, reference, tmp_path, "ref"), 240)
        assert code == 0, err[-3000:]
        expected = _final(reference)
        assert {k[2] for k in expected} >= set(ports)

        store = tmp_path / "killed.sqlite"
        # somewhere inside the scan: from just after start to near its end
        kill_at = rng.uniform(0.3, max(0.5, ref_secs * 0.9))
        proc = subprocess.Popen(_argv(ports, store, tmp_path, "killed"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(kill_at)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        partial = None
        if store.exists():
            with Store.open(store, create=False) as s:
                try:
                    partial = s.finished(s.scan().id)
                except StoreError:  # killed between creating the file and recording the run
                    partial = None
        if partial is None:
            # killed before the run was recorded: nothing to resume, start again
            print(f"killed at {kill_at:.2f}s before the run was stored")
            code, _, _, _, err = run_bounded(_argv(ports, store, tmp_path, "killed"), 240)
        else:
            print(f"killed at {kill_at:.2f}s with {len(partial)} results stored")
            code, _, _, _, err = run_bounded(
                [sys.executable, "-m", "servprobe", "--resume", str(store)], 240)
        assert code == 0, err[-3000:]
        got = _final(store)
    assert got == expected, f"seed {seed}: resumed store differs from the uninterrupted one"
