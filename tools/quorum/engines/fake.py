"""An engine that builds nothing but behaves like one, for the scheduler's
tests and the benchmark.

A build "produces" a one-file layer that depends only on the package's name,
so the same tree gives the same artifacts on every fake engine (as real,
reproducible builds do on real engines).  Images are kept as a set of IDs;
``load`` reads the archive's own manifest.json, so a later ``has_image`` of
the config digest holds exactly as on a real engine.

What can be configured: how long each package's build takes (``delays``) and
a load takes (``load_seconds``), on a real or a virtual clock; and failures
to inject: a package's own failure, a daemon error while the engine still
answers, and a lost connection (the engine stops answering until
``revive()``), either on a package's build or at once (``lose()``).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import BuildError, EngineError
from . import BuildOptions, Cancelled, EngineFacts

if TYPE_CHECKING:
    from ..endpoints import EngineSpec

# What a failure injection may name (see FakeEngine.fail).
FAILURES = ("build", "daemon", "lost")


class RealClock:
    """Waits in short steps so that a cancel or a lost engine ends a
    "build" at once, as a cut connection ends a real one."""

    def wait(self, seconds: float, stop: Callable[[], bool]) -> None:
        end = time.monotonic() + seconds
        while not stop():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.01))


@dataclass
class VirtualClock:
    """Simulated time for the benchmark: a call that "takes" N seconds adds
    N to ``charged`` and returns at once.  The simulation reads and resets
    ``charged`` around each call, so it knows what the call would have cost.
    Single-threaded use only (the simulation is)."""
    charged: float = 0.0

    def wait(self, seconds: float, stop: Callable[[], bool]) -> None:
        self.charged += seconds

    def take(self) -> float:
        c, self.charged = self.charged, 0.0
        return c


@dataclass
class FakeEngine:
    name: str = "fake"
    delays: Mapping[str, float] = field(default_factory=dict)   # package -> seconds its build takes
    default_delay: float = 0.0
    load_seconds: float = 0.0
    clock: RealClock | VirtualClock = field(default_factory=RealClock)
    identity: str = ""
    cpu: str = "FakeVendor FakeCPU"
    # package -> the package whose files its layer holds (default: its own),
    # for artifacts that must come out identical (gates).
    layer_of: Mapping[str, str] = field(default_factory=dict)
    # package -> failures still to inject, in order.  Engines given one dict
    # share it: "the first engine to build X loses its connection".
    injected: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.identity = self.identity or "fake:" + hashlib.sha256(self.name.encode()).hexdigest()[:16]
        self.cancelled = threading.Event()
        self._lock = threading.Lock()
        self._images: set[str] = set()
        self._names: dict[str, str] = {}            # image ID -> package it "built"
        self._lost = threading.Event()
        self.loads: Counter[str] = Counter()        # config digest -> times loaded
        self.builds: list[str] = []                 # packages built (smoke tests not counted), in order
        self.running: set[str] = set()              # packages building right now
        self.max_running = 0

    @classmethod
    def from_spec(cls, spec: "EngineSpec") -> "FakeEngine":
        """``fake://NAME``: a fake with no delays (for trying the CLI)."""
        return cls(name=spec.name)

    @property
    def endpoint(self) -> str:
        return f"fake://{self.name}"

    # --- failure injection ------------------------------------------------
    def fail(self, package: str, *failures: str) -> None:
        """The next builds of ``package`` fail, one failure each, in order."""
        for f in failures:
            if f not in FAILURES:
                raise ValueError(f"unknown failure {f!r}; known: {FAILURES}")
        with self._lock:
            self.injected.setdefault(package, []).extend(failures)

    def lose(self) -> None:
        """The connection is gone: running builds break, nothing answers."""
        self._lost.set()

    def revive(self) -> None:
        """The engine is back, empty (as a restarted daemon on a fresh data
        root: nothing loaded before is there)."""
        with self._lock:
            self._images.clear()
        self._lost.clear()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _check(self, doing: str) -> None:
        if self._lost.is_set():
            raise EngineError(f"engine at {self.endpoint} stopped answering while {doing} (connection lost); "
                              "check it and rerun")

    # --- the interface ------------------------------------------------------
    def facts(self) -> EngineFacts:
        self._check("asking for its facts")
        return EngineFacts(endpoint=self.endpoint, kind="Fake", version="1", os="none", kernel="none",
                           arch="amd64", cpus=1, cpu=self.cpu, name=self.name, identity=self.identity)

    def answers(self, timeout: float = 5) -> bool:
        return not self._lost.is_set()

    def has_image(self, image_id: str) -> bool:
        self._check(f"inspecting {image_id}")
        with self._lock:
            return image_id in self._images

    def load(self, archive: Path) -> None:
        self._check(f"loading {archive.name}")
        with tarfile.open(archive, "r:") as tf:
            f = tf.extractfile("manifest.json")
            if f is None:
                raise EngineError(f"engine at {self.endpoint} refused {archive.name}: no manifest.json")
            man = json.load(f)
        config = "sha256:" + man[0]["Config"].rsplit("/", 1)[1]
        self.clock.wait(self.load_seconds, self._stopped)
        self._check(f"loading {archive.name}")
        with self._lock:
            self._images.add(config)
            self.loads[config] += 1

    def tag(self, image_id: str, repo: str, tag: str) -> None:
        self._check(f"tagging {image_id}")

    def _stopped(self) -> bool:
        return self.cancelled.is_set() or self._lost.is_set()

    def build(self, context: BinaryIO, *, dockerfile: str = "Containerfile", opts: BuildOptions = BuildOptions(),
              on_line: Callable[[str], None] = lambda s: None, owner: str | None = None,
              args: dict[str, str] | None = None) -> str:
        if self.cancelled.is_set():
            raise Cancelled()
        self._check("building")
        name = _package_of(context, dockerfile)
        test = bool(args and "QUORUM_TEST_RUN" in args)
        with self._lock:
            failure = self.injected[name].pop(0) if not test and self.injected.get(name) else None
            self.running.add(name)
            self.max_running = max(self.max_running, len(self.running))
        try:
            on_line(f"fake build of {name} on {self.name}")
            if failure == "lost":
                self._lost.set()
            self.clock.wait(0.0 if test else self.delays.get(name, self.default_delay), self._stopped)
            if self.cancelled.is_set():
                raise Cancelled()
            self._check("building")
            if failure == "daemon":
                raise EngineError(f"engine at {self.endpoint} failed while building: injected daemon error")
            if failure == "build":
                on_line("injected failure")
                raise BuildError("The command '/bin/sh -c build.sh' returned a non-zero code: 1", package="?")
        finally:
            with self._lock:
                self.running.discard(name)
        image = "sha256:" + hashlib.sha256(f"{self.name}/{name}/{owner}".encode()).hexdigest()
        with self._lock:
            self._images.add(image)
            self._names[image] = name
            if not test:
                self.builds.append(name)
        return image

    def save(self, image_id: str, dst: BinaryIO) -> None:
        """An archive naming only the image's config: enough for another
        fake's ``load`` to hold the same image ID."""
        self._check(f"exporting {image_id}")
        if not self.has_image(image_id):
            raise EngineError(f"engine at {self.endpoint} has no image {image_id}")
        data = json.dumps([{"Config": "blobs/sha256/" + image_id.split(":", 1)[1], "Layers": []}]).encode()
        with tarfile.open(fileobj=dst, mode="w", format=tarfile.GNU_FORMAT) as tf:
            ti = tarfile.TarInfo("manifest.json")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

    def single_layer(self, image_id: str, dst_dir: Path) -> Path:
        self._check(f"exporting {image_id}")
        name = self._names.get(image_id, "unknown")
        name = self.layer_of.get(name, name)
        layer = dst_dir / "engine-layer.tar"
        data = f"{name}\n".encode()
        with tarfile.open(layer, "w", format=tarfile.GNU_FORMAT) as tf:
            for d in ("usr", "usr/share", "usr/share/fake"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            ti = tarfile.TarInfo(f"usr/share/fake/{name}.txt")
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
        return layer

    def release(self, image_id: str, owner: str) -> int:
        with self._lock:
            if image_id in self._images:
                self._images.discard(image_id)
                return 1
        return 0

    def cancel_builds(self) -> None:
        self.cancelled.set()


def _package_of(context: BinaryIO, dockerfile: str) -> str:
    """The package a rendered Containerfile is for: its first line says
    "# Rendered by quorum for NAME VERSION: ..."."""
    with tarfile.open(fileobj=context, mode="r:") as tf:
        f = tf.extractfile(dockerfile)
        first = f.readline().decode(errors="replace") if f is not None else ""
    return first.split(" for ", 1)[1].split()[0] if " for " in first else "unknown"
