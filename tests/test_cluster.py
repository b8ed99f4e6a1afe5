"""--cluster without a cluster: URL rules (what is refused, exit 2) and the sharding plan
(lazy on a /8, every host × port exactly once, shuffled). The real scheduler and worker
processes are in test_cluster_daemons.py."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tracemalloc
from collections import Counter

import pytest

from servprobe.cluster import ClusterUrlError, parse_cluster_url, take_resume_override, with_cluster
from servprobe.cluster.shards import Plan
from servprobe.scan.ports import PortSelection
from servprobe.scan.targets import build_target_list


@pytest.mark.parametrize("text,expected", [
    ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"),
    ("tls://sched.example:9000", "tls://sched.example:9000"),
    ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    ("tcp://sched", "tcp://sched:8786"),  # Dask's default scheduler port
    ("local:3", "local:3"),
])
def test_accepted_cluster_urls(text: str, expected: str) -> None:
    assert str(parse_cluster_url(text)) == expected


@pytest.mark.parametrize("text", [
    "inproc://x", "ucx://10.0.0.1:8786", "ws://10.0.0.1:8786", "http://10.0.0.1:8786",
    "10.0.0.1:8786", "tcp://10.0.0.1:99999", "local:0", "local:x", "",
])
def test_refused_cluster_urls(text: str) -> None:
    with pytest.raises(ClusterUrlError):
        parse_cluster_url(text)


def test_cli_refuses_non_tcp_tls_scheduler_before_any_traffic() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "servprobe", "--cluster", "ws://127.0.0.1:8786", "--no-store",
         "-p", "1", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "ws://127.0.0.1:8786" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_cluster_override() -> None:
    argv, value = take_resume_override(["--resume", "s.sqlite", "--cluster", "local:2"])
    assert (argv, value) == (["--resume", "s.sqlite"], "local:2")
    # without --resume, --cluster is a scan flag and stays
    assert take_resume_override(["--cluster", "local:2", "x"]) == (["--cluster", "local:2", "x"], None)
    stored = ["-p", "80", "--cluster", "tcp://h:1", "10.0.0.1"]
    assert with_cluster(stored, "none") == ["-p", "80", "10.0.0.1"]
    assert with_cluster(stored, "local:1") == ["-p", "80", "10.0.0.1", "--cluster", "local:1"]


def _ports(spec: dict[str, list[int]]) -> PortSelection:
    return PortSelection(spec)


def test_every_host_and_port_exactly_once_and_hosts_know_their_chunks() -> None:
    targets = build_target_list(["10.0.0.0/23", "10.9.0.1"])
    ports = _ports({"tcp": list(range(1, 101)), "udp": [53, 161]})
    plan = Plan.make(ports, work=64, seed=1)
    seen: Counter[tuple[str, str, int]] = Counter()
    per_host: Counter[str] = Counter()
    for shard in plan.shards(targets):
        assert shard.work <= 64
        assert shard.chunks == len(plan.chunks)
        for h in shard.hosts:
            per_host[h.address] += 1
            for proto, plist in shard.ports.items():
                for p in plist:
                    seen[(h.address, proto, p)] += 1
    assert len(per_host) == 513
    assert set(per_host.values()) == {len(plan.chunks)}
    assert len(seen) == 513 * 102 and set(seen.values()) == {1}


def test_shards_are_shuffled_across_the_window() -> None:
    targets = build_target_list(["10.1.0.0/16"])
    plan = Plan.make(_ports({"tcp": [22, 80, 443, 8080]}), work=64, seed=7)
    first = list(itertools.islice(plan.shards(targets), 8))
    # 16 hosts per shard; in target order the first shard would be 10.1.0.0-15
    for shard in first:
        third_octets = {h.address.split(".")[2] for h in shard.hosts}
        assert len(third_octets) > 4, shard.describe()
    assert len({s.hosts[0].address.split(".")[2] for s in first}) > 4


def test_a_slash_8_is_never_materialised() -> None:
    targets = build_target_list(["10.0.0.0/8"])
    plan = Plan.make(_ports({"tcp": list(range(1, 1001))}), seed=3)
    tracemalloc.start()
    try:
        shards = plan.shards(targets)
        got = list(itertools.islice(shards, 300))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(got) == 300
    # 16.7 M addresses: a materialised list would need gigabytes; one window is a few MB
    assert peak < 64 * 1024 * 1024, peak
