"""A pool of engines: slots, health, placement, and images loaded at most
once per engine.

The pool decides *where* a build runs; the builder decides *what* runs and
keeps all publishing to itself (so the manifest never depends on where a
node was built).  Everything here is called from the builder's one
scheduling thread, except ``ensure_image`` and ``facts``, which workers call
(each under a lock of its own).

Placement: among healthy engines with a free slot that the node may use,
the one already holding most of the node's inputs (its seed and dependency
images, by image ID), then the one with most free slots, then the first
listed.  An engine that fails (connection lost, daemon error while not
answering) is marked unhealthy, forgets what it held (a restarted daemon
may have lost it), and is probed again after a back-off that doubles with
each failure.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .engines import Engine, EngineFacts
from .errors import EngineError, QuorumError

if TYPE_CHECKING:
    from .endpoints import EngineSpec

# Back-off of an unhealthy engine: first probe after BACKOFF_FIRST seconds,
# doubling up to BACKOFF_MAX.  Long enough that a dead host is not hammered,
# short enough that a restarted daemon rejoins within a minute.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 60.0


@dataclass(eq=False)
class Member:
    """One engine of the pool and what the pool knows about it."""
    engine: Engine
    slots: int = 1
    labels: tuple[tuple[str, str], ...] = ()
    busy: int = 0
    healthy: bool = True
    failures: int = 0                        # consecutive failures (sets the back-off)
    retry_at: float = 0.0                    # when an unhealthy engine is probed again
    last_error: str = ""
    held: set[str] = field(default_factory=set)       # image IDs known to be on it
    loads: Counter[str] = field(default_factory=Counter)   # image ID -> loads by this run
    built: int = 0
    _facts: EngineFacts | None = None
    _facts_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _image_locks: dict[str, threading.Lock] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def free(self) -> int:
        return self.slots - self.busy if self.healthy else 0

    def facts(self) -> EngineFacts | None:
        """The engine's facts, asked once (None if it cannot say)."""
        with self._lock:
            if self._facts is None and not self._facts_error:
                try:
                    self._facts = self.engine.facts()
                except QuorumError as e:
                    self._facts_error = str(e)
            return self._facts

    @property
    def identity(self) -> str:
        f = self.facts()
        return f.identity if f is not None else ""

    def health(self) -> str:
        return "healthy" if self.healthy else "unhealthy"

    def to_json(self) -> dict:
        """What `quorum engines --json` and the events say about it."""
        f = self.facts()
        return {"name": self.name, "endpoint": self.engine.endpoint, "slots": self.slots, "free": self.free,
                "health": self.health(), "labels": dict(self.labels), "error": self.last_error or self._facts_error,
                "facts": f.to_json() if f is not None else None}


class Pool:
    def __init__(self, members: list[Member], *, clock: Callable[[], float] = time.monotonic,
                 backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX)):
        if not members:
            raise QuorumError("no engine to build on: give one with --engine URL", field="--engine")
        self.members = members
        self.clock = clock
        self.backoff = backoff
        self._held_lock = threading.Lock()

    @classmethod
    def of(cls, engine: Engine, slots: int = 1) -> "Pool":
        """A pool of one engine (what `quorum build` without a pool uses)."""
        return cls([Member(engine=engine, slots=max(1, slots))])

    @property
    def slots(self) -> int:
        return sum(m.slots for m in self.members)

    # --- placement ------------------------------------------------------------
    def place(self, wants: Iterable[str] = (), allowed: Callable[[Member], bool] = lambda m: True) -> Member | None:
        """Take a slot for a build needing images ``wants``: on the allowed
        healthy engine holding most of them, else most free, else first
        listed.  None when no allowed engine has a free slot now."""
        wants = tuple(wants)
        best: Member | None = None
        best_key: tuple[int, int] | None = None
        for m in self.members:
            if m.free <= 0 or not allowed(m):
                continue
            key = (sum(1 for w in wants if w in m.held), m.free)
            if best_key is None or key > best_key:
                best, best_key = m, key
        if best is not None:
            best.busy += 1
        return best

    def release(self, m: Member) -> None:
        m.busy -= 1

    def could_run(self, allowed: Callable[[Member], bool] = lambda m: True, *, healthy_only: bool = False) -> bool:
        """Whether some allowed engine exists (healthy now, when asked)."""
        return any(allowed(m) and (m.healthy or not healthy_only) for m in self.members)

    # --- health -----------------------------------------------------------------
    def mark_unhealthy(self, m: Member, why: str) -> float:
        """Take ``m`` out of placement; returns the seconds until it is
        probed again.  What it held is forgotten: when it comes back, every
        image is checked (and loaded) again."""
        m.healthy = False
        m.failures += 1
        m.last_error = why
        delay = min(self.backoff[1], self.backoff[0] * 2 ** (m.failures - 1))
        m.retry_at = self.clock() + delay
        with self._held_lock:
            m.held.clear()
        return delay

    def due(self) -> list[Member]:
        """Unhealthy engines whose back-off is over (to probe now)."""
        now = self.clock()
        return [m for m in self.members if not m.healthy and m.retry_at <= now]

    def probed(self, m: Member, answers: bool) -> None:
        """The result of probing a due engine: back in the pool, or another
        (longer) back-off."""
        if answers:
            m.healthy, m.last_error = True, ""
        else:
            self.mark_unhealthy(m, m.last_error or "does not answer")

    def next_probe_in(self) -> float | None:
        """Seconds until the next unhealthy engine is due, if any."""
        times = [m.retry_at for m in self.members if not m.healthy]
        return max(0.0, min(times) - self.clock()) if times else None

    def succeeded(self, m: Member) -> None:
        m.failures = 0
        m.built += 1

    # --- images -------------------------------------------------------------------
    def ensure_image(self, m: Member, image_id: str, load: Callable[[Engine], None]) -> bool:
        """Make ``m``'s engine hold ``image_id``, calling ``load`` at most
        once per engine and run (it must transfer the image by digest; the
        ID is checked afterwards).  True when it had to load."""
        with self._held_lock:
            if image_id in m.held:
                return False
            lock = m._image_locks.setdefault(image_id, threading.Lock())
        # One lock per image and engine: a worker whose input is there
        # already never waits behind another worker's transfer of something
        # else, and two workers never transfer one image to one engine.
        with lock:
            with self._held_lock:
                if image_id in m.held:
                    return False
            loaded = False
            if not m.engine.has_image(image_id):
                load(m.engine)
                loaded = True
                if not m.engine.has_image(image_id):
                    raise EngineError(f"engine {m.name} did not take the image as {image_id}")
            with self._held_lock:
                m.held.add(image_id)
                if loaded:
                    m.loads[image_id] += 1
            return loaded

    def holds(self, m: Member, image_id: str) -> None:
        """Record that ``m`` holds an image (one it just built and loaded)."""
        with self._held_lock:
            m.held.add(image_id)

    def forget(self, m: Member) -> None:
        """``m`` may have lost images (a daemon error while it answers)."""
        with self._held_lock:
            m.held.clear()

    def cancel_builds(self) -> None:
        for m in self.members:
            m.engine.cancel_builds()

    def cancelled(self) -> bool:
        return any(m.engine.cancelled.is_set() for m in self.members)


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` of --engine-label."""
    from .endpoints import LABEL_KEY_RE, LABEL_VALUE_RE
    from .errors import InputError
    key, sep, value = text.partition("=")
    if not sep or not LABEL_KEY_RE.match(key) or not LABEL_VALUE_RE.match(value):
        from .text import printable
        raise InputError(f"{printable(text)!r} is not key=value (e.g. cpu=amd)", field="--engine-label")
    return key, value


def from_specs(specs: "list[EngineSpec]", *, labels: Iterable[tuple[str, str]] = (), jobs: int | None = None) -> Pool:
    """The pool of the engines a run may use: those whose labels include
    every ``labels`` pair, each checked for a safe transport before
    anything connects.  ``jobs`` (-j) sets the slots of a pool of one."""
    from . import engines as enginesmod
    from .endpoints import check_transport
    from .errors import InputError
    wanted = tuple(labels)
    chosen = [s for s in specs if all(s.label(k) == v for k, v in wanted)]
    if not chosen:
        asked = ", ".join(f"{k}={v}" for k, v in wanted)
        known = "; ".join(f"{s.name}: " + (",".join(f"{k}={v}" for k, v in s.labels) or "no labels") for s in specs)
        raise InputError(f"no engine has the labels {asked} (engines: {known})", field="--engine-label")
    members = []
    for spec in chosen:
        check_transport(spec)
        slots = max(spec.slots, jobs) if jobs and len(chosen) == 1 else spec.slots
        members.append(Member(engine=enginesmod.from_spec(spec), slots=slots, labels=spec.labels))
    return Pool(members)
