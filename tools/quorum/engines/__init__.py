"""Container engines: the small interface the builder and the pool use, the
facts an engine reports about itself, and a registry of kinds.

One module per kind (``docker``: docker-py against Docker or Podman's
Docker-compatible API; ``fake``: an engine that builds nothing, for the
scheduler's tests and the benchmark).  Adding a kind is one module and one
line in ``KINDS``; nothing else in quorum names a kind.
"""
from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from ..errors import QuorumError

if TYPE_CHECKING:
    from ..endpoints import EngineSpec


class Cancelled(Exception):
    """The build was cancelled (an interrupt); not a failure of anything."""


@dataclass(frozen=True)
class BuildOptions:
    """What a build may vary (reproduce) or must pin (build)."""
    nocache: bool = False
    cpuset: str | None = None          # e.g. "0" to give the build one CPU


@dataclass(frozen=True)
class EngineFacts:
    """What an engine says about itself, so a report can show that a
    rebuild ran on another engine, kernel or CPU than the build.

    ``identity`` is what the engine calls itself for good (Docker's daemon
    ID, which lives in its data root): two endpoints with one identity are
    one engine, so `reproduce --elsewhere` compares identities, never URLs
    (a host has many names)."""
    endpoint: str
    kind: str            # "Docker" | "Podman" | what the engine calls itself
    version: str
    os: str
    kernel: str
    arch: str
    cpus: int
    cpu: str             # vendor and model, or "not reported"
    # Added with the pool; records written before have neither.
    name: str = ""
    identity: str = ""

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, doc: object) -> "EngineFacts | None":
        """Facts as a store or report recorded them; None when unreadable.
        Unknown keys are left out, so a newer quorum's record still reads."""
        if not isinstance(doc, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in doc.items() if k in known})
        except TypeError:
            return None

    def describe(self) -> str:
        who = f"{self.name} ({self.endpoint})" if self.name and self.name != self.endpoint else self.endpoint
        return (f"{self.kind} {self.version} at {who}: {self.os}, kernel {self.kernel}, "
                f"{self.arch}, {self.cpus} CPUs ({self.cpu})")


@runtime_checkable
class Engine(Protocol):
    """What quorum asks of an engine.  Failures of the engine (unreachable,
    lost mid-call, daemon errors) raise errors.EngineError; a failure of a
    build's own steps raises errors.BuildError; an interrupt Cancelled."""

    name: str                          # display name (credentials never in it)
    cancelled: threading.Event         # set by cancel_builds: no build starts after it

    @property
    def endpoint(self) -> str: ...     # where it is, safe to print

    def facts(self) -> EngineFacts: ...

    def answers(self, timeout: float = 5) -> bool: ...     # a quick liveness probe

    def has_image(self, image_id: str) -> bool: ...

    def load(self, archive: Path) -> None: ...     # the caller checks the result by image ID

    def tag(self, image_id: str, repo: str, tag: str) -> None: ...

    def build(self, context: BinaryIO, *, dockerfile: str = "Containerfile", opts: BuildOptions = BuildOptions(),
              on_line: Callable[[str], None] = lambda s: None, owner: str | None = None,
              args: dict[str, str] | None = None) -> str: ...

    def save(self, image_id: str, dst: BinaryIO) -> None: ...      # an archive `load` takes back

    def single_layer(self, image_id: str, dst_dir: Path) -> Path: ...

    def release(self, image_id: str, owner: str) -> int: ...

    def cancel_builds(self) -> None: ...


# URL scheme -> "module:Class".  Docker's API schemes all go to docker-py,
# which speaks Podman's compatible API as well.
KINDS: dict[str, str] = {
    "unix": "quorum.engines.docker:DockerEngine",
    "tcp": "quorum.engines.docker:DockerEngine",
    "ssh": "quorum.engines.docker:DockerEngine",
    "fake": "quorum.engines.fake:FakeEngine",
}


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def from_spec(spec: "EngineSpec") -> Engine:
    """The engine a spec names, by its URL's scheme."""
    target = KINDS.get(scheme_of(spec.url))
    if target is None:
        from ..endpoints import redact
        raise QuorumError(f"no engine kind for {redact(spec.url)!r}: use unix:///PATH, tcp://HOST:PORT or "
                          "ssh://USER@HOST", field="--engine")
    module, _, cls = target.partition(":")
    factory = getattr(importlib.import_module(module), cls)
    engine: Engine = factory.from_spec(spec)
    return engine
