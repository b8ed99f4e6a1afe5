"""The scanner command with post-processors, on the suite's real redis-server: the default
runs them (JSON Lines `scripts`, `| redis-info:` lines), `--version-scripts none` runs none,
a list runs only those named, and `--version-trace` shows their exchanges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemons import Daemon, upstream_version

pytestmark = pytest.mark.daemon


def _scan(port: int, tmp: Path, *extra: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    out = tmp / f"scan{len(list(tmp.iterdir()))}.jsonl"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run([sys.executable, "-m", "servprobe", "--no-store", "--no-progress", "-n", "-Pn",
                           "-p", str(port), "-oJ", str(out), *extra, "127.0.0.1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    (port_line,) = [o for o in map(json.loads, out.read_text().splitlines()) if o["type"] == "port"]
    return port_line, proc


def test_version_scripts_flag(redis_daemon: Daemon, tmp_path: Path) -> None:
    port = redis_daemon.port
    full, proc = _scan(port, tmp_path)
    assert full["scripts"]["redis-info"]["elements"]["Version"] == upstream_version(redis_daemon.version)
    assert full["version"] == upstream_version(redis_daemon.version)
    assert "| redis-info:" in proc.stdout
    none, proc = _scan(port, tmp_path, "--version-scripts", "none")
    assert none["scripts"] == {} and none["version"] is None and "redis-info" not in proc.stdout
    other, _ = _scan(port, tmp_path, "--version-scripts", "amqp-info,http-server-header")
    assert "redis-info" not in other["scripts"]
    _, proc = _scan(port, tmp_path, "--version-trace", "--version-scripts", "redis-info")
    assert "post redis-info SEND" in proc.stderr and "post redis-info READ" in proc.stderr
