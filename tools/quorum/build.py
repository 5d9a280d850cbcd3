"""Running the graph: order, parallelism, caching, and the steps of one build.

The library emits events (plain dicts, see docs/spec/events.md) and returns a
Result; it never prints.  The CLI turns events into a live display or JSON
lines, and tests assert on them.

One package's build, step by step (each a function below):
    inputs   -> input hash; a whole artifact for it in out/ means "cached"
    fetch    -> sources into the cache, sha256-checked
    load     -> seed and dependency artifacts into the engine, by digest
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

from . import canon
from . import graph as graphmod
from . import attest, imageref, inputs, layercheck, manifest, oci, render, seed as seedmod, temps
from . import environment as envmod
from .engine import BuildOptions, Cancelled, Engine, EngineFacts, new_owner
from .errors import BuildError, EngineError, FetchError, MachineError, QuorumError, describe_os_error
from .fetch import SourceCache
from .model import Environment, EnvironmentGate, Package, Seed, Tree, twin_name
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


def recorded_engine(store: Store) -> dict | None:
    """The facts the last build that built anything into ``store`` recorded
    about its engine (reproduce names it beside the rebuild's engine)."""
    from .safeio import load_json
    try:
        doc = load_json(store.out / ENGINE_FILE, limit=1 << 16)
    except QuorumError:
        return None
    return doc if isinstance(doc, dict) else None


# Seconds an interrupted build gives its workers to stop before it returns
# (the CLI then exits; the lock goes with the process).
INTERRUPT_GRACE = 1.2


class Builder:
    def __init__(self, tree: Tree, *, store: Store | None = None, engine: Engine | None = None,
                 cache: SourceCache | None = None, options: Options = Options(), emit: Emit = lambda e: None):
        self.tree = tree
        self.store = store or Store(tree.out)
        self.engine = engine or Engine()
        self.cache = cache or SourceCache()
        self.opt = options
        self._emit = emit
        self._emit_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._loaded: set[str] = set()
        self._image_locks: dict[str, threading.Lock] = {}
        self.graph = graphmod.build_graph(tree)
        self.results: dict[str, NodeResult] = {}
        self.reuse_store = Store(options.reuse_store) if options.reuse_store else None
        # Which store holds each node's artifact (for loading it into the
        # engine): ours, or the one reused from.
        self._store_of: dict[str, Store] = {}
        self.gates: dict[str, dict] = {}
        self._env_gates = {g.node: g for g in tree.config.environment_gates}
        # Names this run's engine images (see Engine.release): only images
        # whose making step carries it are ever removed by this run.
        self.owner = new_owner()
        # The engine's facts, asked once per run (provenance of every
        # artifact, out/.quorum/engine.json, reproduce's report use them).
        self._facts: EngineFacts | None = None
        self._facts_asked = False
        self._facts_lock = threading.Lock()

    def emit(self, event: dict) -> None:
        with self._emit_lock:
            self._emit(event)

    # --- the scheduler ------------------------------------------------------
    def run(self) -> Result:
        t0 = time.monotonic()
        g = self.graph
        need = graphmod.closure(g, self.opt.targets) if self.opt.targets else set(g.nodes)
        # Building anything on a gate member means building the whole gate:
        # otherwise `quorum build <something downstream>` would bypass it.
        for _, members in self.tree.config.gates:
            if need & set(members):
                need |= graphmod.closure(g, members)
        order = [n for n in graphmod.order(g) if n in need]
        index = {n: i for i, n in enumerate(order)}
        for n in order:
            kind, version = self._describe(n)
            self.results[n] = NodeResult(name=n, kind=kind, version=version)
        self.emit({"event": "plan", "order": order, "jobs": self.opt.jobs})
        waiting = {n: sum(1 for p in g.predecessors(n) if p in need) for n in order}
        ready = deque(n for n in order if waiting[n] == 0)
        running: dict[Future, str] = {}
        stop = False

        gate_of = {m: (gname, members) for gname, members in self.tree.config.gates for m in members}

        def finished(n: str) -> None:
            if n in gate_of and sum(1 for m in gate_of[n][1] if m in need) >= 2:
                # A gate member releases nothing on its own: its dependents
                # wait until every member is done and the artifacts agree.
                gname, members = gate_of[n]
                if not all(self.results.get(m) and self.results[m].status in ("built", "cached")
                           for m in members if m in need):
                    return
                if not self._check_gate(gname, [m for m in members if m in need]):
                    for m in members:
                        if m in need:
                            fail_descendants(m, because=f"gate {gname}")
                    return
                for m in members:
                    if m in need and m != n:
                        release(m)
            release(n)

        def release(n: str) -> None:
            for d in sorted((d for d in g.successors(n) if d in index), key=index.__getitem__):
                if d in waiting:
                    waiting[d] -= 1
                    if waiting[d] == 0:
                        ready.append(d)

        def fail_descendants(n: str, because: str | None = None) -> None:
            because = because or n
            for d in sorted(graphmod.dependents(g, [n]) & need, key=index.__getitem__):
                r = self.results[d]
                if r.status == "queued":
                    r.status, r.error = "skipped", f"{because} failed"
                    self.emit({"event": "skipped", "name": d, "because": because})

        with self.store.lock() as held:
            # Everything in out/.tmp/ was staged by a holder of this lock,
            # and a holder keeps it until its last worker stops: so now
            # its owners are provably gone.
            self.store.clean_tmp()
            pool = ThreadPoolExecutor(max_workers=max(1, self.opt.jobs), thread_name_prefix="build")
            try:
                while ready or running:
                    # Decide everything that can be decided without the
                    # engine first (input hashes, cache hits): a no-op build
                    # never starts a thread or connects to the engine.
                    while ready and not stop:
                        n = ready.popleft()
                        if self.results[n].status == "skipped":
                            continue
                        try:
                            job = self._prepare(n)
                        except QuorumError as e:
                            self._record_failure(n, e, "definition")
                            fail_descendants(n)
                            stop = not self.opt.keep_going
                            continue
                        if job is None:          # cached
                            finished(n)
                            continue
                        if len(running) >= max(1, self.opt.jobs):
                            ready.appendleft(n)
                            break
                        self.results[n].status = "running"
                        self.emit({"event": "start", "name": n, "kind": self.results[n].kind,
                                   "input_hash": self.results[n].input_hash})
                        running[pool.submit(self._with_retry, n, job)] = n
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        n = running.pop(fut)
                        try:
                            fut.result()
                            finished(n)
                        except QuorumError as e:
                            kind = ("engine" if isinstance(e, EngineError) else "fetch" if isinstance(e, FetchError)
                                    else "build" if isinstance(e, BuildError) else "definition")
                            self._record_failure(n, e, kind)
                            fail_descendants(n)
                            stop = stop or not self.opt.keep_going
                        except OSError as e:
                            # The machine (disk full, I/O error, permissions):
                            # never the package's fault, so never a "build"
                            # failure that reproduce could call a MISMATCH.
                            # A write() names no file; the builder writes under out/.
                            msg, _ = describe_os_error(e, where=str(self.store.out))
                            self._record_failure(n, MachineError(msg), "machine")
                            fail_descendants(n)
                            stop = stop or not self.opt.keep_going
                        except Exception as e:
                            # A bug in quorum: said as such, with where it happened.
                            import traceback
                            err = QuorumError(f"internal error: {e.__class__.__name__}: {e}")
                            self._record_failure(n, err, "internal")
                            self.results[n].log_tail = traceback.format_exc().splitlines()[-12:]
                            fail_descendants(n)
                            stop = stop or not self.opt.keep_going
            except KeyboardInterrupt:
                self._interrupt(pool, running, held)
                raise
            finally:
                if not self.engine_cancelled():
                    pool.shutdown(wait=True)
            for n in order:  # whatever was never started because of a stop
                if self.results[n].status == "queued":
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
        facts = self.engine_facts() if any(r.status == "built" and r.kind != "gate"
                                           for r in self.results.values()) else None
        if facts is not None:
            canon.atomic_write(self.store.out / ENGINE_FILE, canon.dumps_pretty(facts.to_json()))
        result.seconds = time.monotonic() - t0
        self.emit({"event": "finish", "ok": result.ok, "seconds": round(result.seconds, 3),
                   "manifest_changed": result.manifest_changed})
        return result

    def _interrupt(self, pool: ThreadPoolExecutor, running: dict[Future, str], held) -> None:
        """The first Ctrl-C: start nothing more, cut the running engine
        builds (the engine kills their containers), and give the workers a
        moment to stop.  The lock stays held until the last worker has
        stopped (or the process is gone), so no other quorum process can
        take out/ while one of ours still writes to it.  A second Ctrl-C
        cuts the wait short."""
        held.keep_while(list(running))
        pool.shutdown(wait=False, cancel_futures=True)
        self.engine.cancel_builds()
        for n in running.values():
            self.results[n].status, self.results[n].error = "failed", "interrupted"
        try:
            wait(running, timeout=INTERRUPT_GRACE)
        except KeyboardInterrupt:
            pass

    def _with_retry(self, n: str, job: Callable[[], None]) -> None:
        """Run a node's build; when the engine failed (not the package),
        once more.  A shared engine can lose an image under a build, or
        hiccup; a second failure is reported as the engine's."""
        try:
            job()
        except EngineError as e:
            if self.engine_cancelled():
                raise Cancelled() from None
            if not self.engine.answers():
                raise       # gone: the first error says what broke, a retry would not
            self.emit({"event": "retry", "name": n, "error": str(e)})
            with self._load_lock:
                # The engine may have lost what we loaded: check again.
                self._loaded.clear()
            job()

    def engine_cancelled(self) -> bool:
        return self.engine.cancelled.is_set()

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

    def _prepare(self, n: str):
        """Compute the input hash; return None when the artifact is already
        in out/ (and record it as cached), else the callable that builds it."""
        r = self.results[n]
        epoch = self.tree.config.source_date_epoch
        if n in self._env_gates:
            gate = self._env_gates[n]
            # Never cached: comparing digests costs nothing, and the verdict
            # belongs to this run's record.
            return lambda: self._check_environment_gate(gate)
        if n in self.tree.environments:
            env = self.tree.environments[n]
            r.input_hash = envmod.input_hash(env, {m: self.results[m].digest or "" for m in env.members}, epoch)
            job = lambda: self._build_environment(env)
        elif n in self.tree.seeds:
            s = self.tree.seeds[n]
            if not s.locked:
                raise QuorumError(f"seed {n!r} is not locked: run 'quorum seed lock {n}'",
                                  file=s.definition_file, field="packages")
            r.input_hash = inputs.seed_input_hash(s, epoch)
            job = lambda: self._build_seed(s)
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
            job = lambda: self._build_package(built, rendered, seed_ref, deps)
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

    # --- load: artifacts into the engine, by digest ---------------------------
    def ensure_loaded(self, name: str) -> None:
        """Make the engine hold exactly out/<name>/'s image.  The engine's
        image ID is the sha256 of the config blob, so checking the ID after a
        load proves the engine has our bytes, not a look-alike tag."""
        r = self.results[name]
        # One lock per image: a worker whose dependency is already loaded
        # must not wait behind another worker's load of something else.
        with self._load_lock:
            lock = self._image_locks.setdefault(r.config_digest, threading.Lock())
        with lock:
            if r.config_digest in self._loaded:
                return
            if self._load(name, self._layout_of(name), r.config_digest):
                self._tag(name, r)
            self._loaded.add(r.config_digest)

    def _layout_of(self, name: str) -> Path:
        """Where a node's artifact is: our store, or the one it was reused from."""
        return self._store_of.get(name, self.store).layout(name)

    def _load(self, name: str, layout: Path, config_digest: str) -> bool:
        """Load ``layout`` into the engine unless it holds the image already;
        True if it had to.  Called under the image's lock."""
        if self.engine.has_image(config_digest):
            return False
        with self.store.staging(f"load-{name}") as tmp:
            arch = tmp / "image.tar"
            with open(arch, "wb") as f:
                oci.write_archive(layout, f)
            self.engine.load(arch)
        if not self.engine.has_image(config_digest):
            raise EngineError(f"the engine did not take {name}'s image as {config_digest}")
        return True

    def _image_ref(self, name: str) -> imageref.ImageRef:
        return imageref.reference(self.tree.config.namespace, name, self.results[name].version)

    def _tag(self, name: str, r: NodeResult) -> None:
        ref = self._image_ref(name)
        self.engine.tag(r.config_digest, ref.repository, ref.tag)

    # --- the builds -----------------------------------------------------------
    def _build_seed(self, s: Seed) -> None:
        t0 = time.monotonic()
        r = self.results[s.name]
        epoch = self.tree.config.source_date_epoch
        debs = seedmod.fetch_debs(s, self.cache, emit=self.emit)
        with self.store.staging(s.name) as st:
            raw = st / "merged.tar"
            seedmod.merge(s, debs, raw)
            layer_file = st / "layer.tar"
            with open(layer_file, "wb") as f:
                layer = oci.normalize_layer(raw, f, epoch=epoch)
            raw.unlink()
            img = oci.write_layout(st / "layout", layer_file, layer, epoch=epoch, name=s.name, version=r.version,
                                   namespace=self.tree.config.namespace, env=dict(s.env), arch=s.arch)
            self._publish(s.name, st / "layout", img, r, t0)

    def _build_environment(self, env: Environment) -> None:
        t0 = time.monotonic()
        r = self.results[env.name]
        epoch = self.tree.config.source_date_epoch
        layers = [(m, oci.read_layout(self._layout_of(m))["layer_path"]) for m in env.members]
        with self.store.staging(env.name) as st:
            raw = st / "merged.tar"
            envmod.merge(env, layers, raw)
            layer_file = st / "layer.tar"
            with open(layer_file, "wb") as f:
                layer = oci.normalize_layer(raw, f, epoch=epoch)
            raw.unlink()
            img = oci.write_layout(st / "layout", layer_file, layer, epoch=epoch, name=env.name, version=r.version,
                                   namespace=self.tree.config.namespace)
            self._publish(env.name, st / "layout", img, r, t0)

    def _build_package(self, pkg: Package, rendered: render.Rendered, seed_ref, deps) -> None:
        t0 = time.monotonic()
        r = self.results[pkg.name]
        epoch = self.tree.config.source_date_epoch
        sources = {s.file: self.cache.fetch(s, emit=self.emit, where=str(pkg.definition_file)) for s in pkg.sources}
        for ref in ([seed_ref] if seed_ref else []) + deps:
            self.ensure_loaded(ref.name)
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
                        image = self.engine.build(f, dockerfile=render.CONTAINERFILE_PATH, opts=bopts,
                                                  on_line=on_line, owner=owner)
                except BuildError as e:
                    raise self._build_error(pkg, f"build failed: {e.message}", log, log_final) from None
                ctx.unlink()
                try:
                    layer_raw = self.engine.single_layer(image, st)
                finally:
                    # The artifact is taken from the layer; the engine's
                    # image (this build's own: see Engine.release) goes,
                    # refused or not.
                    self.engine.release(image, owner)
                # Only the default template's last stage is "copy /rootfs": a
                # package's own Containerfile may take its files from anywhere.
                expected = counter.expected if pkg.containerfile is None else None
                layercheck.check(layer_raw, expected, package=pkg.name,
                                 endpoint=f"the engine at {self.engine.endpoint}")
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
                self._load_staged(pkg.name, st / "layout", img)
                if rendered.test_sh is not None:
                    self._smoke_test(pkg, rendered, img, seed_ref, deps, sources, st, log, log_final, bopts)
            finally:
                log.close(log_final)
            self._publish(pkg.name, st / "layout", img, r, t0)

    def _build_error(self, pkg: Package, msg: str, log: "_Log", final: Path) -> BuildError:
        return BuildError(msg, package=pkg.name, log_path=str(final), log_tail=log.tail())

    def _load_staged(self, name: str, layout: Path, img: oci.Image) -> None:
        with self._load_lock:
            lock = self._image_locks.setdefault(img.config_digest, threading.Lock())
        with lock:
            self._load(name, layout, img.config_digest)
            self._loaded.add(img.config_digest)

    def _smoke_test(self, pkg, rendered, img, seed_ref, deps, sources, st, log, log_final, bopts) -> None:
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
                tid = self.engine.build(f, dockerfile=render.TEST_CONTAINERFILE_PATH, opts=bopts,
                                        on_line=log.line, owner=owner, args={"QUORUM_TEST_RUN": owner})
        except BuildError as e:
            raise self._build_error(pkg, f"smoke test failed: {e.message}", log, log_final) from None
        self.engine.release(tid, owner)
        log.line("quorum: smoke test passed")

    def _publish(self, name: str, layout: Path, img: oci.Image, r: NodeResult, t0: float) -> None:
        rec = Record(name=name, kind=r.kind, version=r.version, digest=img.digest, config_digest=img.config_digest,
                     layer_digest=img.layer.digest, input_hash=r.input_hash, size=img.size)
        # Provenance first (docs/spec/attestations.md): a record, which makes
        # the artifact count as built, never exists without it.
        attest.write_provenance(self.tree, self.store.out, name, img, self.results, settings=self.opt.settings,
                                engine=self.engine_info())
        self.store.publish(layout, rec)
        r.status, r.digest, r.config_digest, r.size = "built", img.digest, img.config_digest, img.size
        r.layer_digest = img.layer.digest
        r.seconds = time.monotonic() - t0
        try:
            self._tag(name, r)
        except EngineError:
            pass  # a tag is a convenience for people; the digest is what counts
        self.emit({"event": "built", "name": name, "digest": img.digest, "size": img.size,
                   "seconds": round(r.seconds, 3)})

    def engine_facts(self) -> EngineFacts | None:
        """What the engine says about itself, asked once; None for an engine
        that cannot say (a stand-in, or one that stopped answering)."""
        with self._facts_lock:
            if not self._facts_asked:
                self._facts_asked = True
                try:
                    self._facts = self.engine.facts()
                except (QuorumError, AttributeError):
                    self._facts = None
            return self._facts

    def engine_info(self) -> dict[str, str]:
        """The engine's kind and version, as strings (informational in
        attestations); an engine that cannot say is "unknown"."""
        f = self.engine_facts()
        if f is None:
            return {"kind": "unknown", "version": "unknown"}
        return {"kind": str(f.kind).lower(), "version": str(f.version)}

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


def build(tree: Tree, **kw) -> Result:
    """Library entry point: ``build(tree, options=Options(jobs=2), emit=print)``."""
    return Builder(tree, **kw).run()
