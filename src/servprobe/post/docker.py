"""docker-version: the Docker Engine API's `GET /version`, on a docker API port.

Asks: `GET /version HTTP/1.0` with a Host header (inside TLS on ssl/docker, 2376), the call
`docker version` makes; it needs no credentials on an unprotected API socket.
Reads: the JSON object the API returns: Version, ApiVersion, MinAPIVersion, Os, Arch,
KernelVersion, GoVersion, GitCommit, BuildTime, and the Components list's first name. The
product is the engine that answered: "Docker" for dockerd; podman's compatible API service
says "Podman Engine" in Components, and is named so (nmap's script calls every answer
Docker). The HTTP parsing is http-server-header's (post/http.py).
"""

from __future__ import annotations

import json

from servprobe.post.base import Finding, PostProcessor, Trigger, format_output, target_name, text
from servprobe.post.http import HttpMachine
from servprobe.result import ScriptResult

DOCKER_PORTS = frozenset({2375, 2376})  # the API's registered plain and TLS ports
KEYS = (
    "Version",
    "ApiVersion",
    "MinAPIVersion",
    "Os",
    "Arch",
    "KernelVersion",
    "GoVersion",
    "GitCommit",
    "BuildTime",
)


class DockerMachine(HttpMachine):
    def start(self, now: float) -> list[bytes]:
        host = target_name(self.result)
        if ":" in host:
            host = f"[{host}]"
        return [f"GET /version HTTP/1.0\r\nHost: {host}:{self.result.port}\r\n\r\n".encode()]

    def finish(self) -> Finding | None:
        if self.status != 200:
            return None
        try:
            doc = json.loads(self.body.decode("utf-8", "replace"))
        except ValueError:
            return None
        if (
            not isinstance(doc, dict)
            or not isinstance(doc.get("Version"), str)
            or "ApiVersion" not in doc
        ):
            return None  # not the Docker API's answer
        elements = {
            k: text(str(doc[k]), 256) for k in KEYS if isinstance(doc.get(k), str | int | float)
        }
        components = doc.get("Components")
        engine = None
        if isinstance(components, list) and components and isinstance(components[0], dict):
            name = components[0].get("Name")
            if isinstance(name, str):
                engine = text(name, 80)
                elements["Engine"] = engine
        product = "Podman" if engine and engine.startswith("Podman") else "Docker"
        f = Finding(ScriptResult("docker-version", format_output(elements), elements))
        f.service = "docker"
        f.fields = {"product": product, "version": elements["Version"]}
        return f


POST = PostProcessor(
    "docker-version",
    Trigger(services=frozenset({"docker"}), ports=DOCKER_PORTS),
    DockerMachine,
    "the Docker Engine API's GET /version (version, API version, OS, kernel, Go version)",
)
