"""The captured corpus in tests/data/captures (made by tests/capture_responses.py).

Offline checks, no daemon started: the index and the files agree, and the key captured
replies are identified by nmap's database with the versions recorded at capture time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import daemons
import servprobe
from servprobe.probes.model import ProbeDB

CAPTURES = Path(__file__).resolve().parent / "data" / "captures"
NMAP_DB = Path("/usr/share/nmap/nmap-service-probes")

# (endpoint, capture file, probe, expected service, product, version from the recorded package)
KEY_REPLIES = [
    ("sshd", "tcp-NULL", "NULL", "ssh", "OpenSSH", "ssh"),
    ("nginx-http", "tcp-GetRequest", "GetRequest", "http", "nginx", "upstream"),
    ("nginx-https", "ssl-GetRequest", "GetRequest", "http", "nginx", "upstream"),
    ("nginx-https", "tcp-TLSSessionReq", "TLSSessionReq", "ssl", None, None),
    ("vsftpd", "tcp-NULL", "NULL", "ftp", "vsftpd", "upstream"),
    ("postfix", "tcp-NULL", "NULL", "smtp", "Postfix smtpd", None),
    ("redis", "tcp-GetRequest", "GetRequest", "redis", "Redis key-value store", None),
    ("redis", "tcp-redis-server", "redis-server", "redis", "Redis key-value store", "upstream"),
    ("memcached", "tcp-Memcache", "Memcache", "memcached", "Memcached", "upstream"),
    ("dnsmasq", "tcp-DNSVersionBindReqTCP", "DNSVersionBindReqTCP", "domain", "dnsmasq",
     "upstream"),
    ("dnsmasq-udp", "udp-DNSVersionBindReq", "DNSVersionBindReq", "domain", "dnsmasq",
     "upstream"),
    ("stunnel-ssh", "ssl-NULL", "NULL", "ssh", "OpenSSH", "ssh"),
]


@pytest.fixture(scope="module")
def index() -> dict:
    return json.loads((CAPTURES / "index.json").read_text())


@pytest.fixture(scope="module")
def nmap_db() -> ProbeDB:
    assert NMAP_DB.exists(), f"{NMAP_DB} missing: install nmap-common (make apt)"
    return servprobe.load_db(str(NMAP_DB))


def test_index_and_files_agree(index: dict) -> None:
    listed = {}
    for c in index["captures"]:
        assert c["endpoint"] in index["endpoints"], c
        if c["bytes"]:
            data = (CAPTURES / c["file"]).read_bytes()
            assert len(data) == c["bytes"] <= index["max_read"], c
            assert hashlib.sha256(data).hexdigest() == c["sha256"], c
            listed[c["file"]] = c
        else:
            assert "file" not in c, c
    on_disk = {str(p.relative_to(CAPTURES)) for p in CAPTURES.glob("*/*.bin")}
    assert on_disk == set(listed), on_disk ^ set(listed)
    assert (CAPTURES / "SOURCES.md").read_text().count("| ") > len(index["endpoints"])


@pytest.mark.parametrize(("endpoint", "name", "probe", "service", "product", "version"),
                         KEY_REPLIES, ids=[f"{k[0]}-{k[1]}" for k in KEY_REPLIES])
def test_key_reply_identified(index: dict, nmap_db: ProbeDB, endpoint: str, name: str,
                              probe: str, service: str, product: str | None,
                              version: str | None) -> None:
    ep = index["endpoints"][endpoint]
    recorded = ep["version"]
    if ep.get("wraps"):
        recorded = next(e["version"] for e in index["endpoints"].values()
                        if e["daemon"] == ep["wraps"])
    want = {None: None, "upstream": daemons.upstream_version(recorded),
            "ssh": f"{daemons.upstream_version(recorded)} Debian "
                   f"{daemons.debian_revision(recorded)}"}[version]
    data = (CAPTURES / endpoint / f"{name}.bin").read_bytes()
    got = nmap_db.match(probe, data, "udp" if name.startswith("udp-") else "tcp")
    assert got is not None and not got.soft, got
    assert (got.service, got.product, got.version) == (service, product, want), got
