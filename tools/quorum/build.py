"""Running the graph: order, parallelism, caching, and the steps of one build.

The library emits events (plain dicts, see docs/spec/events.md) and returns a
Result; it never prints.  The CLI turns events into a live display or JSON
lines, and tests assert on them.

The scheduler (Builder.run) takes ready nodes from a Schedule (schedule.py:
order, gates, skips) and places each on an engine of a Pool (pool.py: slots,
health, affinity, transfers); workers build, the scheduling thread settles
each outcome (done, failed, retried, requeued).  Wherever a node was built,
the coordinator normalises and publishes it, so the manifest is the same.

One package's build, step by step (each a function below):
    inputs   -> input hash; a whole artifact for it in out/ means "cached"
    fetch    -> sources into the cache, sha256-checked
    load     -> seed and dependency artifacts into the node's engine, by digest
    render   -> Containerfile + build.sh into a deterministic context tar
    engine   -> build with the network off
    oci      -> the one layer, normalised, written as an OCI layout
    test     -> the smoke test, in the build environment plus the artifact
    store    -> publish out/<name>/ atomically, then its record
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import canon
from . import graph as graphmod
from . import attest, imageref, inputs, layercheck, manifest, oci, render, seed as seedmod, temps
from . import environment as envmod
from .engines import BuildOptions, Cancelled, Engine, EngineFacts
from .engines.docker import DockerEngine, new_owner
from .errors import BuildError, EngineError, FetchError, InputError, MachineError, QuorumError, describe_os_error
from .fetch import SourceCache
from .model import Environment, EnvironmentGate, Package, Seed, Tree, twin_name
from .pool import Member, Pool
from .schedule import Schedule
from .store import Record, Store

Emit = Callable[[dict], None]


@dataclass(frozen=True)
class Options:
    jobs: int = 1
    targets: tuple[str, ...] = ()          # empty: the whole tree
    reuse: bool = True                     # take artifacts from out/ when the input hash matches
    nocache: bool = False                  # engine layer cache off (reproduce)
    keep_going: bool = False               # after a failure, still build what does not depend on it
    archives: tuple[str, ...] = ()         # also write out/<name>.tgz for these
    settings: render.Settings = render.Settings()
    cpuset: str | None = None              # CPUs a build may use ("0", "0,1")
    write_manifest: bool = True
    # Rebuilds (reproduce): these nodes are built whatever out/ holds, and
    # any other node may be taken from ``reuse_store`` (the main out/) when
    # its input hash matches there.
    force: tuple[str, ...] = ()
    reuse_store: Path | None = None
    # A digest that changed while its input hash did not is nondeterminism:
    # the manifest keeps the old digest unless this is set.
    accept_new_digests: bool = False
    # Rebuilds (reproduce --elsewhere): each node of ``force`` runs on an
    # engine other than the one that built it (the identity in its record
    # in ``reuse_store``).
    elsewhere: bool = False


@dataclass
class NodeResult:
    name: str
    kind: str
    version: str
    status: str = "queued"                 # queued | cached | built | failed | skipped
    digest: str | None = None
    config_digest: str | None = None
    layer_digest: str | None = None
    input_hash: str | None = None
    size: int = 0
    seconds: float = 0.0
    error: str | None = None
    failure: str | None = None             # "build" | "engine" | "fetch" | "definition"
    log_path: str | None = None
    log_tail: list[str] = field(default_factory=list)
    engine: str | None = None              # name of the engine that built it (None: cached, or not built)

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Drift:
    name: str
    input_hash: str
    manifest_digest: str
    new_digest: str

    def to_json(self) -> dict:
        return {"name": self.name, "input_hash": self.input_hash, "manifest_digest": self.manifest_digest,
                "new_digest": self.new_digest}


@dataclass
class Result:
    nodes: dict[str, NodeResult]
    order: list[str]
    manifest_path: Path | None = None
    manifest_changed: bool | None = None
    seconds: float = 0.0
    gates: dict[str, dict] = field(default_factory=dict)
    # Nodes rebuilt from unchanged inputs to another digest than the
    # manifest's: evidence of nondeterminism (the manifest was not rewritten).
    drifted: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (all(n.status in ("cached", "built") for n in self.nodes.values())
                and all(g["result"] == "pass" for g in self.gates.values()) and not self.drifted)

    def failed(self) -> list[NodeResult]:
        return [self.nodes[n] for n in self.order if self.nodes[n].status == "failed"]


LOG_TAIL = 25
ENGINE_FILE = Path(".quorum") / "engine.json"
# Every engine that built into a store: {identity: facts}, so reproduce can
# name the engine behind each artifact's record (docs/spec/store.md).
ENGINES_FILE = Path(".quorum") / "engines.json"

# How often one node is moved to another engine after the engine under it
# was lost, before its failure is reported as the engine's.
MAX_REQUEUES = 3


def recorded_engine(store: Store) -> dict | None:
    """The facts the last build that built anything into ``store`` recorded
    about its engine (the one that built most; reproduce names it beside the
    rebuild's engine)."""
    from .safeio import load_json
    try:
        doc = load_json(store.out / ENGINE_FILE, limit=1 << 16)
    except QuorumError:
        return None
    return doc if isinstance(doc, dict) else None


def recorded_engines(store: Store) -> dict[str, dict]:
    """{identity: facts} of every engine that built into ``store``."""
    from .safeio import load_json
    try:
        doc = load_json(store.out / ENGINES_FILE, limit=1 << 20)
    except QuorumError:
        return {}
    return {k: v for k, v in doc.items() if isinstance(v, dict)} if isinstance(doc, dict) else {}


# Seconds an interrupted build gives its workers to stop before it returns
# (the CLI then exits; the lock goes with the process).
INTERRUPT_GRACE = 1.2


@dataclass
class _Attempt:
    """One node's run on one engine, and how often it was tried."""
    name: str
    member: Member | None = None
    retries: int = 0          # reruns after a daemon error on an engine that still answers
    requeues: int = 0         # moves to another engine after one was lost


@dataclass
class _Outcome:
    """What a worker hands back: success, or the engine's failure with
    whether the engine still answered afterwards (asked in the worker, so
    the scheduling thread never waits on a dead host)."""
    error: EngineError | None = None
    engine_alive: bool = True


# A node's work, given the engine it was placed on (None: the coordinator's
# own work, which needs no engine).
Job = Callable[[Member | None], None]


def _placed(member: Member | None) -> Member:
    """The engine a package build was placed on (the scheduler places every
    node that _needs_engine)."""
    if member is None:
        raise QuorumError("internal error: a package build was started without an engine")
    return member


class Builder:
    def __init__(self, tree: Tree, *, store: Store | None = None, engine: Engine | None = None,
                 pool: Pool | None = None, cache: SourceCache | None = None, options: Options = Options(),
                 emit: Emit = lambda e: None):
        self.tree = tree
        self.store = store or Store(tree.out)
        if pool is None:
            # One engine (the local one unless given), -j builds at once.
            pool = Pool.of(engine if engine is not None else DockerEngine(), slots=max(1, options.jobs))
        self.pool = pool
        self.cache = cache or SourceCache()
        self.opt = options
        self._emit = emit
        self._emit_lock = threading.Lock()
        self.graph = graphmod.build_graph(tree)
        self.results: dict[str, NodeResult] = {}
        self.reuse_store = Store(options.reuse_store) if options.reuse_store else None
        # Which store holds each node's artifact (for loading it into an
        # engine): ours, or the one reused from.
        self._store_of: dict[str, Store] = {}
        self.gates: dict[str, dict] = {}
        self._env_gates = {g.node: g for g in tree.config.environment_gates}
        # Names this run's engine images (see DockerEngine.release): only
        # images whose making step carries it are ever removed by this run.
        self.owner = new_owner()
        self._jobs: dict[str, Job] = {}
        self._attempts: dict[str, _Attempt] = {}
        # The engine each node runs (ran) on, named in its events.
        self._engine_of: dict[str, str] = {}
        # Rebuilds elsewhere: node -> identity of the engine that built the
        # artifact being reproduced, which its rebuild must not run on.
        self._avoid: dict[str, str] = {}
        # Images every package build needs besides its seed and deps (the
        # rebuild's preload shim), with how to transfer each to an engine
        # that lacks it.
        self.extra_images: dict[str, Callable[[Engine], None]] = {}

    @property
    def engine(self) -> Engine:
        """The first engine of the pool (for callers that knew one engine)."""
        return self.pool.members[0].engine

    def emit(self, event: dict) -> None:
        # Every event about a node names the engine it runs on (None when it
        # ran on none: cached, skipped, refused before it started).
        node = event.get("name") if event.get("event") != "gate" else None
        node = node if node in self.results else event.get("package")
        if node in self.results and "engine" not in event:
            event = {**event, "engine": self._engine_of.get(node)}
        with self._emit_lock:
            self._emit(event)

    # --- the scheduler ------------------------------------------------------
    def run(self) -> Result:
        t0 = time.monotonic()
        order = self._plan()
        if self.opt.elsewhere:
            self._place_elsewhere()
        sched = Schedule(self.graph, order, gates=self.tree.config.gates, check_gate=self._check_gate)
        self.emit({"event": "plan", "order": order, "jobs": self.pool.slots,
                   "engines": [{"name": m.name, "slots": m.slots} for m in self.pool.members]})
        with self.store.lock() as held:
            # Everything in out/.tmp/ was staged by a holder of this lock,
            # and a holder keeps it until its last worker stops: so now
            # its owners are provably gone.
            self.store.clean_tmp()
            workers = ThreadPoolExecutor(max_workers=self.pool.slots, thread_name_prefix="build")
            running: dict[Future, _Attempt] = {}
            stop = False
            try:
                while True:
                    stop = self._start_ready(sched, workers, running, stop)
                    if not running:
                        if stop or not sched.has_ready():
                            break
                        # Ready work, but every engine it may use is in its
                        # back-off: wait for the next probe.
                        time.sleep(min(self.pool.next_probe_in() or 0.0, 1.0) + 0.01)
                        continue
                    done, _ = wait(running, timeout=self.pool.next_probe_in(), return_when=FIRST_COMPLETED)
                    for fut in done:
                        stop = self._settle(sched, running.pop(fut), fut) or stop
            except KeyboardInterrupt:
                self._interrupt(workers, running, held)
                raise
            finally:
                if not self.engine_cancelled():
                    workers.shutdown(wait=True)
            for n in sched.stop():   # whatever was never started because of a stop
                self.results[n].status, self.results[n].error = "skipped", "build stopped after a failure"
                self.emit({"event": "skipped", "name": n, "because": "stop"})

            result = Result(nodes=self.results, order=order, gates=self.gates)
            if result.ok:   # every node built or cached, every gate passed
                self._write_archives()
                if self.opt.write_manifest:
                    prev = manifest.load(self.tree.manifest_path)
                    self._check_drift(result, prev)
                    if not self.opt.targets and not result.drifted:
                        self._write_manifest(result, prev)
        self._record_engines()
        result.seconds = time.monotonic() - t0
        self.emit({"event": "finish", "ok": result.ok, "seconds": round(result.seconds, 3),
                   "manifest_changed": result.manifest_changed})
        return result

    def _plan(self) -> list[str]:
        """The nodes this run needs, in build order, each with a result."""
        g = self.graph
        need = graphmod.closure(g, self.opt.targets) if self.opt.targets else set(g.nodes)
        # Building anything on a gate member means building the whole gate:
        # otherwise `quorum build <something downstream>` would bypass it.
        for _, members in self.tree.config.gates:
            if need & set(members):
                need |= graphmod.closure(g, members)
        order = [n for n in graphmod.order(g) if n in need]
        for n in order:
            kind, version = self._describe(n)
            self.results[n] = NodeResult(name=n, kind=kind, version=version)
        return order

    def _place_elsewhere(self) -> None:
        """Which engine each rebuild must avoid; refuse at once when the
        pool has no other engine for one of them (a rebuild on the very
        engine that built it would prove less than the user asked for)."""
        if self.reuse_store is None:
            return
        for n in self.opt.force:
            rec = self.reuse_store.record(n)
            if rec is not None and rec.engine:
                self._avoid[n] = rec.engine
        for n, identity in sorted(self._avoid.items()):
            if not self.pool.could_run(self._allowed(n)):
                names = ", ".join(m.name for m in self.pool.members)
                raise InputError(f"every engine in the pool ({names}) is the engine that built {n} "
                                  f"(identity {identity}): add another with --engine URL", field="--elsewhere")

    def _start_ready(self, sched: Schedule, workers: ThreadPoolExecutor, running: dict[Future, _Attempt],
                     stop: bool) -> bool:
        """Start every ready node an engine has a free slot for.  Decides
        first what needs no engine (input hashes, cache hits): a no-op build
        never starts a thread or connects to an engine.  Returns ``stop``."""
        self._probe_due()
        blocked: list[str] = []
        while not stop:
            n = sched.take()
            if n is None:
                break
            if n not in self._jobs:
                try:
                    job = self._prepare(n)
                except QuorumError as e:
                    self._record_failure(n, e, "definition")
                    self._skip(sched.failed(n))
                    stop = not self.opt.keep_going
                    continue
                if job is None:          # cached
                    self._skip(sched.finished(n))
                    continue
                self._jobs[n] = job
            attempt = self._attempts.setdefault(n, _Attempt(n))
            if len(running) >= self.pool.slots:
                blocked.append(n)
                break
            member = None
            if self._needs_engine(n):
                member = self.pool.place(self._wants(n), self._allowed(n))
            # else: the coordinator's own work, on no engine and no slot (the
            # cap on running jobs still holds).
            if member is None and self._needs_engine(n):
                # No engine that may take it answers: fail now, as a single
                # engine that is gone does, rather than wait on back-offs.
                if not self.pool.could_run(self._allowed(n), healthy_only=True):
                    self._record_failure(n, self._no_engine_for(n), "engine")
                    self._skip(sched.failed(n))
                    stop = not self.opt.keep_going
                    continue
                blocked.append(n)        # its engines are busy or backing off; others may fit elsewhere
                continue
            attempt.member = member
            if member is not None:
                self._engine_of[n] = member.name
            # Again after a retry or requeue: the start names the new engine.
            self.results[n].status = "running"
            self.emit({"event": "start", "name": n, "kind": self.results[n].kind,
                       "input_hash": self.results[n].input_hash})
            running[workers.submit(self._work, attempt, self._jobs[n])] = attempt
        for n in blocked:
            sched.put_back(n)
        return stop

    def _needs_engine(self, n: str) -> bool:
        """Packages and twins are built on an engine; seeds, environments
        and environment gates are the coordinator's own work."""
        return n in self.tree.packages or n in self.tree.twins

    def _wants(self, n: str) -> list[str]:
        """The images a node's build needs on its engine (affinity)."""
        twin = self.tree.twins.get(n)
        pkg = twin.package if twin else self.tree.packages[n]
        names = [twin.environment if twin else self.tree.base_of(pkg), *pkg.deps]
        return [d for d in (self.results[x].config_digest for x in names if x and x in self.results) if d]

    def _allowed(self, n: str) -> Callable[[Member], bool]:
        avoid = self._avoid.get(n)
        if not avoid:
            return lambda m: True
        return lambda m: m.identity != avoid

    def _no_engine_for(self, n: str) -> EngineError:
        lost = [m for m in self.pool.members if self._allowed(n)(m) and not m.healthy]
        if lost:
            return EngineError(lost[0].last_error if len(self.pool.members) == 1 else
                               "no engine of the pool answers: " + "; ".join(f"{m.name}: {m.last_error}" for m in lost))
        return EngineError(f"no engine in the pool may rebuild {n}: every one is the engine that built it "
                           f"({self._avoid.get(n)}); add another with --engine URL")

    def _probe_due(self) -> None:
        """Unhealthy engines whose back-off is over: back in the pool if
        they answer now."""
        for m in self.pool.due():
            ok = m.engine.answers(timeout=2)
            self.pool.probed(m, ok)
            self.emit({"event": "engine", "engine": m.name, "health": m.health(),
                       "error": None if ok else m.last_error,
                       "retry_in": None if ok else round(max(0.0, m.retry_at - self.pool.clock()), 1)})

    def _work(self, attempt: _Attempt, job: Job) -> _Outcome:
        """A worker: run the node's build on its engine.  The engine's own
        failure comes back as an outcome, with whether it still answers."""
        member = attempt.member
        try:
            job(member)
            return _Outcome()
        except EngineError as e:
            if self.engine_cancelled():
                raise Cancelled() from None
            if member is None:
                raise      # no engine of the pool was involved: nothing to retry elsewhere
            return _Outcome(error=e, engine_alive=member.engine.answers())

    def _settle(self, sched: Schedule, attempt: _Attempt, fut: Future) -> bool:
        """A worker finished: record what happened, release, requeue or
        skip.  Returns whether the build must stop (a failure without
        --keep-going)."""
        n, member = attempt.name, attempt.member
        if member is not None:
            self.pool.release(member)
        try:
            outcome = fut.result()
        except QuorumError as e:
            kind = ("engine" if isinstance(e, EngineError) else "fetch" if isinstance(e, FetchError)
                    else "build" if isinstance(e, BuildError) else "definition")
            return self._fail(sched, n, e, kind)
        except OSError as e:
            # The machine (disk full, I/O error, permissions): never the
            # package's fault, so never a "build" failure that reproduce
            # could call a MISMATCH.  A write() names no file; the builder
            # writes under out/.
            msg, _ = describe_os_error(e, where=str(self.store.out))
            return self._fail(sched, n, MachineError(msg), "machine")
        except Exception as e:
            # A bug in quorum: said as such, with where it happened.
            import traceback
            err = QuorumError(f"internal error: {e.__class__.__name__}: {e}")
            self.results[n].log_tail = traceback.format_exc().splitlines()[-12:]
            return self._fail(sched, n, err, "internal")
        if outcome.error is None:
            if member is not None:
                self.pool.succeeded(member)
            self._skip(sched.finished(n))
            return False
        err = outcome.error
        assert member is not None     # _work re-raises an engine error outside the pool
        if outcome.engine_alive:
            # A shared engine can lose an image under a build, or hiccup:
            # once more (it may have lost what it held: check again); a
            # second failure is reported as the engine's.
            if attempt.retries >= 1:
                return self._fail(sched, n, err, "engine")
            attempt.retries += 1
            self.pool.forget(member)
            self.emit({"event": "retry", "name": n, "error": str(err)})
            sched.put_back(n)
            return False
        # The engine is gone: out of the pool until it answers again, and
        # the node moves elsewhere if it can.  Never the package's failure.
        delay = self.pool.mark_unhealthy(member, str(err))
        self.emit({"event": "engine", "engine": member.name, "health": "unhealthy", "error": str(err),
                   "retry_in": round(delay, 1)})
        if attempt.requeues < MAX_REQUEUES and self.pool.could_run(self._allowed(n), healthy_only=True):
            attempt.requeues += 1
            self.emit({"event": "requeue", "name": n, "error": str(err)})
            sched.put_back(n)
            return False
        return self._fail(sched, n, err, "engine")

    def _fail(self, sched: Schedule, n: str, e: QuorumError, kind: str) -> bool:
        self._record_failure(n, e, kind)
        self._skip(sched.failed(n))
        return not self.opt.keep_going

    def _skip(self, skipped: list[tuple[str, str]]) -> None:
        for d, because in skipped:
            r = self.results[d]
            r.status, r.error = "skipped", f"{because} failed"
            self.emit({"event": "skipped", "name": d, "because": because})

    def _interrupt(self, workers: ThreadPoolExecutor, running: dict[Future, _Attempt], held) -> None:
        """The first Ctrl-C: start nothing more, cut the running engine
        builds (the engine kills their containers), and give the workers a
        moment to stop.  The lock stays held until the last worker has
        stopped (or the process is gone), so no other quorum process can
        take out/ while one of ours still writes to it.  A second Ctrl-C
        cuts the wait short."""
        held.keep_while(list(running))
        workers.shutdown(wait=False, cancel_futures=True)
        self.pool.cancel_builds()
        for a in running.values():
            self.results[a.name].status, self.results[a.name].error = "failed", "interrupted"
        try:
            wait(running, timeout=INTERRUPT_GRACE)
        except KeyboardInterrupt:
            pass

    def engine_cancelled(self) -> bool:
        return self.pool.cancelled()

    def _check_gate(self, gname: str, members: list[str]) -> bool:
        """Compare the gate's artifacts; record the verdict for the manifest.
        What must be identical is the layer, i.e. the files: the artifacts'
        manifest digests differ anyway, since each names its package."""
        digests = {m: self.results[m].layer_digest for m in members}
        ok = len(set(digests.values())) == 1
        check = {"kind": "identical", "members": sorted(members), "result": "pass" if ok else "fail",
                 "digests": dict(sorted(digests.items()))}
        if not ok:
            check["differences"] = self._gate_differences(members)
        self.gates[gname] = check
        self.emit({"event": "gate", "name": gname, **check})
        return ok

    def _gate_differences(self, members: list[str]) -> list[str]:
        """The first differing files between the first member and each other
        one, for the report (the full diff is one `quorum diff` away)."""
        from . import diff as diffmod
        out = []
        a = members[0]
        for b in members[1:]:
            try:
                res = diffmod.compare(self._layout_of(a),
                                      self._layout_of(b), labels=(a, b))
            except QuorumError as e:
                out.append(f"{a} vs {b}: could not compare ({e})")
                continue
            paths = [c.path for c in res.changed][:10] + [f"+{e.path}" for e in res.added][:5] \
                + [f"-{e.path}" for e in res.removed][:5]
            out.append(f"{a} vs {b}: " + (", ".join(paths) if paths else "image config differs"))
        return out

    def _check_environment_gate(self, gate: EnvironmentGate) -> None:
        """Each member against its twin (docs/spec/environment.md); the
        verdict is recorded for the manifest, and a difference that is not
        exempt fails the gate's node, so nothing built in the environment is
        built and no manifest is written."""
        r = self.results[gate.node]
        pairs = sorted((t.package.name, t.name) for t in self.tree.twins.values() if t.gate == gate.name)
        digests = {}
        for p, t in pairs:
            digests[p], digests[t] = self.results[p].layer_digest, self.results[t].layer_digest
        differ = [(p, t) for p, t in pairs if digests[p] != digests[t]]
        exempt = dict(gate.exempt)
        failing = [(p, t) for p, t in differ if p not in exempt]
        check: dict = {"kind": "environment", "environment": gate.environment,
                       "members": [p for p, _ in pairs], "digests": dict(sorted(digests.items())),
                       "result": "fail" if failing else "pass"}
        if exempt:
            check["exempt"] = {p: {"reason": why, "identical": digests[p] == digests[twin_name(p, gate.environment)]}
                               for p, why in sorted(exempt.items())}
        if failing:
            check["differences"] = [d for p, t in failing for d in self._gate_differences([p, t])]
        self.gates[gate.name] = check
        self.emit({"event": "gate", "name": gate.name, **check})
        if failing:
            first = check["differences"][0]
            more = f" (and {len(failing) - 1} more package(s))" if len(failing) > 1 else ""
            raise BuildError(f"gate {gate.name}: {failing[0][0]} built in {gate.environment} differs from its build "
                             f"in {self.tree.base_of(self.tree.packages[failing[0][0]])}{more}; first differing "
                             f"files: {first}", package=gate.node)
        r.status = "built"
        self.emit({"event": "built", "name": gate.node, "digest": None, "size": 0, "seconds": 0.0})

    def _record_failure(self, n: str, e: QuorumError, kind: str) -> None:
        r = self.results[n]
        r.status, r.failure, r.error = "failed", kind, str(e)
        if isinstance(e, BuildError):
            r.log_path, r.log_tail = e.log_path, e.log_tail
        self.emit({"event": "failed", "name": n, "failure": kind, "error": r.error, "log": r.log_path,
                   "log_tail": r.log_tail})

    # --- inputs: hash, and the cache decision --------------------------------
    def _describe(self, n: str) -> tuple[str, str]:
        """A node's kind and version (docs/spec/manifest.md; twins and gate
        nodes are not manifest entries, see docs/spec/environment.md)."""
        t = self.tree
        if n in t.seeds:
            return "seed", seedmod.version(t.seeds[n])
        if n in t.environments:
            return "environment", envmod.version(t.environments[n])
        if n in t.twins:
            return "twin", t.twins[n].package.version
        if n in self._env_gates:
            return "gate", ""
        return t.packages[n].kind, t.packages[n].version

    def _prepare(self, n: str) -> Job | None:
        """Compute the input hash; return None when the artifact is already
        in out/ (and record it as cached), else the callable that builds it."""
        r = self.results[n]
        epoch = self.tree.config.source_date_epoch
        job: Job
        if n in self._env_gates:
            gate = self._env_gates[n]
            # Never cached: comparing digests costs nothing, and the verdict
            # belongs to this run's record.
            return lambda member: self._check_environment_gate(gate)
        if n in self.tree.environments:
            env = self.tree.environments[n]
            r.input_hash = envmod.input_hash(env, {m: self.results[m].digest or "" for m in env.members}, epoch)
            job = lambda member: self._build_environment(env)
        elif n in self.tree.seeds:
            s = self.tree.seeds[n]
            if not s.locked:
                raise QuorumError(f"seed {n!r} is not locked: run 'quorum seed lock {n}'",
                                  file=s.definition_file, field="packages")
            r.input_hash = inputs.seed_input_hash(s, epoch)
            job = lambda member: self._build_seed(s)
        else:
            # A twin is its package's definition, unchanged, built in the
            # gate's environment instead of the package's seed.
            twin = self.tree.twins.get(n)
            pkg = twin.package if twin else self.tree.packages[n]
            seed_name = twin.environment if twin else self.tree.base_of(pkg)
            seed_ref = self._ref(seed_name) if seed_name else None
            deps = [self._ref(d) for d in pkg.deps]
            seed_image = seed_ref.image if seed_ref else None
            # The input hash is always taken from the canonical rendering:
            # reproduce's variations (build path, umask, …) are perturbations
            # that must not matter, not inputs.
            canonical = render.render(pkg, seed_image=seed_image, deps=deps, epoch=epoch)
            rendered = canonical
            if self.opt.settings != render.Settings():
                rendered = render.render(pkg, seed_image=seed_image, deps=deps, epoch=epoch,
                                         settings=self.opt.settings)
            r.input_hash = inputs.package_input_hash(
                pkg, canonical, seed_digest=self.results[seed_name].digest if seed_name else None,
                dep_digests={d: self.results[d].digest for d in pkg.deps}, epoch=epoch)
            # Under its own name (store, log, engine owner), rendered as
            # the package itself: a template that prints its name must not
            # make the twin differ.
            built = replace(pkg, name=n, kind="twin") if twin else pkg
            job = lambda member: self._build_package(built, rendered, seed_ref, deps, _placed(member))
        if self.opt.reuse and n not in self.opt.force:
            for store in (self.store, self.reuse_store):
                rec = store.lookup(n, r.input_hash) if store is not None else None
                if rec is not None:
                    r.status, r.digest, r.config_digest, r.size = "cached", rec.digest, rec.config_digest, rec.size
                    r.layer_digest = rec.layer_digest
                    self._store_of[n] = store
                    self.emit({"event": "cached", "name": n, "digest": rec.digest})
                    return None
        return job

    def _ref(self, name: str) -> render.DepRef:
        return render.DepRef(name=name, image=self.results[name].config_digest)

    # --- load: artifacts into an engine, by digest ----------------------------
    def ensure_loaded(self, name: str, member: Member) -> None:
        """Make ``member``'s engine hold exactly out/<name>/'s image, loading
        it at most once per engine.  The engine's image ID is the sha256 of
        the config blob, so checking the ID after a load proves the engine
        has our bytes, not a look-alike tag."""
        r = self.results[name]
        if self._load(name, self._layout_of(name), r.config_digest, member):
            # Transfers are what a pool costs: each one is shown.
            self.emit({"event": "load", "name": name, "engine": member.name, "image": r.config_digest})
            self._tag(name, r, member.engine)

    def _layout_of(self, name: str) -> Path:
        """Where a node's artifact is: our store, or the one it was reused from."""
        return self._store_of.get(name, self.store).layout(name)

    def _load(self, name: str, layout: Path, config_digest: str, member: Member) -> bool:
        """Load ``layout`` into the engine unless it holds the image already;
        True if it had to."""
        def transfer(engine: Engine) -> None:
            with self.store.staging(f"load-{name}") as tmp:
                arch = tmp / "image.tar"
                with open(arch, "wb") as f:
                    oci.write_archive(layout, f)
                engine.load(arch)
        return self.pool.ensure_image(member, config_digest, transfer)

    def _image_ref(self, name: str) -> imageref.ImageRef:
        return imageref.reference(self.tree.config.namespace, name, self.results[name].version)

    def _tag(self, name: str, r: NodeResult, engine: Engine) -> None:
        ref = self._image_ref(name)
        engine.tag(r.config_digest, ref.repository, ref.tag)

    # --- the builds -----------------------------------------------------------
    def _build_seed(self, s: Seed) -> None:
        t0 = time.monotonic()
        debs = seedmod.fetch_debs(s, self.cache, emit=self.emit)
        self._assemble(s.name, t0, lambda raw: seedmod.merge(s, debs, raw), env=dict(s.env), arch=s.arch)

    def _build_environment(self, env: Environment) -> None:
        t0 = time.monotonic()
        layers = [(m, oci.read_layout(self._layout_of(m))["layer_path"]) for m in env.members]
        self._assemble(env.name, t0, lambda raw: envmod.merge(env, layers, raw))

    def _assemble(self, name: str, t0: float, merge: Callable[[Path], None], **config: Any) -> None:
        """A seed or an environment: a union of file trees merged here (no
        engine builds it), normalised like every artifact's layer, written
        as a one-layer image and published."""
        r = self.results[name]
        epoch = self.tree.config.source_date_epoch
        with self.store.staging(name) as st:
            raw = st / "merged.tar"
            merge(raw)
            layer_file = st / "layer.tar"
            with open(layer_file, "wb") as f:
                layer = oci.normalize_layer(raw, f, epoch=epoch)
            raw.unlink()
            img = oci.write_layout(st / "layout", layer_file, layer, epoch=epoch, name=name, version=r.version,
                                   namespace=self.tree.config.namespace, **config)
            self._publish(name, st / "layout", img, r, t0, None)

    def _build_package(self, pkg: Package, rendered: render.Rendered, seed_ref, deps, member: Member) -> None:
        engine = member.engine
        t0 = time.monotonic()
        r = self.results[pkg.name]
        epoch = self.tree.config.source_date_epoch
        sources = {s.file: self.cache.fetch(s, emit=self.emit, where=str(pkg.definition_file)) for s in pkg.sources}
        for ref in ([seed_ref] if seed_ref else []) + deps:
            self.ensure_loaded(ref.name, member)
        for image_id, transfer in sorted(self.extra_images.items()):
            self.pool.ensure_image(member, image_id, transfer)
        log_final = self.store.log_path(pkg.name)
        with self.store.staging(pkg.name) as st:
            log = _Log(st / "build.log", lambda line: self.emit({"event": "log", "name": pkg.name, "line": line}))
            try:
                ctx = st / "context.tar"
                with open(ctx, "wb") as f:
                    render.write_context(f, pkg, rendered, sources, epoch)
                bopts = BuildOptions(nocache=self.opt.nocache, cpuset=self.opt.cpuset)
                owner = f"{self.owner}/build/{pkg.name}"
                counter = layercheck.Counter()

                def on_line(line: str) -> None:
                    counter.line(line)
                    log.line(line)
                try:
                    with open(ctx, "rb") as f:
                        image = engine.build(f, dockerfile=render.CONTAINERFILE_PATH, opts=bopts,
                                                  on_line=on_line, owner=owner)
                except BuildError as e:
                    raise self._build_error(pkg, f"build failed: {e.message}", log, log_final) from None
                ctx.unlink()
                try:
                    layer_raw = engine.single_layer(image, st)
                finally:
                    # The artifact is taken from the layer; the engine's
                    # image (this build's own: see Engine.release) goes,
                    # refused or not.
                    engine.release(image, owner)
                # Only the default template's last stage is "copy /rootfs": a
                # package's own Containerfile may take its files from anywhere.
                expected = counter.expected if pkg.containerfile is None else None
                layercheck.check(layer_raw, expected, package=pkg.name,
                                 endpoint=f"the engine at {engine.endpoint}")
                layer_file = st / "layer.tar"
                with open(layer_file, "wb") as f:
                    try:
                        layer = oci.normalize_layer(layer_raw, f, epoch=epoch)
                    except QuorumError as e:
                        raise self._build_error(pkg, f"unsafe artifact: {e.message}", log, log_final) from None
                layer_raw.unlink()
                img = oci.write_layout(st / "layout", layer_file, layer, epoch=epoch, name=pkg.name,
                                       version=pkg.version, namespace=self.tree.config.namespace)
                log.line(f"quorum: artifact {img.digest} ({layer.entries} entries, {img.size} bytes)")
                # The artifact (not the engine's image) is what dependents
                # and the smoke test use: load it back first.
                r.config_digest = img.config_digest
                self._load(pkg.name, st / "layout", img.config_digest, member)
                if rendered.test_sh is not None:
                    self._smoke_test(engine, pkg, rendered, img, seed_ref, deps, sources, st, log, log_final, bopts)
            finally:
                log.close(log_final)
            self._publish(pkg.name, st / "layout", img, r, t0, member)

    def _build_error(self, pkg: Package, msg: str, log: "_Log", final: Path) -> BuildError:
        return BuildError(msg, package=pkg.name, log_path=str(final), log_tail=log.tail())

    def _smoke_test(self, engine: Engine, pkg, rendered, img, seed_ref, deps, sources, st, log, log_final, bopts) -> None:
        log.line("quorum: smoke test")
        cf = render.render_test(pkg, artifact_image=img.config_digest, seed_image=seed_ref.image if seed_ref else None,
                                deps=deps, settings=self.opt.settings)
        ctx = st / "test-context.tar"
        with open(ctx, "wb") as f:
            render.write_context(f, pkg, rendered, sources, self.tree.config.source_date_epoch, test_containerfile=cf)
        owner = f"{self.owner}/test/{pkg.name}"
        try:
            with open(ctx, "rb") as f:
                # The marker argument makes the test's RUN step miss the
                # cache (a test that passed once must run again) while the
                # steps before it stay shared layer cache.
                tid = engine.build(f, dockerfile=render.TEST_CONTAINERFILE_PATH, opts=bopts,
                                        on_line=log.line, owner=owner, args={"QUORUM_TEST_RUN": owner})
        except BuildError as e:
            raise self._build_error(pkg, f"smoke test failed: {e.message}", log, log_final) from None
        engine.release(tid, owner)
        log.line("quorum: smoke test passed")

    def _publish(self, name: str, layout: Path, img: oci.Image, r: NodeResult, t0: float,
                 member: Member | None) -> None:
        facts = member.facts() if member is not None else None
        rec = Record(name=name, kind=r.kind, version=r.version, digest=img.digest, config_digest=img.config_digest,
                     layer_digest=img.layer.digest, input_hash=r.input_hash or "", size=img.size,
                     engine=facts.identity if facts is not None else "")
        # Provenance first (docs/spec/attestations.md): a record, which makes
        # the artifact count as built, never exists without it.
        attest.write_provenance(self.tree, self.store.out, name, img, self.results, settings=self.opt.settings,
                                engine=_engine_info(facts if member is not None else self.engine_facts()))
        self.store.publish(layout, rec)
        r.status, r.digest, r.config_digest, r.size = "built", img.digest, img.config_digest, img.size
        r.layer_digest = img.layer.digest
        r.seconds = time.monotonic() - t0
        r.engine = member.name if member is not None else None
        if member is not None:
            self.pool.holds(member, img.config_digest)
            try:
                self._tag(name, r, member.engine)
            except EngineError:
                pass  # a tag is a convenience for people; the digest is what counts
        self.emit({"event": "built", "name": name, "digest": img.digest, "size": img.size,
                   "seconds": round(r.seconds, 3)})

    def engine_facts(self) -> EngineFacts | None:
        """The facts of the engine that built most in this run (the first
        of the pool when none did); None for an engine that cannot say."""
        members = sorted(self.pool.members, key=lambda m: -m.built)
        for m in members:
            if m.built:
                return m.facts()
        return members[0].facts() if members else None

    def engine_info(self) -> dict[str, str]:
        """The engine's kind and version, as strings (informational in
        attestations); an engine that cannot say is "unknown"."""
        return _engine_info(self.engine_facts())

    def used_engines(self) -> list[EngineFacts]:
        """Facts of every engine that built something in this run."""
        return [f for f in (m.facts() for m in self.pool.members if m.built) if f is not None]

    def _record_engines(self) -> None:
        """out/.quorum/engine.json (the engine that built most) and
        engines.json (every engine that ever built into this store, by
        identity), so a record's engine identity can be named later."""
        used = self.used_engines()
        main = self.engine_facts()
        if not used or main is None:
            return
        canon.atomic_write(self.store.out / ENGINE_FILE, canon.dumps_pretty(main.to_json()))
        known = recorded_engines(self.store)
        for f in used:
            if f.identity:
                known[f.identity] = f.to_json()
        canon.atomic_write(self.store.out / ENGINES_FILE, canon.dumps_pretty(dict(sorted(known.items()))))

    # --- outputs --------------------------------------------------------------
    def _write_archives(self) -> None:
        for name in self.opt.archives:
            dst = self.store.archive_path(name)
            temps.sweep_atomic(dst.parent)
            fd, tmp_name = temps.mkstemp(dst.parent, f".{dst.name}.")
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as f:
                    oci.write_archive(self.store.layout(name), f, compress=True, ref=self._image_ref(name))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, dst)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            self.emit({"event": "archive", "name": name, "path": str(dst)})

    def _check_drift(self, result: Result, prev: manifest.Manifest | None) -> None:
        """Compare what was built against the manifest: the same input hash
        with another digest means a build is not deterministic (or the
        engine changed something).  That is said loudly and the manifest is
        left alone, unless the user accepts the new digests."""
        if prev is None or prev.tree != self.tree.config.name:
            return
        for n in result.order:
            r, old = result.nodes[n], prev.entries.get(n)
            if (r.status == "built" and old is not None and old.input_hash == r.input_hash
                    and r.digest and old.digest != r.digest):
                d = Drift(name=n, input_hash=r.input_hash or "", manifest_digest=old.digest, new_digest=r.digest)
                self.emit({"event": "nondeterministic", **d.to_json(), "accepted": self.opt.accept_new_digests})
                if not self.opt.accept_new_digests:
                    result.drifted.append(d)

    def _write_manifest(self, result: Result, prev: manifest.Manifest | None) -> None:
        # Nothing about engines goes in: the manifest is the same whichever
        # engines built the tree.
        # Twins and gate nodes are proofs, recorded in checks, not artifacts.
        entries = {n: manifest.Entry(kind=r.kind, version=r.version, digest=r.digest, input_hash=r.input_hash,
                                     size=r.size) for n, r in self.results.items() if r.kind not in ("twin", "gate")}
        path = self.tree.manifest_path
        new = manifest.updated(prev, self.tree.config.name, entries, checks=dict(sorted(self.gates.items())))
        result.manifest_path = path
        result.manifest_changed = manifest.write(path, new)


class _Log:
    """A build log written to staging and moved to out/logs/ atomically at
    the end, success or failure, so a reader never sees half of it as the
    "last log"."""

    def __init__(self, path: Path, on_line: Callable[[str], None]):
        self.path = path
        self.f = open(path, "w", encoding="utf-8", errors="replace")
        self.on_line = on_line
        self._tail: deque[str] = deque(maxlen=LOG_TAIL)

    def line(self, s: str) -> None:
        self.f.write(s + "\n")
        self._tail.append(s)
        self.on_line(s)

    def tail(self) -> list[str]:
        return list(self._tail)

    def close(self, final: Path) -> None:
        if self.f.closed:
            return
        self.f.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, final)


def _engine_info(facts: EngineFacts | None) -> dict[str, str]:
    if facts is None:
        return {"kind": "unknown", "version": "unknown"}
    return {"kind": str(facts.kind).lower(), "version": str(facts.version)}


def build(tree: Tree, **kw) -> Result:
    """Library entry point: ``build(tree, options=Options(jobs=2), emit=print)``."""
    return Builder(tree, **kw).run()
