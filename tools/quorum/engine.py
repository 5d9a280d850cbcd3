"""The only code that talks to a container engine.

Everything goes through docker-py against a Docker-API endpoint (the local
socket by default; DOCKER_HOST or an explicit URL otherwise; Podman's
Docker-compatible API is the same interface).  The rest of quorum sees this
small class and nothing of docker-py, so a second engine for rebuilds is a
second ``Engine(url)``, not a rewrite.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import BuildError, EngineError

HOW_TO_START = (
    "start the Docker engine and try again:\n"
    "  sudo systemctl start docker        # on a systemd machine\n"
    "  sudo dockerd >/tmp/dockerd.log 2>&1 &   # without systemd\n"
    "  (not installed? sudo apt-get install docker.io)\n"
    "and make sure this user may use it (member of the 'docker' group, or root);\n"
    "set DOCKER_HOST to use another endpoint.")


@dataclass(frozen=True)
class BuildOptions:
    """What a build may vary (reproduce) or must pin (build)."""
    nocache: bool = False
    cpuset: str | None = None          # e.g. "0" to give the build one CPU


class Engine:
    def __init__(self, base_url: str | None = None, timeout: int = 3600):
        self.base_url = base_url
        self.timeout = timeout
        self._client = None

    # docker-py connects lazily, so a command that never builds (graph, no-op
    # build, verify) never needs an engine.
    @property
    def client(self):
        if self._client is None:
            import docker  # imported here: `quorum graph` should not pay for it
            try:
                if self.base_url:
                    c = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
                else:
                    c = docker.from_env(timeout=self.timeout)
                c.ping()
            except Exception as e:  # docker-py raises many kinds here
                where = self.base_url or os.environ.get("DOCKER_HOST") or "the local socket"
                raise EngineError(f"cannot reach a Docker engine at {where} ({_short(e)}); " + HOW_TO_START) from None
            self._client = c
        return self._client

    @property
    def api(self):
        return self.client.api

    def _call(self, fn, *a, **kw):
        import docker.errors
        try:
            return fn(*a, **kw)
        except _transport_errors() + (docker.errors.APIError,) as e:
            raise EngineError(f"the engine failed: {_short(e)}") from None

    def describe(self) -> dict[str, str]:
        """Kind ("docker" or "podman") and version, for attestations, where
        they are informational: they never change an artifact's bytes."""
        v = self._call(self.api.version)
        names = " ".join(str(c.get("Name", "")) for c in (v.get("Components") or []) if isinstance(c, dict))
        return {"kind": "podman" if "podman" in names.lower() else "docker", "version": str(v.get("Version", "unknown"))}

    # --- images -----------------------------------------------------------
    def has_image(self, image_id: str) -> bool:
        import docker.errors
        try:
            self.api.inspect_image(image_id)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:
            if getattr(e, "status_code", None) == 404:
                return False
            raise EngineError(f"the engine failed: {_short(e)}") from None
        except Exception as e:
            raise EngineError(f"the engine failed: {_short(e)}") from None

    def load(self, archive: Path) -> None:
        """Load a docker-archive/OCI-archive file.  The caller checks the
        result by image ID (the config digest), which it already knows."""
        with open(archive, "rb") as f:
            out = self._call(self.api.load_image, f)
        for item in out or []:
            if isinstance(item, dict) and item.get("error"):
                raise EngineError(f"the engine refused {archive.name}: {item['error']}")

    def tag(self, image_id: str, repo: str, tag: str) -> None:
        self._call(self.api.tag, image_id, repo, tag)

    def remove_image(self, image_id: str) -> None:
        import docker.errors
        try:
            self.api.remove_image(image_id, force=True, noprune=False)
        except docker.errors.APIError:
            pass

    def save(self, image_id: str, dst: BinaryIO) -> None:
        """Stream `docker save` of one image into ``dst``."""
        import docker.errors
        try:
            for chunk in self.api.get_image(image_id):
                dst.write(chunk)
        except _transport_errors() + (docker.errors.APIError,) as e:
            raise EngineError(f"the engine could not export {image_id}: {_short(e)}") from None

    def single_layer(self, image_id: str, dst_dir: Path) -> Path:
        """Export an image and return the path of its one layer tar.

        The engine's export format is read with care: its own manifest.json
        says where the layers are, and an image with more than one layer is
        refused, because an artifact is exactly the files of its final
        stage."""
        import json
        saved = dst_dir / "image.tar"
        with open(saved, "wb") as f:
            self.save(image_id, f)
        with tarfile.open(saved, "r:") as tf:
            man = json.load(tf.extractfile("manifest.json"))
            if len(man) != 1 or len(man[0]["Layers"]) != 1:
                n = len(man[0]["Layers"]) if man else 0
                raise BuildError(f"the final stage has {n} layers; it must be FROM scratch plus one COPY",
                                 package="?")
            member = tf.getmember(man[0]["Layers"][0])
            layer = dst_dir / "engine-layer.tar"
            with tf.extractfile(member) as src, open(layer, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        saved.unlink()
        return layer

    # --- builds -----------------------------------------------------------
    def build(self, context: BinaryIO, *, dockerfile: str = "Containerfile", opts: BuildOptions = BuildOptions(),
              on_line: Callable[[str], None] = lambda s: None) -> str:
        """Build from a context tar with the network off; returns the image
        ID.  A failure of the build's own steps raises BuildError (the
        package's fault); anything else EngineError (the infrastructure's)."""
        import docker.errors
        import requests.exceptions
        kwargs = dict(fileobj=context, custom_context=True, dockerfile=dockerfile, rm=True, forcerm=True,
                      network_mode="none", nocache=opts.nocache, decode=True, pull=False)
        if opts.cpuset:
            kwargs["container_limits"] = {"cpusetcpus": opts.cpuset}
        image_id = None
        try:
            for chunk in self.api.build(**kwargs):
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        # The engine colours a step's stderr; a log file
                        # wants the text only.
                        line = _ANSI.sub("", line)
                        if line.strip():
                            on_line(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    msg = chunk.get("error", "").strip()
                    on_line(msg)
                    raise BuildError(msg, package="?")
        except requests.exceptions.ReadTimeout:
            raise EngineError(f"the engine did not answer for {self.timeout}s during the build") from None
        except _transport_errors() + (docker.errors.APIError,) as e:
            # The connection broke or the engine refused: infrastructure,
            # whatever the build itself would have done.
            raise EngineError(f"the engine failed during the build: {_short(e)}") from None
        if not image_id:
            raise EngineError("the engine finished the build without reporting an image ID")
        return image_id


@functools.cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Everything a broken connection to the engine can raise through
    docker-py: requests' errors, urllib3's (a stream cut mid-read raises
    ProtocolError directly), and plain socket errors."""
    import requests.exceptions
    import urllib3.exceptions
    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError, OSError)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else e.__class__.__name__)[:300]
