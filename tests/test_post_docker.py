"""docker-version against a real Docker Engine API, beside nmap -sV.

Debian's dockerd cannot start on this machine ("failed to start daemon: Devices cgroup isn't
mounted"), so the API is podman's Docker-compatible service (`podman system service`), the
best real alternative. It listens on the API's port 2375, the port nmap's docker-version
applies to, inside a network namespace the test creates; both scanners run there.
Expected values: nmap's live run (service, version), dpkg (podman's version), and the API's
own /version document read with http.client and json (not our HTTP code).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

import daemons_post
import rpcservers
from daemons import HOST, upstream_version

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("docker")
    with rpcservers.netns() as ns, daemons_post.podman_api(ns) as d:
        nmap = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns.name,
                "nmap",
                "-sV",
                "-Pn",
                "-p",
                "2375",
                "-oX",
                str(tmp / "nmap.xml"),
                HOST,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        ours = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns.name,
                sys.executable,
                "-m",
                "servprobe",
                "-Pn",
                "-p",
                "2375",
                "--no-store",
                "-oX",
                str(tmp / "ours.xml"),
                HOST,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert ours.returncode == 0, ours.stderr
        with ns.entered():
            conn = http.client.HTTPConnection(HOST, 2375, timeout=10)
            conn.request("GET", "/version")
            doc = json.loads(conn.getresponse().read())
            conn.close()
        _, err = nmap.communicate(timeout=300)
        assert nmap.returncode == 0, err
        ports = {}
        for name in ("nmap", "ours"):
            port = ET.parse(tmp / f"{name}.xml").getroot().find("host/ports/port")
            assert port is not None, (tmp / f"{name}.xml").read_text()
            ports[name] = port
        yield {**ports, "doc": doc, "daemon": d}


def test_service_and_version_equal_nmaps(scans: dict[str, Any]) -> None:
    ours, nm = scans["ours"].find("service"), scans["nmap"].find("service")
    assert ours.get("name") == nm.get("name") == "docker"
    installed = upstream_version(scans["daemon"].version)
    assert ours.get("version") == nm.get("version") == installed.split("+")[0]
    assert ours.get("method") == nm.get("method") == "probed"


def test_product_names_the_engine(scans: dict[str, Any]) -> None:
    """Deliberate difference: nmap's docker-version calls every answer "Docker"; the API's
    Components list says "Podman Engine" here, so ours is "Podman"."""
    assert scans["nmap"].find("service").get("product") == "Docker"
    assert scans["doc"]["Components"][0]["Name"] == "Podman Engine"
    assert scans["ours"].find("service").get("product") == "Podman"


def test_script_elements_are_the_apis(scans: dict[str, Any]) -> None:
    script = scans["ours"].find("script[@id='docker-version']")
    assert script is not None, ET.tostring(scans["ours"])
    elems = {e.get("key"): e.text for e in script.findall("elem")}
    doc = scans["doc"]
    for key in ("Version", "ApiVersion", "Os", "Arch", "KernelVersion", "GoVersion"):
        assert elems[key] == doc[key], key
    assert elems["KernelVersion"] == os.uname().release
    assert elems["Engine"] == "Podman Engine"


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n{"Versio',  # truncated, then EOF
        b'HTTP/1.0 200 OK\r\nContent-Length: 17\r\n\r\n{"Version": "1"}',  # no ApiVersion
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]",
        b'HTTP/1.0 404 Not Found\r\nContent-Length: 32\r\n\r\n{"Version":"1","ApiVersion":"1"}',
        b"\x00\xff" * 40,
    ],
)
def test_hostile_answers_claim_nothing(answer: bytes) -> None:
    """Something that is not the Docker API's /version must not make a Docker result. Fails
    (checked) when DockerMachine.finish() skips its `"ApiVersion" not in doc` check (the
    second case) or its status check (the fourth)."""
    from servprobe.post.docker import DockerMachine
    from servprobe.result import ServiceResult

    m = DockerMachine(ServiceResult(HOST, 2375, "tcp", service="docker"))
    m.start(0.0)
    m.feed(answer, 0.0)
    m.eof(0.0)
    assert m.finish() is None
