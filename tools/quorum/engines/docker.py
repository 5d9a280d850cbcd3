"""The only code that talks to a real container engine.

Everything goes through docker-py against a Docker-API endpoint (the local
socket by default; DOCKER_HOST or an explicit URL otherwise; Podman's
Docker-compatible API is the same interface).  The rest of quorum sees the
engines.Engine interface and nothing of docker-py, so another engine is
another ``DockerEngine(spec)``, not a rewrite.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import BuildError, EngineError
from . import BuildOptions, Cancelled, EngineFacts

if TYPE_CHECKING:
    from ..endpoints import EngineSpec

HOW_TO_START = (
    "start the Docker engine and try again:\n"
    "  sudo systemctl start docker        # on a systemd machine\n"
    "  sudo dockerd >/tmp/dockerd.log 2>&1 &   # without systemd\n"
    "  (not installed? sudo apt-get install docker.io)\n"
    "and make sure this user may use it (member of the 'docker' group, or root);\n"
    "set DOCKER_HOST to use another endpoint.")


# Every image quorum's builds end on carries this label; its value is the
# build's owner token (see Engine.release and docs/spec/engine-images.md).
OWNER_LABEL = "org.quorum.build"

# The engine's default endpoint, named in messages when DOCKER_HOST is unset.
DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"

# Build-stream errors that describe the engine's state, not the package:
# an image the layer cache resolved to was removed meanwhile, or the
# daemon is going away.  A package's own failure reads "returned a
# non-zero code" or names its files.
_ENGINE_STATE = re.compile(r"unable to find image|no such image|unknown parent image|failed to set parent"
                           r"|failed to export image|reference does not exist|layer does not exist"
                           r"|shutting down|context canceled|connection reset|broken pipe"
                           # Podman's face of an image removed under a build's feet
                           r"|layer not known", re.I)


def _local_cpu() -> str:
    """/proc/cpuinfo of this machine: right for an engine on a local socket,
    which runs its containers here."""
    vendor = model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "vendor_id" and not vendor:
                    vendor = v.strip()
                elif k == "model name" and not model:
                    model = v.strip()
                if vendor and model:
                    break
    except OSError:
        pass
    return " ".join(x for x in (vendor, model) if x) or "not reported"


class DockerEngine:
    def __init__(self, base_url: str | None = None, timeout: int = 3600, *, spec: "EngineSpec | None" = None,
                 name: str | None = None):
        self.spec = spec
        self.base_url = spec.url if spec is not None else base_url
        self.timeout = timeout
        self._client: Any = None
        self.name = name or (spec.name if spec is not None else self.endpoint)
        # In-flight build responses, so an interrupt can cut them: the engine
        # cancels a build (and kills its container) when its client goes.
        self._streams: dict = {}     # build stream -> its running step's container, if any
        self._streams_lock = threading.Lock()
        self.cancelled = threading.Event()

    @classmethod
    def from_spec(cls, spec: "EngineSpec") -> "DockerEngine":
        return cls(spec=spec)

    @property
    def endpoint(self) -> str:
        """The endpoint, as a person would pass it to DOCKER_HOST, without
        any credential a URL may carry (it goes into messages and logs)."""
        url = self.base_url or os.environ.get("DOCKER_HOST") or DEFAULT_ENDPOINT
        if "@" in url.partition("://")[2].partition("/")[0]:
            from ..endpoints import redact
            return redact(url)
        return url

    def facts(self) -> EngineFacts:
        """The engine's kind, version, OS, kernel and CPU, as it reports them."""
        info = self._call("asking for its facts", self.api.info)
        ver = self._call("asking for its version", self.api.version)
        names = [str(c.get("Name", "")) for c in ver.get("Components") or []]
        platform = str((ver.get("Platform") or {}).get("Name", ""))
        kind = "Podman" if any("podman" in n.lower() for n in names + [platform]) else "Docker"
        # The CPU model is not in the Docker API; an engine on this machine's
        # socket runs its containers on this machine's CPU.
        local = self.endpoint.startswith("unix://")
        # What an engine keeps whatever URL reaches it: the daemon's ID (its
        # key; shared by daemons that share /etc/docker), its host's name
        # and its data root (one image store).  Hashed: a record need not
        # carry host names and paths.
        parts = [str(info.get(k) or "") for k in ("ID", "Name", "DockerRootDir")]
        identity = "docker:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
        return EngineFacts(endpoint=self.endpoint, kind=kind, version=str(ver.get("Version", "?")),
                           os=str(info.get("OperatingSystem", "?")), kernel=str(info.get("KernelVersion", "?")),
                           arch=str(info.get("Architecture", "?")), cpus=int(info.get("NCPU") or 0),
                           cpu=_local_cpu() if local else "not reported by a remote engine",
                           name=self.name, identity=identity)

    def failure(self, what: str) -> EngineError:
        """One sentence for an engine failure: which engine, what happened,
        and what to do.  The one place these messages are worded."""
        return EngineError(f"engine at {self.endpoint} {what}; check it with 'docker info' and rerun")

    def error(self, e: BaseException, doing: str) -> EngineError:
        if isinstance(e, _transport_errors()):
            return self.failure(f"stopped answering while {doing} ({_short(e)})")
        return self.failure(f"failed while {doing}: {_short(e)}")

    # docker-py connects lazily, so a command that never builds (graph, no-op
    # build, verify) never needs an engine.
    @property
    def client(self):
        if self._client is None:
            import docker  # imported here: `quorum graph` should not pay for it
            try:
                if self.spec is not None:
                    # TLS and SSH settings are the transport's (endpoints.py):
                    # verification is never turned off there.
                    from ..endpoints import docker_client_kwargs
                    c = docker.DockerClient(**{**docker_client_kwargs(self.spec), "timeout": self.timeout})
                elif self.base_url:
                    c = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
                else:
                    c = docker.from_env(timeout=self.timeout)
                c.ping()
            except Exception as e:  # docker-py raises many kinds here
                raise EngineError(f"cannot reach a Docker engine at {self.endpoint} ({_short(e)}); "
                                  + HOW_TO_START) from None
            self._client = c
        return self._client

    @property
    def api(self):
        return self.client.api

    def _call(self, doing: str, fn, *a, **kw):
        import docker.errors
        try:
            return fn(*a, **kw)
        except _transport_errors() + (docker.errors.APIError,) as e:
            raise self.error(e, doing) from None

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
            raise self.error(e, f"inspecting {image_id}") from None
        except _transport_errors() as e:
            raise self.error(e, f"inspecting {image_id}") from None

    def load(self, archive: Path) -> None:
        """Load a docker-archive/OCI-archive file.  The caller checks the
        result by image ID (the config digest), which it already knows."""
        with open(archive, "rb") as f:
            out = self._call(f"loading {archive.name}", self.api.load_image, f)
        for item in out or []:
            if isinstance(item, dict) and item.get("error"):
                raise EngineError(f"engine at {self.endpoint} refused {archive.name}: {item['error']}")

    def tag(self, image_id: str, repo: str, tag: str) -> None:
        self._call(f"tagging {image_id}", self.api.tag, image_id, repo, tag)

    def release(self, image_id: str, owner: str) -> int:
        """Remove ``image_id`` and those of its parents that ``owner``'s
        build made; returns how many went.  Best effort: what cannot go now
        is left for `quorum prune`.

        An image is provably this build's own when the instruction that made
        it carries the owner token (the final LABEL, the smoke test's RUN
        with its marker argument): the layer cache can hand such an image to
        no other build.  Every other image on the chain is shared layer
        cache that another build, in this session or another checkout, may
        be resolving to right now, so it is never touched: no force (an
        image a container uses stays), no parent pruning."""
        import docker.errors
        removed = 0
        try:
            for img in self.owned_chain(image_id, owner):
                self.api.remove_image(img, force=False, noprune=True)
                removed += 1
        except (docker.errors.APIError, EngineError) + _transport_errors():
            pass   # gone already, in use, or the engine is away: prune later
        return removed

    def owned_chain(self, image_id: str, owner: str) -> list[str]:
        """``image_id`` and its parents up to the first that ``owner`` did
        not make, child first (the order they can be removed in)."""
        chain = []
        current = image_id
        while current:
            info = self._call(f"inspecting {current}", self.api.inspect_image, current)
            if not _made_by(info, owner):
                break
            chain.append(info["Id"])
            current = info.get("Parent") or ""
        return chain

    def labelled_images(self) -> list[tuple[str, str]]:
        """(image ID, owner token) of every image a quorum build ended on."""
        imgs = self._call("listing images", self.api.images, all=True, filters={"label": OWNER_LABEL})
        return [(i["Id"], (i.get("Labels") or {}).get(OWNER_LABEL, "")) for i in imgs]

    def save(self, image_id: str, dst: BinaryIO) -> None:
        """Stream `docker save` of one image into ``dst``."""
        import docker.errors
        try:
            for chunk in self.api.get_image(image_id):
                dst.write(chunk)
        except _transport_errors() + (docker.errors.APIError,) as e:
            raise self.error(e, f"exporting {image_id}") from None

    def single_layer(self, image_id: str, dst_dir: Path) -> Path:
        """Export an image and return the path of its one layer tar.

        The engine's export format is read with care: its own manifest.json
        says where the layers are, and an image with more than one layer is
        refused, because an artifact is exactly the files of its final
        stage."""
        saved = dst_dir / "image.tar"
        with open(saved, "wb") as f:
            self.save(image_id, f)
        with tarfile.open(saved, "r:") as tf:
            index = tf.extractfile("manifest.json")
            if index is None:
                raise self.failure(f"exported {image_id} without a manifest.json file")
            man = json.load(index)
            if len(man) != 1 or len(man[0]["Layers"]) != 1:
                n = len(man[0]["Layers"]) if man else 0
                raise BuildError(f"the final stage has {n} layers; it must be FROM scratch plus one COPY",
                                 package="?")
            src = tf.extractfile(tf.getmember(man[0]["Layers"][0]))
            if src is None:
                raise self.failure(f"exported {image_id} with a layer that is not a file")
            layer = dst_dir / "engine-layer.tar"
            with src, open(layer, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        saved.unlink()
        return layer

    # --- builds -----------------------------------------------------------
    def build(self, context: BinaryIO, *, dockerfile: str = "Containerfile", opts: BuildOptions = BuildOptions(),
              on_line: Callable[[str], None] = lambda s: None, owner: str | None = None,
              args: dict[str, str] | None = None) -> str:
        """Build from a context tar with the network off; returns the image
        ID.  ``owner`` labels the final image (a last LABEL step whose cache
        key holds the token, so the image is this build's alone; see
        release).  ``args`` are build arguments.  A failure of the build's
        own steps raises BuildError (the package's fault); anything else
        EngineError (the infrastructure's), also when a step fails because
        the engine lost an image or is going away."""
        import docker.errors
        import requests.exceptions
        kwargs = dict(fileobj=context, custom_context=True, dockerfile=dockerfile, rm=True, forcerm=True,
                      network_mode="none", nocache=opts.nocache, decode=True, pull=False)
        if owner:
            kwargs["labels"] = {OWNER_LABEL: owner}
        if args:
            kwargs["buildargs"] = dict(args)
        if opts.cpuset:
            kwargs["container_limits"] = {"cpusetcpus": opts.cpuset}
        image_id = None
        stream = None
        try:
            if self.cancelled.is_set():
                raise Cancelled()
            stream = self.api.build(**kwargs)
            self._track(stream, True)
            for chunk in stream:
                if "stream" in chunk:
                    for line in chunk["stream"].splitlines():
                        # The engine colours a step's stderr; a log file
                        # wants the text only.
                        line = _ANSI.sub("", line)
                        m = _RUNNING_IN.match(line)
                        if m:
                            self._track(stream, True, m.group(1))
                        if line.strip():
                            on_line(line)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                if "error" in chunk:
                    msg = chunk.get("error", "").strip()
                    on_line(msg)
                    if _ENGINE_STATE.search(msg) or not self.answers():
                        raise self.failure(f"failed during the build: {msg[:300]}")
                    raise BuildError(msg, package="?")
        except requests.exceptions.ReadTimeout:
            raise self.failure(f"did not answer for {self.timeout}s during the build") from None
        except _transport_errors() + (docker.errors.APIError,) as e:
            if self.cancelled.is_set():
                raise Cancelled() from None
            # The connection broke or the engine refused: infrastructure,
            # whatever the build itself would have done.
            raise self.error(e, "building") from None
        finally:
            if stream is not None:
                self._track(stream, False)
        if self.cancelled.is_set():
            raise Cancelled()
        if not image_id:
            raise self.failure("finished a build without reporting an image ID")
        return image_id

    def answers(self, timeout: float = 5) -> bool:
        """Whether the engine answers a ping within a few seconds: a step
        that failed while it did not is the engine's failure."""
        try:
            return bool(self.api.get(self.api._url("/_ping"), timeout=timeout).ok)
        except Exception:   # any failure to answer is the answer
            return False

    # --- interrupts -------------------------------------------------------
    def _track(self, stream, add: bool, container: str | None = None) -> None:
        with self._streams_lock:
            if add:
                self._streams[stream] = container
            else:
                self._streams.pop(stream, None)

    def cancel_builds(self) -> None:
        """Cut every running build's connection.  The engine then cancels
        the build and kills its container; the worker's read ends at once
        and raises Cancelled.  No build starts after this."""
        self.cancelled.set()
        with self._streams_lock:
            streams = list(self._streams.items())
        for stream, container in streams:
            sock = _stream_socket(stream)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            # The engine does not always notice a client that went away
            # while a step prints nothing: stop the step's container too.
            if container:
                try:
                    self.api.kill(container)
                except Exception:   # gone already, or the engine is away: nothing left to stop
                    pass


def _stream_socket(stream) -> "socket.socket | None":
    """The socket under a docker-py build stream.  docker-py keeps the HTTP
    response only in its generator's frame; shutting the socket down is the
    one way to end a blocked read from another thread."""
    frame = getattr(stream, "gi_frame", None)
    response = frame.f_locals.get("response") if frame is not None else None
    raw = getattr(response, "raw", None)
    for path in (("_connection", "sock"), ("_fp", "fp", "raw", "_sock")):
        obj = raw
        for attr in path:
            obj = getattr(obj, attr, None)
        if isinstance(obj, socket.socket):
            return obj
    return None


def new_owner() -> str:
    """A token naming one quorum process: host, PID and a random part, so
    `quorum prune` can tell a live owner's images from a dead one's."""
    import uuid
    return f"quorum:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def owner_alive(token: str) -> bool:
    """Whether the process a token names may still run.  An owner on another
    host cannot be checked, so it counts as alive."""
    parts = token.split("/", 1)[0].split(":")
    if len(parts) != 4 or parts[0] != "quorum" or parts[1] != socket.gethostname():
        return True
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def _made_by(info: dict, owner: str) -> bool:
    """Whether the instruction that made an image (classic builder: the
    image's ContainerConfig.Cmd, e.g. "LABEL org.quorum.build=TOKEN" or
    "QUORUM_TEST_RUN=TOKEN" before a RUN) carries exactly ``owner``, not a
    longer token it is the start of (package "a" vs "ab")."""
    cmd = (info.get("ContainerConfig") or {}).get("Cmd") or []
    exact = re.compile(r"=" + re.escape(owner) + r"(?![^\s\"'])")
    return any(exact.search(part) for part in cmd if isinstance(part, str))


@functools.cache
def _transport_errors() -> tuple[type[BaseException], ...]:
    """Everything a broken connection to the engine can raise through
    docker-py: requests' errors, urllib3's (a stream cut mid-read raises
    ProtocolError directly), and plain socket errors."""
    import requests.exceptions
    import urllib3.exceptions
    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError, OSError)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The classic builder names each RUN step's container in its output.
_RUNNING_IN = re.compile(r"\s*---> Running in ([0-9a-f]{12,64})\s*$")


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return (s[0] if s else e.__class__.__name__)[:300]
