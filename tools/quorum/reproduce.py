"""Independent rebuilds under varied conditions, with honest verdicts.

``reproduce`` runs the same pipeline as ``build`` into a separate store
(out/reproduce/), with every cache bypassed for the packages it rebuilds and
the build environment perturbed in reprotest's vocabulary, then compares each
rebuilt digest with the manifest:

    REPRODUCED  rebuilt digest == manifest digest
    MISMATCH    the build succeeded and produced other bytes
    FAILED      the build, its smoke test, a fetch, or the engine failed, or
                there is nothing to compare with; never reported as MISMATCH
                (a flaky engine must not look like a poisoned package)

On MISMATCH both artifacts are kept under out/reproduce/<name>/ with a
file-level diff (diff.txt, diff.json, and diffoscope's reports when it is
installed).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import build as buildlib
from . import diff as diffmod
from . import graph as graphmod
from . import manifest as manifestmod
from . import variations
from . import shim
from .canon import atomic_write, dumps_pretty
from .engine import Engine, new_owner
from .errors import QuorumError
from .model import Tree
from .pool import Pool
from .store import Store

REPRODUCED, MISMATCH, FAILED = "REPRODUCED", "MISMATCH", "FAILED"

# The variations live in variations/ (a registry, one module per kind).
parse_vary = variations.parse_vary


@dataclass
class Verdict:
    name: str
    kind: str
    verdict: str
    expected: str | None
    rebuilt: str | None
    seconds: float = 0.0
    reason: str = ""
    diff_dir: str | None = None
    diff_text: str | None = None
    reports: list[str] = field(default_factory=list)     # files written about a mismatch
    built_on: str | None = None                          # the engine that built the manifest's artifact, if recorded
    rebuilt_on: str | None = None                        # the engine of this rebuild
    diffoscope_command: str | None = None                # to look deeper at the two kept layer blobs

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.pop("diff_text")
        return d


@dataclass
class ReproResult:
    verdicts: list[Verdict]
    applied: dict[str, str]           # variation -> how it was applied
    not_applied: dict[str, str]       # variation -> why not
    out: Path
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    complete: bool = True             # False in the report written while the run is under way
    # The engine of the build that made out/ (as it recorded itself) and the
    # engine of this rebuild: a rebuild is more independent the more these
    # differ (kind, version, kernel, CPU).
    build_engine: dict | None = None
    rebuild_engine: dict | None = None

    @property
    def exit_code(self) -> int:
        if any(v.verdict == FAILED for v in self.verdicts):
            return 2
        if any(v.verdict == MISMATCH for v in self.verdicts):
            return 1
        return 0

    def to_json(self) -> dict:
        return {"verdicts": [v.to_json() for v in self.verdicts], "applied": self.applied,
                "not_applied": self.not_applied, "exit_code": self.exit_code, "notes": self.notes,
                "seconds": round(self.seconds, 3), "complete": self.complete,
                "build_engine": self.build_engine, "rebuild_engine": self.rebuild_engine}


def changed_since(tree: Tree, current: manifestmod.Manifest, rev: str) -> set[str]:
    """Packages whose manifest entries differ from the manifest at git ``rev``."""
    rel = tree.manifest_path.relative_to(tree.root).as_posix()
    try:
        p = subprocess.run(["git", "-C", str(tree.root), "show", f"{rev}:{rel}"], capture_output=True, timeout=60)
    except FileNotFoundError:
        raise QuorumError("git is not installed; --since needs it") from None
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip().splitlines()
        if msg and ("does not exist" in msg[-1] or "exists on disk, but not in" in msg[-1]):
            return set(current.entries)   # no manifest then: everything is new
        raise QuorumError(f"cannot read {rel} at {rev}: {msg[-1] if msg else 'git failed'}", field="--since")
    old = manifestmod.parse(p.stdout, f"{rev}:{rel}")
    return {n for n, e in current.entries.items() if old.entries.get(n) != e}


def last_signed_changes(tree: Tree, current: manifestmod.Manifest) -> set[str] | None:
    """Packages changed since the newest manifest that someone signed: the
    newest git revision of manifest.json whose sha256 the transparency log
    records.  None when no signed manifest can be found."""
    log = tree.root / "manifests" / "log.jsonl"
    if not log.exists():
        return None
    import json
    signed = set()
    for line in log.read_text().splitlines():
        try:
            signed.add(json.loads(line).get("manifest_sha256"))
        except (ValueError, AttributeError):
            continue
    rel = tree.manifest_path.relative_to(tree.root).as_posix()
    p = subprocess.run(["git", "-C", str(tree.root), "log", "--format=%H", "--", rel], capture_output=True,
                       text=True, timeout=60)
    if p.returncode != 0:
        return None
    import hashlib
    for rev in p.stdout.split():
        blob = subprocess.run(["git", "-C", str(tree.root), "show", f"{rev}:{rel}"], capture_output=True, timeout=60)
        if blob.returncode == 0 and hashlib.sha256(blob.stdout).hexdigest() in signed:
            return changed_since(tree, current, rev)
    return None


def select(tree: Tree, current: manifestmod.Manifest, *, packages: list[str] | None, all_: bool,
           since: str | None) -> tuple[set[str], str]:
    """Which nodes to rebuild, and a sentence saying why."""
    if all_:
        return (set(tree.seeds) | set(tree.packages) | set(tree.environments),
                "every seed, package and environment (--all)")
    if packages:
        return set(packages), "the packages named"
    if since:
        return changed_since(tree, current, since), f"packages whose manifest entry changed since {since}"
    changed = last_signed_changes(tree, current)
    if changed is None:
        return set(tree.packages), "every package (no signed manifest found to compare with)"
    return changed, "packages whose manifest entry changed since the last signed manifest"


def _json(facts) -> dict | None:
    return facts.to_json() if facts is not None else None


def reproduce(tree: Tree, *, packages: list[str] | None = None, all_: bool = False, since: str | None = None,
              vary: set[str] | None = None, jobs: int = 1, engine=None, out: Path | None = None,
              emit: Callable[[dict], None] = lambda e: None, diffoscope: bool = True, pool: Pool | None = None,
              elsewhere: bool = False) -> ReproResult:
    """``pool`` (or one ``engine``; default the local one) runs the
    rebuilds; with ``elsewhere`` each on an engine other than the one that
    built the artifact it is compared with."""
    import time
    t0 = time.monotonic()
    current = manifestmod.load(tree.manifest_path)
    if current is None:
        raise QuorumError("no manifest to reproduce: run 'quorum build' first (or get the tree's manifest)",
                          file=str(tree.manifest_path))
    vary = parse_vary(None) if vary is None else vary
    targets, why = select(tree, current, packages=packages, all_=all_, since=since)
    g = graphmod.build_graph(tree)
    for t in targets:
        if t not in g:
            raise QuorumError(f"no package or seed named {t!r}")
    out = out or tree.out / "reproduce"
    main = Store(tree.out)
    # A dependency is only trusted if the local artifact is the one the
    # manifest names; otherwise it is rebuilt too (and judged).
    force = set(targets)
    for n in graphmod.closure(g, targets) - force:
        rec = main.record(n)
        exp = current.entries.get(n)
        if rec is None or exp is None or rec.digest != exp.digest:
            force.add(n)
    # Build bases (seeds and environments) whose files a variation may inspect.
    layouts = {sname: main.layout(sname) for sname in [*tree.seeds, *tree.environments]
               if main.record(sname) is not None}
    outcome = variations.plan(vary, variations.Context(tree=tree, targets=frozenset(force), layouts=layouts,
                                                        cpu_count=os.cpu_count() or 1))
    settings, cpuset = outcome.plan.settings, outcome.plan.cpuset
    applied, not_applied = outcome.applied, outcome.not_applied
    if not force:
        emit({"event": "reproduce", "targets": [], "why": why, "applied": sorted(applied)})
        return ReproResult(verdicts=[], applied=applied, not_applied=not_applied, out=out,
                           notes=[f"nothing to rebuild: {why} is empty"])
    if pool is None:
        pool = Pool.of(engine if engine is not None else Engine(), slots=max(1, jobs))
    shim_image = None
    shim_engine = pool.members[0].engine
    if outcome.plan.preload:
        shim_image = _build_shim(tree, main, shim_engine, outcome, emit, current, Store(out / ".store"))
        if shim_image is not None:
            settings = replace(settings, preload_image=shim_image,
                               preload_env=tuple(sorted(outcome.plan.preload.items())))
    emit({"event": "reproduce", "targets": sorted(force), "why": why, "applied": sorted(applied)})
    rebuild_store = out / ".store"
    # out/reproduce/ is this run's from here on: lock it before deleting
    # anything in it, so a second reproduce stops instead of pulling the
    # store from under the first.
    try:
        with Store(out).lock():
            # Never trust an earlier rebuild: a reproduce starts from an empty store.
            shutil.rmtree(rebuild_store, ignore_errors=True)
            # Until this run completes, report.json says so: a killed run must
            # not leave the previous run's verdicts looking like this one's.
            atomic_write(out / "report.json", dumps_pretty(
                ReproResult(verdicts=[], applied=applied, not_applied=not_applied, out=out, complete=False,
                            notes=[f"in progress (or interrupted): rebuilding {why}"]).to_json()))
            opts = buildlib.Options(jobs=jobs, targets=tuple(sorted(force)), reuse=True, nocache=True, force=tuple(force),
                                    reuse_store=tree.out, settings=settings, cpuset=cpuset, write_manifest=False,
                                    keep_going=True, elsewhere=elsewhere)
            # The builder's own "finish" says whether every build *ran*; the verdicts
            # are only known afterwards, so reproduce emits the finish event itself.
            b = buildlib.Builder(tree, store=Store(rebuild_store), pool=pool, options=opts,
                                 emit=lambda e: None if e.get("event") == "finish" else emit(e))
            if shim_image is not None:
                b.extra_images[shim_image] = _copy_from(shim_engine, shim_image, b.store)
            result = b.run()
            built_by = buildlib.recorded_engines(main)
            verdicts = []
            for n in result.order:
                r = result.nodes[n]
                # Twins and gate nodes are proofs inside the rebuild (a failing
                # gate skips, and so fails, what is built in the environment);
                # they have no manifest entry to be judged against.
                if n not in force or r.kind in ("twin", "gate"):
                    continue
                exp = current.entries.get(n)
                v = Verdict(name=n, kind=r.kind, verdict=FAILED, expected=exp.digest if exp else None, rebuilt=r.digest,
                            seconds=round(r.seconds, 3), built_on=_engine_name(main, n, built_by),
                            rebuilt_on=r.engine)
                if r.status != "built":
                    v.reason = f"{r.failure or r.status}: {r.error}" if r.error else r.status
                elif exp is None:
                    v.reason = "not in the manifest: nothing to compare with"
                elif r.digest == exp.digest:
                    v.verdict = REPRODUCED
                else:
                    v.verdict = MISMATCH
                    v.reason = "digests differ"
                    _keep_and_diff(n, v, main, Store(rebuild_store), out, diffoscope)
                if n not in targets and v.verdict != REPRODUCED:
                    v.reason = (v.reason + "; " if v.reason else "") + "rebuilt because the local artifact did not match the manifest"
                verdicts.append(v)
            res = ReproResult(verdicts=verdicts, applied=applied, not_applied=not_applied, out=out,
                              seconds=time.monotonic() - t0, notes=[f"rebuilt {why}"],
                              build_engine=buildlib.recorded_engine(main), rebuild_engine=_json(b.engine_facts()))
            atomic_write(out / "report.json", dumps_pretty(res.to_json()))
            # Rebuild attestations (docs/spec/attestations.md): what `quorum sign`
            # signs and `quorum verify` counts per role.
            from . import attest
            attest.write_rebuilds(out, tree=tree.config.name, namespace=tree.config.namespace, verdicts=verdicts,
                                  versions={n: result.nodes[n].version for n in result.order}, applied=applied,
                                  not_applied=not_applied, engine=b.engine_info())
    finally:
        # The shim image is this run's alone (its owner label): gone with it.
        if shim_image is not None:
            for m in pool.members:
                if m.engine is shim_engine or shim_image in m.loads:
                    m.engine.release(shim_image, _SHIM_OWNER)
    emit({"event": "finish", "ok": res.exit_code == 0, "exit_code": res.exit_code,
          "seconds": round(res.seconds, 3),
          "verdicts": {k: sum(1 for v in verdicts if v.verdict == k) for k in (REPRODUCED, MISMATCH, FAILED)}})
    return res


_SHIM_OWNER = new_owner()


def _build_shim(tree: Tree, main: Store, engine, outcome: variations.Outcome, emit,
                current: manifestmod.Manifest, stage: Store) -> str | None:
    """Compile the preload shim for this rebuild; if it cannot be, the
    variations that asked for it move to "not applied" with the reason
    (never reported as acting when they did not)."""
    seed = shim.compiler_seed(tree)
    rec = main.record(seed) if seed else None
    try:
        if seed is None or rec is None:
            raise QuorumError("no compiler seed built in out/")
        # The shim runs inside every rebuild and could write into /rootfs
        # whatever would make a poisoned artifact "reproduce": its compiler
        # must be the seed the manifest names, never whatever out/ holds
        # (the load below then proves the engine has those bytes).
        exp = current.entries.get(seed)
        if exp is None or exp.digest != rec.digest:
            raise QuorumError(f"seed {seed} in out/ is not the one the manifest names (run 'quorum build {seed}')")
        emit({"event": "shim", "seed": seed})
        return shim.build(engine, seed_layout=main.layout(seed), seed_config_digest=rec.config_digest,
                          owner=_SHIM_OWNER, stage=stage)
    except QuorumError as e:
        for name in [n for n, how in outcome.applied.items() if "preload shim" in how]:
            del outcome.applied[name]
            outcome.not_applied[name] = f"quorum's preload shim could not be built: {e}"
        outcome.plan.preload.clear()
        return None


def _copy_from(source, image_id: str, store: Store) -> Callable:
    """How to give another engine an image ``source`` holds: export it
    there, load it here (the image ID, its config digest, is checked by the
    pool after the load).  The archive is staged in ``store``, whose next
    run removes what a crash left."""
    def transfer(engine) -> None:
        with store.staging("copy") as tmp:
            arch = tmp / "image.tar"
            with open(arch, "wb") as f:
                source.save(image_id, f)
            engine.load(arch)
    return transfer


def _engine_name(main: Store, name: str, engines: dict[str, dict]) -> str | None:
    """The name of the engine that built out/<name>/, as recorded."""
    rec = main.record(name)
    if rec is None or not rec.engine:
        return None
    facts = engines.get(rec.engine) or {}
    return str(facts.get("name") or facts.get("endpoint") or rec.engine)


def _keep_and_diff(name: str, v: Verdict, main: Store, rebuilt: Store, out: Path, diffoscope: bool) -> None:
    """Keep both artifacts under out/reproduce/<name>/ and write the diff."""
    d = out / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    shutil.copytree(rebuilt.layout(name), d / "rebuilt")
    rec = main.record(name)
    if rec is None or rec.digest != v.expected or not main.layout(name).exists():
        v.reason += "; the original artifact is not in out/ here, so only digests can be compared"
        v.diff_dir = str(d)
        return
    shutil.copytree(main.layout(name), d / "original")
    result = diffmod.compare(d / "original", d / "rebuilt", labels=("original", "rebuilt"))
    v.reports = [str(p) for p in diffmod.save(result, d)]
    v.diff_text = diffmod.render_text(result, max_files=20)
    v.diff_dir = str(d)
    from . import oci
    a = oci.read_layout(d / "original")["layer_path"]
    b = oci.read_layout(d / "rebuilt")["layer_path"]
    v.diffoscope_command = shlex.join(["diffoscope", "--html", str(d / "diffoscope.html"), str(a), str(b)])
    if diffoscope:
        v.reports += [str(p) for p in diffmod.run_diffoscope(a, b, d)]
