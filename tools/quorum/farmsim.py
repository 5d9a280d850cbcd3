"""The scheduler at StageX scale, on simulated time.

A generated 513-node DAG shaped like StageX's (a long bootstrap chain, a
toolchain that nearly everything needs, then layers of packages with a few
dependencies each) with long-tailed build times, run by the real Schedule
and Pool on fake engines whose clock is virtual: a build or a transfer
"takes" its seconds without waiting, so hours of building simulate in well
under a second.  What is measured:

* makespan against the lower bound max(critical path, total work / slots);
* the coordinator's own (real) time per node: everything the loop does,
  including the fake engines' bookkeeping, so an upper bound.

The order the schedule takes ready nodes in is the builder's own: longest
remaining chain first, with every node counting 1 (quorum does not know a
package's build time before it builds it).
"""
from __future__ import annotations

import hashlib
import heapq
import io
import json
import math
import random
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import networkx as nx

from .engines import Engine
from .engines.fake import FakeEngine, VirtualClock
from .pool import Member, Pool
from .schedule import Schedule

NODES = 513
# (slots, engines) pairs the issue asks for: 1, 4, 16, 64 slots over 1, 4, 16 engines.
SHAPES = ((1, 1), (4, 1), (4, 4), (16, 1), (16, 4), (16, 16), (64, 1), (64, 4), (64, 16))
# A transfer of one dependency image to an engine: a few hundred MB on a LAN.
LOAD_SECONDS = 4.0


@dataclass(frozen=True)
class Dag:
    deps: dict[str, list[str]]
    seconds: dict[str, float]
    order: list[str]

    def graph(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for n, ds in self.deps.items():
            g.add_node(n)
            g.add_edges_from((d, n) for d in ds)
        return g

    def critical_path(self) -> float:
        longest: dict[str, float] = {}
        for n in self.order:
            longest[n] = self.seconds[n] + max((longest[d] for d in self.deps[n]), default=0.0)
        return max(longest.values())

    def serial_bound(self, slots: int) -> float:
        """A tighter lower bound than the issue's: nothing that needs v can
        start before the longest chain leading to v is done, so the makespan
        is at least head(v) + (work of v and all it leads to) / slots, for
        every v.  A long serial bootstrap makes this the binding bound at
        few slots."""
        g = self.graph()
        head: dict[str, float] = {}
        for n in self.order:
            head[n] = max((head[d] + self.seconds[d] for d in self.deps[n]), default=0.0)
        best = 0.0
        for n in self.order:
            work = self.seconds[n] + sum(self.seconds[d] for d in nx.descendants(g, n))
            best = max(best, head[n] + work / slots)
        return best

    def depth(self) -> int:
        level: dict[str, int] = {}
        for n in self.order:
            level[n] = 1 + max((level[d] for d in self.deps[n]), default=0)
        return max(level.values())


def stagex_like(n: int = NODES, seed: int = 20251123) -> Dag:
    """A DAG with StageX's shape: a bootstrap chain of 16 stages (hours of
    compilers), a 24-package toolchain built on its end that every later
    package needs some of, then packages on 1-4 toolchain pieces and 0-5
    earlier packages (mostly recent ones: libraries before what links
    them).  Build times are log-normal (median 2 min, a tail of hours)."""
    rng = random.Random(seed)
    deps: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    chain = [f"stage{i:02d}" for i in range(16)]
    for i, name in enumerate(chain):
        deps[name] = [chain[i - 1]] if i else []
        seconds[name] = rng.uniform(600, 3600)
    tool = [f"tool{i:02d}" for i in range(24)]
    for i, name in enumerate(tool):
        deps[name] = sorted({chain[-1], *rng.sample(tool[:i], min(i, rng.randint(0, 2)))})
        seconds[name] = min(4 * 3600.0, rng.lognormvariate(math.log(300), 1.0))
    pkgs: list[str] = []
    for i in range(n - len(chain) - len(tool)):
        name = f"pkg{i:03d}"
        d = set(rng.sample(tool, rng.randint(1, 4)))
        for _ in range(rng.randint(0, 5)):
            if pkgs:
                # mostly the last few dozen packages: long chains of libraries
                d.add(pkgs[max(0, len(pkgs) - 1 - int(rng.expovariate(1 / 30)))])
        deps[name] = sorted(d)
        seconds[name] = min(4 * 3600.0, max(5.0, rng.lognormvariate(math.log(120), 1.4)))
        pkgs.append(name)
    return Dag(deps=deps, seconds=seconds, order=chain + tool + pkgs)


@dataclass
class SimResult:
    slots: int
    engines: int
    makespan: float
    lower_bound: float                 # the issue's: max(critical path, work / slots)
    serial_bound: float                # a tighter one (Dag.serial_bound)
    critical_path: float
    work: float
    transfers: int
    coordinator_seconds: float
    nodes: int

    @property
    def ratio(self) -> float:
        return self.makespan / self.lower_bound

    @property
    def per_node_ms(self) -> float:
        return self.coordinator_seconds / self.nodes * 1000


def _image(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def _context(name: str) -> bytes:
    """The smallest build context a fake engine reads a package name from."""
    buf = io.BytesIO()
    data = f"# Rendered by quorum for {name} 1: simulated\n".encode()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("Containerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def simulate(dag: Dag, slots: int, engines: int, *, load_seconds: float = LOAD_SECONDS) -> SimResult:
    """Run the DAG on ``engines`` fake engines sharing ``slots`` slots
    (as evenly as they divide), on virtual time."""
    clock = VirtualClock()
    now = [0.0]
    fakes = [FakeEngine(name=f"e{i:02d}", delays=dag.seconds, load_seconds=load_seconds, clock=clock)
             for i in range(engines)]
    per, extra = divmod(slots, engines)
    pool = Pool([Member(engine=f, slots=per + (1 if i < extra else 0)) for i, f in enumerate(fakes)],
                clock=lambda: now[0])
    with tempfile.TemporaryDirectory(prefix="quorum-farmsim-") as tmp:
        archives: dict[str, Path] = {}
        for n in dag.order:
            # What a fake engine's load reads: the image's config digest.
            p = Path(tmp) / f"{n}.tar"
            data = json.dumps([{"Config": "blobs/sha256/" + _image(n).split(":")[1], "Layers": []}]).encode()
            with tarfile.open(p, "w") as tf:
                ti = tarfile.TarInfo("manifest.json")
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            archives[n] = p
        contexts = {n: _context(n) for n in dag.order}
        t0 = time.perf_counter()
        sched = Schedule(dag.graph(), dag.order)
        running: list[tuple[float, int, str, Member]] = []
        seq = 0
        done = 0
        def transfer(dep: str) -> Callable[[Engine], None]:
            return lambda eng: eng.load(archives[dep])

        while done < len(dag.order):
            while True:
                ready = sched.take()
                if ready is None:
                    break
                placed = pool.place([_image(d) for d in dag.deps[ready]])
                if placed is None:
                    sched.put_back(ready)
                    break
                clock.take()
                for d in dag.deps[ready]:
                    pool.ensure_image(placed, _image(d), transfer(d))
                placed.engine.build(io.BytesIO(contexts[ready]))
                seq += 1
                heapq.heappush(running, (now[0] + clock.take(), seq, ready, placed))
            finish, _, n, m = heapq.heappop(running)
            now[0] = finish
            pool.release(m)
            pool.holds(m, _image(n))       # the artifact is loaded back where it was built
            pool.succeeded(m)
            sched.finished(n)
            done += 1
        coordinator = time.perf_counter() - t0
    work = sum(dag.seconds.values())
    cp = dag.critical_path()
    return SimResult(slots=slots, engines=engines, makespan=now[0], lower_bound=max(cp, work / slots),
                     serial_bound=max(cp, work / slots, dag.serial_bound(slots)),
                     critical_path=cp, work=work, transfers=sum(sum(m.loads.values()) for m in pool.members),
                     coordinator_seconds=coordinator, nodes=len(dag.order))


def run_all(dag: Dag | None = None, shapes: tuple[tuple[int, int], ...] = SHAPES) -> list[SimResult]:
    dag = dag or stagex_like()
    return [simulate(dag, s, e) for s, e in shapes]
