"""Performance figures of quorum, measured on synthetic trees.

    python -m quorum.bench [--quick] [--only P1,P2,...] [--json]      (make bench)

Every tree is generated in a temporary folder with the fixture's busybox seed
(tests/fixtures/tree/bootstrap/seeds/busybox.yaml), locked at run time through
the machine's apt like the tests do, and everything the bench made is removed
at the end: the trees, and the images it put on the engine.  Each run uses a
SOURCE_DATE_EPOCH of its own, so its seed image, and every image built on it,
exists for this run only and can be removed without touching anybody else's.

The figures (the issue's names):

  P1  overhead: quorum building N trivial packages against docker-py building
      the same rendered Containerfiles and contexts in a plain loop, both
      without the engine's layer cache, alternated A B A B; medians.
  P2  a no-op `quorum build` of a 500-package tree, timed as a user runs it
      (a separate process), against `quorum --version` (interpreter + import).
      out/ is primed by the real Builder driving the fake engine, which returns
      a one-file layer, so the input hashes are exactly the real ones.
  P3  makespan of a wide DAG of CPU-bound packages at -j<cores>, against the
      lower bound max(critical path, total work / cores) computed from the
      packages' own times in a -j1 run.
  P6  planning a 10,000-node tree: load_tree + build_graph + order + closure of
      a deep target, in a fresh process (time and peak memory); and the graph
      part alone on an in-memory tree.
  R1  reproduce time / cold build time (issue #4): reproduce --all of the
      fixture tree against its cold build, alternated, target <= 1.05x.
  R2  reproduce --all -j 2 of the default tree against its cold build -j 2,
      same run (issue #8; benchtree.py).  Minutes: only with --only R2,R3.
  R3  that rebuild on a private Podman service against the Docker one.
  S1  the scheduler at StageX scale on simulated time (farmsim.py): a
      513-node DAG with a long bootstrap chain and long-tailed build times, on
      1, 4, 16, 64 slots over 1, 4, 16 fake engines; makespan against
      max(critical path, work / slots), target <= 1.1x, and the coordinator's
      own time per node, target < 20 ms.  Seconds.
  S2  the fixture tree built --no-cache on this machine's engine plus a
      private dockerd over TLS in a network namespace, against this engine
      alone; the manifests must be identical.  Only with --only S2 (root).

A benchmark reports; it does not judge: the exit status is 0 whatever the
figures say, 1 only when a figure could not be measured (it crashed).
Progress goes to stderr; the table (or --json) to stdout.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tabulate import tabulate

from . import __version__
from . import build as buildlib
from . import graph as graphmod
from . import render
from .engines.fake import FakeEngine
from .model import Package, Seed, Tree, TreeConfig

NAMESPACE = "quorum-bench"
SEED = "busybox"
FIXTURE_SEED = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "tree" / "bootstrap" / "seeds" / "busybox.yaml"
FIGURES = ("P1", "P2", "P3", "P6", "R1", "R2", "R3", "S1", "S2")
# The default tree's figures take its real build time, S2 starts a private
# dockerd (root): run when named only.
ON_REQUEST = ("R2", "R3", "S2")
HEADERS = ["figure", "what", "measured", "baseline", "ratio/overhead", "target", "met?"]


@dataclass(frozen=True)
class Sizes:
    p1_packages: int = 8
    p1_rounds: int = 3            # A B pairs
    p2_packages: int = 500
    p2_runs: int = 5
    p3_packages: int = 8
    p3_burn_seconds: float = 3.0  # CPU each P3 package burns (calibrated awk loop)
    p3_rounds: int = 2            # -j1 / -jN pairs
    p6_nodes: int = 10_000
    p6_runs: int = 3
    r1_rounds: int = 2            # build / reproduce pairs

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(p1_packages=3, p1_rounds=2, p2_packages=100, p2_runs=3, p3_packages=3, p3_rounds=1,
                   p6_nodes=2000, p6_runs=2, r1_rounds=1)


@dataclass
class Row:
    figure: str
    what: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        met = "—" if self.met is None else ("yes" if self.met else "NO")
        return [self.figure, self.what, self.measured, self.baseline, self.ratio, self.target, met]


@dataclass
class Figure:
    key: str
    rows: list[Row] = field(default_factory=list)
    values: dict = field(default_factory=dict)     # raw numbers, for --json
    notes: list[str] = field(default_factory=list)
    status: str = "ok"                             # ok | n/a | error
    seconds: float = 0.0


@dataclass
class Report:
    figures: list[Figure]
    machine: dict
    quick: bool
    seconds: float = 0.0

    @property
    def rows(self) -> list[Row]:
        return [r for f in self.figures for r in f.rows]

    @property
    def crashed(self) -> bool:
        return any(f.status == "error" for f in self.figures)

    def to_json(self) -> dict:
        return {
            "quorum": __version__, "quick": self.quick, "seconds": round(self.seconds, 3), "machine": self.machine,
            "headers": HEADERS, "rows": [asdict(r) for r in self.rows],
            "figures": {f.key: {"status": f.status, "seconds": round(f.seconds, 3), "values": f.values,
                                "notes": f.notes} for f in self.figures},
        }

    def table(self) -> str:
        out = [tabulate([r.cells() for r in self.rows], headers=HEADERS, tablefmt="simple", disable_numparse=True)]
        notes = [(f.key, n) for f in self.figures for n in f.notes]
        if notes:
            out.append("")
            out += [f"[{k}] {n}" for k, n in notes]
        return "\n".join(out)


# --- small helpers ------------------------------------------------------------

def _s(x: float) -> str:
    return f"{x:.2f} s" if x >= 0.995 or x == 0 else f"{x * 1000:.0f} ms"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _mb(b: float) -> str:
    return f"{b / 1e6:.0f} MB"


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


class Progress:
    def __init__(self, out=sys.stderr, enabled: bool = True):
        self.out, self.enabled, self.t0 = out, enabled, time.monotonic()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            self.out.write(f"[bench {time.monotonic() - self.t0:7.1f}s] {msg}\n")
            self.out.flush()


def _quorum_env() -> dict:
    """The environment of a `python -m quorum` child: this very quorum."""
    tools = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = tools + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


# --- synthetic trees ------------------------------------------------------------

def package_yaml(name: str, build: str, *, deps: tuple[str, ...] | list[str] = (), version: str = "1.0",
                 description: str | None = None, sources: list[tuple[str, str]] = (), test: str | None = None) -> str:
    lines = [f"name: {name}", f'version: "{version}"']
    if description:
        lines.append(f"description: {description}")
    if deps:
        lines.append(f"deps: [{', '.join(deps)}]")
    if sources:
        lines.append("sources:")
        for url, sha in sources:
            lines += [f"  - url: {url}", f"    sha256: {sha}"]
    lines.append("build: |")
    lines += ["  " + ln for ln in build.rstrip("\n").split("\n")]
    if test:
        lines.append("test: |")
        lines += ["  " + ln for ln in test.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def write_tree(root: Path, *, name: str, seed_text: str, epoch: int) -> Path:
    """An empty tree (quorum.yaml + the seed); packages are added with add()."""
    (root / "bootstrap" / "seeds").mkdir(parents=True)
    (root / "packages").mkdir()
    (root / "quorum.yaml").write_text(f"# generated by quorum.bench\nname: {name}\nnamespace: {NAMESPACE}\n"
                                      f"source_date_epoch: {epoch}\ndefaults:\n  seed: {SEED}\n")
    (root / "bootstrap" / "seeds" / f"{SEED}.yaml").write_text(seed_text)
    return root


def add(root: Path, name: str, text: str, files: dict[str, str] | None = None) -> None:
    d = root / "packages" / name
    d.mkdir()
    (d / "package.yaml").write_text(text)
    for rel, content in (files or {}).items():
        (d / rel).write_text(content)


def synth_dag(n: int, rng_seed: int = 20240601) -> tuple[list[tuple[str, list[str], int]], str]:
    """A layered DAG like a distribution's: about sqrt(n)/2 layers; every
    node past the first layer needs one node of the layer just below and 1-3
    more from the four layers below that.  Returns ([(name, deps, layer)],
    a node of the last layer)."""
    rng = random.Random(rng_seed)
    n_layers = max(2, round(math.sqrt(n) / 2))
    width = math.ceil(n / n_layers)
    layers: list[list[str]] = []
    out: list[tuple[str, list[str], int]] = []
    idx = 0
    for lay in range(n_layers):
        cur: list[str] = []
        recent = [x for layer in layers[-4:] for x in layer]
        for _ in range(width):
            if idx >= n:
                break
            name = f"pkg{idx:05d}"
            deps: list[str] = []
            if layers:
                deps.append(rng.choice(layers[-1]))
                for _ in range(rng.randint(1, 3)):
                    d = rng.choice(recent)
                    if d not in deps:
                        deps.append(d)
            out.append((name, sorted(deps), lay))
            cur.append(name)
            idx += 1
        if cur:
            layers.append(cur)
    return out, layers[-1][0]


def synth_tree(root: Path, n: int, *, seed_text: str, epoch: int, src_dir: Path | None = None) -> str:
    """Write a synthetic n-package tree; returns a deep target.  Every
    package has a pinned source (created in ``src_dir`` when given, so that it
    can really be fetched), every third a smoke test, every fifth a patch
    file beside its definition."""
    write_tree(root, name="bench", seed_text=seed_text, epoch=epoch)
    src_dir = src_dir.resolve() if src_dir is not None else None
    dag, deep = synth_dag(n)
    for name, deps, layer in dag:
        content = f"{name} source\n".encode()
        sha = hashlib.sha256(content).hexdigest()
        if src_dir is not None:
            src_dir.mkdir(parents=True, exist_ok=True)
            (src_dir / f"{name}-1.0.txt").write_bytes(content)
        url = f"file://{src_dir or root / 'nowhere'}/{{name}}-{{version}}.txt"
        build = (f'mkdir -p "$DESTDIR/usr/share/{name}"\n'
                 f'cp {name}-1.0.txt "$DESTDIR/usr/share/{name}/"\n'
                 f'chmod 0644 "$DESTDIR/usr/share/{name}/{name}-1.0.txt"')
        idx = int(name[3:])
        files = {"fix.patch": f"--- a/{name}\n+++ b/{name}\n@@ -1 +1 @@\n-old\n+new\n"} if idx % 5 == 0 else None
        if files:
            build += f'\ncp fix.patch "$DESTDIR/usr/share/{name}/"'
        test = f"test -f /usr/share/{name}/{name}-1.0.txt" if idx % 3 == 0 else None
        add(root, name, package_yaml(name, build, deps=deps, description=f"synthetic, layer {layer}",
                                     sources=[(url, sha)], test=test), files)
    return deep


def memory_tree(n: int) -> tuple[Tree, str]:
    """The same DAG as synth_tree, as model objects only (nothing on disk)."""
    dag, deep = synth_dag(n)
    root = Path("/nonexistent/bench")
    cfg = TreeConfig(name="bench", namespace=NAMESPACE, source_date_epoch=1, default_seed=SEED, path=root)
    seeds = {SEED: Seed(name=SEED, definition_file=root / "bootstrap" / "seeds" / f"{SEED}.yaml")}
    pkgs = {name: Package(name=name, version="1.0", dir=root / "packages" / name,
                          definition_file=root / "packages" / name / "package.yaml", deps=tuple(deps))
            for name, deps, _ in dag}
    return Tree(config=cfg, seeds=seeds, packages=pkgs), deep


# --- the fake engine (P2's priming) ----------------------------------------------

class NoEngine(FakeEngine):
    """For checking that a build is a no-op: any build is an error."""

    def build(self, *a, **kw) -> str:
        raise AssertionError("the no-op build wanted to build something")


# --- the run ----------------------------------------------------------------------

class Bench:
    def __init__(self, sizes: Sizes, progress: Callable[[str], None], workdir: Path):
        self.sizes = sizes
        self.progress = progress
        self.dir = workdir
        # A SOURCE_DATE_EPOCH of this run's own: it is in the seed's image
        # config, so this run's seed image (and everything the engine builds
        # on it) has IDs no other tree shares, and can be removed safely.
        self.epoch = 1_700_000_000 + random.SystemRandom().randrange(1, 50_000_000)
        self._seed_text: str | None = None
        self._r2_root: Path | None = None     # R3 rebuilds R2's tree on Podman
        self._r2_repro = 0.0
        self._client = None
        self.seed_images: set[str] = set()
        self.images: set[str] = set()      # artifacts this run loaded (by ID)

    # --- shared set-up ---
    def tree_dir(self, name: str) -> Path:
        return self.dir / name

    def locked_seed_text(self) -> str:
        """The fixture's seed, locked now through the machine's apt."""
        if self._seed_text is None:
            from . import seed as seedmod
            from .fetch import SourceCache
            from .tree import load_tree
            self.progress("locking the busybox seed through apt")
            t = write_tree(self.tree_dir("lock"), name="lock", seed_text=self.fixture_seed_text(), epoch=self.epoch)
            s = load_tree(t).seeds[SEED]
            seedmod.write_lock(s, seedmod.lock(s, SourceCache()))
            self._seed_text = s.definition_file.read_text()
        return self._seed_text

    @staticmethod
    def fixture_seed_text() -> str:
        if not FIXTURE_SEED.is_file():
            raise RuntimeError(f"the fixture seed {FIXTURE_SEED} is missing (run the bench from a checkout)")
        return FIXTURE_SEED.read_text()

    @property
    def client(self):
        if self._client is None:
            import docker
            self._client = docker.from_env(timeout=3600)
            self._client.ping()
        return self._client

    def note_images(self, result: buildlib.Result) -> None:
        for n, r in result.nodes.items():
            if r.config_digest:
                (self.seed_images if r.kind == "seed" else self.images).add(r.config_digest)

    def remove_build_leftovers(self) -> int:
        """Remove the images the engine kept from this run's builds: with the
        classic builder every stage leaves an untagged image whose parent
        chain starts at the seed.  The seed is this run's own, so its
        descendants are too."""
        if not self.seed_images:
            return 0
        api = self.client.api
        children: dict[str, list[str]] = {}
        for img in api.images(all=True):
            children.setdefault(img.get("ParentId") or "", []).append(img["Id"])
        mine: list[str] = []                # each image after its parent
        seen: set[str] = set()
        stack = list(self.seed_images)
        while stack:
            for c in children.get(stack.pop(), []):
                if c not in seen:
                    seen.add(c)
                    mine.append(c)
                    stack.append(c)
        removed = 0
        for img in reversed(mine):          # children before their parents
            try:
                api.remove_image(img, force=True, noprune=False)
                removed += 1
            except Exception:
                pass                        # already pruned with its child
        return removed

    def cleanup_engine(self) -> None:
        if self._client is None and not self.seed_images:
            return
        removed = self.remove_build_leftovers()
        api = self.client.api
        for img in sorted(self.images) + sorted(self.seed_images):
            try:
                api.remove_image(img, force=True, noprune=False)
                removed += 1
            except Exception:
                pass
        self.progress(f"removed {removed} images")
        left = [img for img in self.seed_images if _exists(api, img)]
        if left:
            self.progress(f"could not remove this run's seed image {', '.join(left)} (something still uses it)")
        # Tags left in the bench's namespace by an earlier, interrupted run:
        # untag only (an image another tag still names stays).
        try:
            for img in api.images():
                for t in img.get("RepoTags") or []:
                    if t.startswith(NAMESPACE + "/"):
                        try:
                            api.remove_image(t, noprune=False)
                        except Exception:
                            pass
        except Exception:
            pass
        try:
            self._client.close()
        except Exception:
            pass

    # --- P1 ---------------------------------------------------------------------
    def p1(self) -> Figure:
        import docker
        from .engine import Engine
        from .tree import load_tree
        sz, fig = self.sizes, Figure("P1")
        n = sz.p1_packages
        root = write_tree(self.tree_dir("p1"), name="p1", seed_text=self.locked_seed_text(), epoch=self.epoch)
        names = [f"triv{i:02d}" for i in range(n)]
        for name in names:
            add(root, name, package_yaml(name, f'mkdir -p "$DESTDIR/usr/share/{name}"\n'
                                               f'echo "{name}" > "$DESTDIR/usr/share/{name}/hello.txt"\n'
                                               f'chmod 0644 "$DESTDIR/usr/share/{name}/hello.txt"'))
        self.progress(f"P1: first build of {n} trivial packages (seed, load, layer cache as it comes)")
        t0 = time.monotonic()
        first = buildlib.build(load_tree(root), engine=Engine())
        cold = time.monotonic() - t0
        self.note_images(first)
        if not first.ok:
            raise RuntimeError(f"P1's first build failed: {[(r.name, r.error) for r in first.failed()]}")
        seed_id = first.nodes[SEED].config_digest
        # The plain loop gets exactly what quorum sends the engine: the
        # rendered Containerfile in the same deterministic context tar.
        tree = load_tree(root)
        epoch = tree.config.source_date_epoch
        contexts = []
        for name in names:
            pkg = tree.packages[name]
            rendered = render.render(pkg, seed_image=seed_id, deps=[], epoch=epoch)
            buf = io.BytesIO()
            render.write_context(buf, pkg, rendered, {}, epoch)
            contexts.append(buf.getvalue())

        def run_quorum() -> tuple[float, float]:
            t = time.monotonic()
            res = buildlib.build(load_tree(root), engine=Engine(),
                                 options=buildlib.Options(jobs=1, reuse=False, nocache=True))
            wall = time.monotonic() - t
            if not res.ok:
                raise RuntimeError(f"P1: quorum build failed: {[(r.name, r.error) for r in res.failed()]}")
            self.note_images(res)
            return wall, res.nodes[SEED].seconds

        def run_plain() -> float:
            t = time.monotonic()
            client = docker.from_env(timeout=3600)
            client.ping()
            ids = []
            for ctx in contexts:
                image = None
                for chunk in client.api.build(fileobj=io.BytesIO(ctx), custom_context=True,
                                              dockerfile=render.CONTAINERFILE_PATH, rm=True, forcerm=True,
                                              nocache=True, network_mode="none", pull=False, decode=True):
                    if "error" in chunk:
                        raise RuntimeError(f"P1: plain build failed: {chunk['error'].strip()}")
                    if "aux" in chunk and "ID" in chunk["aux"]:
                        image = chunk["aux"]["ID"]
                ids.append(image)
            wall = time.monotonic() - t
            for image in ids:                 # not timed: quorum's removal of its image is, though
                if image:
                    try:
                        client.api.remove_image(image, force=True)
                    except docker.errors.APIError:
                        pass
            client.close()
            return wall

        rounds = []
        for i in range(sz.p1_rounds):
            qa, seed_s = run_quorum()
            self.remove_build_leftovers()
            pb = run_plain()
            self.remove_build_leftovers()
            rounds.append({"quorum": qa, "quorum_seed": seed_s, "quorum_packages": qa - seed_s, "plain": pb})
            self.progress(f"P1: round {i + 1}/{sz.p1_rounds}: quorum {qa:.2f} s (seed re-assembly {seed_s:.2f} s), "
                          f"plain loop {pb:.2f} s")
        q = statistics.median(r["quorum_packages"] for r in rounds)
        p = statistics.median(r["plain"] for r in rounds)
        over = q - p
        rel = over / p if p > 0 else float("inf")
        per_pkg = over / n
        fig.values = {"packages": n, "rounds": rounds, "quorum_median": q, "plain_median": p,
                      "overhead_seconds": over, "overhead_ratio": rel, "overhead_per_package": per_pkg,
                      "first_build_seconds": cold}
        fig.rows.append(Row("P1", f"build {n} trivial packages, -j1, no layer cache (median of {sz.p1_rounds} "
                                  "A/B rounds)",
                            f"quorum {_s(q)}", f"docker-py loop {_s(p)}",
                            f"{_pct(rel)}, {per_pkg * 1000:+.0f} ms/pkg", "≤ +5% or ≤ 100 ms/pkg",
                            rel <= 0.05 or per_pkg <= 0.100))
        fig.notes.append(f"quorum's time excludes the seed's re-assembly (reuse=False rebuilds it too; median "
                         f"{statistics.median(r['quorum_seed'] for r in rounds):.2f} s), which the plain loop has no "
                         "counterpart for; it includes loading the tree, rendering, the engine's export of each "
                         "image, normalising, loading the artifact back, publishing and the manifest")
        fig.notes.append(f"first build (seed included, layer cache allowed): {cold:.2f} s")
        return fig

    # --- P2 ---------------------------------------------------------------------
    def p2(self) -> Figure:
        from .fetch import SourceCache
        from .tree import load_tree
        sz, fig = self.sizes, Figure("P2")
        n = sz.p2_packages
        root = self.tree_dir("p2")
        self.progress(f"P2: writing a {n}-package tree")
        synth_tree(root, n, seed_text=self.locked_seed_text(), epoch=self.epoch, src_dir=self.dir / "p2-src")
        tree = load_tree(root)
        edges = sum(len(p.deps) for p in tree.packages.values())
        self.progress("P2: priming out/ with the real Builder and the fake engine")
        t0 = time.monotonic()
        # The seed's .debs come from the usual cache; the synthetic sources
        # go to a private one, so the user's cache does not collect them.
        standin = FakeEngine(name="stand-in")
        r1 = buildlib.build(tree, engine=standin, options=buildlib.Options(targets=(SEED,)))
        r2 = buildlib.build(tree, engine=standin, cache=SourceCache(self.dir / "p2-cache"))
        if not (r1.ok and r2.ok):
            raise RuntimeError(f"P2: priming failed: {[(r.name, r.error) for r in r2.failed()]}")
        priming = time.monotonic() - t0
        check = buildlib.build(load_tree(root), engine=NoEngine(), cache=SourceCache(self.dir / "p2-cache"))
        if not all(r.status == "cached" for r in check.nodes.values()):
            raise RuntimeError("P2: after priming, a build is still not a no-op")
        env = _quorum_env()

        def timed(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
            t = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "quorum", *args], env=env, capture_output=True, text=True,
                               cwd=self.dir, timeout=600)
            return time.monotonic() - t, p

        noop, version = [], []
        for i in range(sz.p2_runs):
            tv, pv = timed(["--version"])
            tb, pb = timed(["build", "--tree", str(root)])
            if pb.returncode != 0 or pv.returncode != 0:
                raise RuntimeError(f"P2: the CLI failed ({pb.returncode}): {pb.stderr.strip()[-500:]}")
            summary = pb.stdout.strip().splitlines()[-1] if pb.stdout.strip() else ""
            if not summary.startswith(f"0 built, {n + 1} cached"):
                raise RuntimeError(f"P2: the timed run was not a no-op: {summary!r}")
            noop.append(tb)
            version.append(tv)
            self.progress(f"P2: run {i + 1}/{sz.p2_runs}: no-op build {tb:.3f} s, --version {tv:.3f} s")
        b, v = statistics.median(noop), statistics.median(version)
        fig.values = {"packages": n, "edges": edges, "runs": sz.p2_runs, "noop": noop, "version": version,
                      "noop_median": b, "version_median": v, "difference": b - v, "priming_seconds": priming}
        fig.rows.append(Row("P2", f"no-op `quorum build`, {n} packages, {edges} deps (CLI process, median of "
                                  f"{sz.p2_runs})",
                            _s(b), f"`quorum --version` {_s(v)}", f"+{_s(b - v)} quorum's own", "< 0.5 s", b < 0.5))
        fig.notes.append(f"out/ was primed ({priming:.1f} s) by the real Builder driving the fake engine, which "
                         "returns a one-file layer, so every input hash is the one Builder computes; the timed run "
                         "is the real CLI process (`python -m quorum build --tree T`), as a user runs it")
        return fig

    # --- P3 ---------------------------------------------------------------------
    def p3(self) -> Figure:
        from .engine import Engine
        from .tree import load_tree
        sz, fig = self.sizes, Figure("P3")
        n = sz.p3_packages
        cores = int(self.client.info().get("NCPU") or os.cpu_count() or 1)
        root = write_tree(self.tree_dir("p3"), name="p3", seed_text=self.locked_seed_text(), epoch=self.epoch)
        # The seed, loaded, for the calibration.
        b = buildlib.Builder(load_tree(root), engine=Engine(), options=buildlib.Options(targets=(SEED,)))
        res = b.run()
        self.note_images(res)
        b.ensure_loaded(SEED, b.pool.members[0])
        seed_id = res.nodes[SEED].config_digest
        iters = self._calibrate(seed_id, sz.p3_burn_seconds)
        # A wide DAG on which the bound can be reached: `cores` roots, and
        # every other package built on one or two of them.
        roots = [f"cpu{i:02d}" for i in range(min(cores, n))]
        for i in range(n):
            name = f"cpu{i:02d}"
            deps = [] if name in roots else sorted({roots[i % len(roots)], roots[(i // len(roots)) % len(roots)]})
            add(root, name, package_yaml(
                name, f'mkdir -p "$DESTDIR/usr/share/{name}"\n'
                      f'{_burn(iters)} > "$DESTDIR/usr/share/{name}/sum.txt"\n'
                      f'chmod 0644 "$DESTDIR/usr/share/{name}/sum.txt"', deps=deps))
        pkgs = [f"cpu{i:02d}" for i in range(n)]
        g = graphmod.build_graph(load_tree(root))
        # -j1 and -j<cores> alternated, so that a busy spell on the machine
        # (the engine may be shared) does not fall on one side only.
        ones, makespans, loads = [], [], []
        for rnd in range(sz.p3_rounds):
            self.progress(f"P3: round {rnd + 1}/{sz.p3_rounds}: -j1 build of {n} packages ({iters / 1e6:.1f} M "
                          "awk iterations each), no layer cache")
            loads.append(_loadavg())
            one = buildlib.build(load_tree(root), engine=Engine(),
                                 options=buildlib.Options(jobs=1, reuse=False, nocache=True))
            self.note_images(one)
            if not one.ok:
                raise RuntimeError(f"P3: -j1 build failed: {[(r.name, r.error) for r in one.failed()]}")
            self.remove_build_leftovers()
            ones.append({p: one.nodes[p].seconds for p in pkgs})
            self.progress(f"P3: round {rnd + 1}/{sz.p3_rounds}: -j{cores} build")
            stamps: list[tuple[float, dict]] = []
            many = buildlib.build(load_tree(root), engine=Engine(),
                                  options=buildlib.Options(jobs=cores, reuse=False, nocache=True),
                                  emit=lambda e, stamps=stamps: stamps.append((time.monotonic(), e)))
            self.note_images(many)
            if not many.ok:
                raise RuntimeError(f"P3: -j{cores} build failed: {[(r.name, r.error) for r in many.failed()]}")
            self.remove_build_leftovers()
            starts = [t for t, e in stamps if e.get("event") == "start" and e.get("name") in pkgs]
            ends = [t for t, e in stamps if e.get("event") == "built" and e.get("name") in pkgs]
            makespans.append({"makespan": max(ends) - min(starts), "result_seconds": many.seconds,
                              "own": {p: many.nodes[p].seconds for p in pkgs}})
            self.progress(f"P3: round {rnd + 1}/{sz.p3_rounds}: -j1 packages {sum(ones[-1].values()):.2f} s in all, "
                          f"-j{cores} makespan {makespans[-1]['makespan']:.2f} s")
        own = {p: statistics.median(o[p] for o in ones) for p in pkgs}
        cp = graphmod.critical_path(g, own)
        work = sum(own.values())
        bound = max(cp, work / cores)
        makespan = statistics.median(m["makespan"] for m in makespans)
        ratio = makespan / bound
        fig.values = {"packages": n, "cores": cores, "burn_iterations": iters, "rounds": sz.p3_rounds, "own_seconds": own,
                      "critical_path": cp, "total_work": work, "bound": bound, "makespan": makespan, "ratio": ratio,
                      "j1_runs": ones, "jobs_runs": makespans, "loadavg_per_round": loads}
        fig.rows.append(Row("P3", f"makespan -j{cores}, {n} CPU-bound packages (wide DAG), no layer cache "
                                  f"(median of {sz.p3_rounds})",
                            _s(makespan), f"bound {_s(bound)} = max(cp {cp:.1f}, {work:.1f}/{cores})",
                            f"{ratio:.2f}×", "≤ 1.1×", ratio <= 1.1))
        slow = statistics.mean(m["own"][p] for m in makespans for p in pkgs) / statistics.mean(own.values())
        fig.notes.append(f"each package runs a busybox awk loop of {iters / 1e6:.1f} M iterations (one process, "
                         f"calibrated to ~{sz.p3_burn_seconds:.0f} s of one CPU); its own time ({min(own.values()):.1f}-"
                         f"{max(own.values()):.1f} s) is the median of Result.nodes[n].seconds over the -j1 runs, engine work "
                         f"included; the makespan runs from the first package's start to the last one's publish "
                         f"(seed excluded); at -j{cores} a package took {slow:.2f}× its -j1 time on average")
        if ratio < 1:
            fig.notes.append("a ratio below 1× is impossible for a steady machine: the -j1 runs were slowed by other "
                             "work (load average at each round: "
                             + ", ".join(f"{x:.2f}" for x in loads if x is not None) + ")")
        return fig

    def _calibrate(self, image: str, seconds: float) -> int:
        """Iterations of a busybox awk loop that take ``seconds`` of one CPU,
        from two container runs (the slope removes the container's own
        start-up)."""
        def run(n: int) -> float:
            t = time.monotonic()
            self.client.containers.run(image, ["/bin/sh", "-c", _burn(n)], network_mode="none", remove=True)
            return time.monotonic() - t
        small, big = 200_000, 3_200_000
        self.progress("P3: calibrating the CPU burn")
        run(small)                      # warm-up: the first container of an image starts slower
        slope = max((run(big) - run(small)) / (big - small), 1e-9)
        n = int(min(2e9, max(1e5, round(seconds / slope, -4))))
        self.progress(f"P3: {1 / slope / 1e6:.2f} M iterations/s -> {n / 1e6:.1f} M per package")
        return n

    # --- P6 ---------------------------------------------------------------------
    def p6(self) -> Figure:
        sz, fig = self.sizes, Figure("P6")
        n = sz.p6_nodes
        root = self.tree_dir("p6")
        self.progress(f"P6: writing {n} package folders")
        t0 = time.monotonic()
        deep = synth_tree(root, n, seed_text=self._seed_text or self.fixture_seed_text(), epoch=self.epoch)
        written = time.monotonic() - t0
        runs = []
        for i in range(sz.p6_runs):
            p = subprocess.run([sys.executable, "-c", _PLAN_CHILD, str(root), deep], env=_quorum_env(),
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"P6: the planning process failed: {p.stderr.strip()[-800:]}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            runs.append(r)
            self.progress(f"P6: run {i + 1}/{sz.p6_runs}: {r['total']:.2f} s, peak {_mb(r['peak_bytes'])}")
        best = min(runs, key=lambda r: r["total"])
        total = statistics.median(r["total"] for r in runs)
        peak = max(r["peak_bytes"] for r in runs)
        delta = max(r["peak_bytes"] - r["base_bytes"] for r in runs)
        # The graph part alone, on model objects built in memory.
        mtree, mdeep = memory_tree(n)
        graph_only = []
        for _ in range(max(3, sz.p6_runs)):
            gc.collect()
            t = time.perf_counter()
            g = graphmod.build_graph(mtree)
            graphmod.order(g)
            need = graphmod.closure(g, [mdeep])
            graph_only.append(time.perf_counter() - t)
        go = statistics.median(graph_only)
        fig.values = {"nodes": n + 1, "edges": best["edges"], "deep_target": deep, "closure": best["closure"],
                      "runs": runs, "total_median": total, "peak_bytes": peak, "delta_bytes": delta,
                      "graph_only": graph_only, "graph_only_median": go, "write_seconds": written,
                      "memory_closure": len(need)}
        phases = ", ".join(f"{k} {_s(statistics.median(r['t_' + k] for r in runs))}"
                       for k in ("load_tree", "build_graph", "order", "closure"))
        fig.rows.append(Row("P6", f"plan {n + 1:,} nodes from disk (fresh process, median of {sz.p6_runs})",
                            _s(total), "", "", "< 2 s", total < 2.0))
        fig.rows.append(Row("P6", "peak memory of that planning process (VmHWM)", _mb(peak),
                            f"after imports {_mb(peak - delta)}", f"+{_mb(delta)} planning", "< 300 MB",
                            peak < 300e6))
        fig.rows.append(Row("P6", "graph only, in-memory tree (build_graph+order+closure)", _s(go), "", "",
                            "—", None))
        # The same planning with out/ present, so the parse cache
        # (out/.quorum/parsed.json) is written by a first run and used by
        # the next ones: what every `quorum build` after the first sees.
        (root / "out").mkdir(exist_ok=True)
        warm = []
        for i in range(sz.p6_runs + 1):
            p = subprocess.run([sys.executable, "-c", _PLAN_CHILD, str(root), deep], env=_quorum_env(),
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"P6: the planning process failed: {p.stderr.strip()[-800:]}")
            warm.append(json.loads(p.stdout.strip().splitlines()[-1]))
        warm_total = statistics.median(r["total"] for r in warm[1:])
        fig.values["warm_runs"] = warm
        fig.rows.append(Row("P6", f"the same with the parse cache warm (median of {sz.p6_runs} after a first run)",
                            _s(warm_total), f"cold {_s(total)}", f"{warm_total / total:.2f}×", "< 2 s",
                            warm_total < 2.0))
        fig.notes.append(f"planning = load_tree + build_graph + order + closure of one deep target: {phases}; "
                         f"{best['edges']:,} edges, the deep target {deep} needs {best['closure']:,} nodes; "
                         f"writing the folders took {written:.1f} s")
        return fig

    # --- S1, S2: the scheduler over a pool ------------------------------------------
    def s1(self) -> Figure:
        """The scheduler at StageX scale on simulated time (farmsim.py)."""
        from . import farmsim
        fig = Figure("S1")
        dag = farmsim.stagex_like()
        self.progress(f"S1: {len(dag.order)} nodes, depth {dag.depth()}, simulating {len(farmsim.SHAPES)} pools")
        results = farmsim.run_all(dag)
        worst_ms = max(r.per_node_ms for r in results)
        for r in results:
            fig.rows.append(Row("S1", f"makespan, {r.nodes} nodes, {r.slots} slots on {r.engines} engine(s), "
                                      f"{r.transfers} transfers",
                                f"{r.makespan / 3600:.2f} h", f"bound {r.lower_bound / 3600:.2f} h",
                                f"{r.ratio:.3f}x (tighter bound: {r.makespan / r.serial_bound:.3f}x)", "<= 1.10x",
                                r.ratio <= 1.10))
        fig.rows.append(Row("S1", "coordinator's own time per node (worst pool; scheduling, placement, transfers "
                                  "bookkeeping)", f"{worst_ms:.2f} ms", "", "", "< 20 ms", worst_ms < 20))
        fig.values = {"nodes": len(dag.order), "depth": dag.depth(), "edges": sum(len(d) for d in dag.deps.values()),
                      "critical_path_h": dag.critical_path() / 3600, "work_h": sum(dag.seconds.values()) / 3600,
                      "runs": [asdict(r) | {"ratio": r.ratio, "per_node_ms": r.per_node_ms} for r in results]}
        fig.notes.append("simulated time: real Schedule and Pool, fake engines on a virtual clock; a transfer of a "
                         f"dependency costs {farmsim.LOAD_SECONDS:.0f} s; build times log-normal (median 2 min, "
                         "tail of hours), a 16-stage bootstrap chain before anything else can start.  The tighter "
                         "bound adds that serial start: head(v) + work after v / slots, for every v; at 4 slots it "
                         "is what no schedule can beat")
        return fig

    def s2(self) -> Figure:
        """The fixture tree over two real engines (this machine's and a
        private dockerd over TLS in a network namespace) against one."""
        fig = Figure("S2")
        sys.path.insert(0, str(FIXTURE_SEED.parents[4]))        # tests/: the private-engine helper
        from enginehost import CannotStart, private_engine      # type: ignore[import-not-found]
        from treeutil import make_fixture_tree                   # type: ignore[import-not-found]
        env = _quorum_env()
        lock = self.locked_seed_text()

        def build(tree: Path, *engines: str) -> tuple[float, bytes]:
            args = [a for e in engines for a in ("--engine", e)]
            t = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "quorum", "build", "--tree", str(tree), "--no-cache", *args],
                               env=env, capture_output=True, text=True, timeout=1800)
            if p.returncode != 0:
                raise RuntimeError(f"S2: the build failed: {p.stderr.strip()[-400:]}")
            return time.monotonic() - t, (tree / "manifests" / "manifest.json").read_bytes()
        try:
            with private_engine(self.dir / "s2-engine") as host:
                tls = self.dir / "s2-tls"
                tls.mkdir()
                for part in ("ca", "cert", "key"):
                    shutil.copyfile(getattr(host.tls, part), tls / f"{part}.pem")
                os.chmod(tls / "key.pem", 0o600)
                local = "unix:///var/run/docker.sock,name=local"
                one_t, one_m = build(make_fixture_tree(self.dir / "s2-one", seed_lock=lock), local)
                two_t, two_m = build(make_fixture_tree(self.dir / "s2-two", seed_lock=lock), local,
                                     f"{host.url},name=second,tls={tls}")
        except CannotStart as e:
            fig.status = "n/a"
            fig.rows.append(Row("S2", "fixture tree on two engines", f"not run: {e}"))
            return fig
        fig.values = {"one_engine": one_t, "two_engines": two_t, "identical": one_m == two_m}
        fig.rows.append(Row("S2", "fixture tree, --no-cache, on 2 engines (one a private dockerd over TLS)",
                            _s(two_t), f"1 engine {_s(one_t)}", f"{two_t / one_t:.2f}x",
                            "manifest identical", one_m == two_m))
        fig.notes.append("the private engine starts empty on vfs storage: every dependency it needs is "
                         "transferred, so on a tree this small two engines are not expected to be faster")
        return fig

    # --- R1 ---------------------------------------------------------------------
    def r1(self) -> Figure:
        """reproduce --all of the fixture tree against a cold build of it (no
        layer cache, nothing reused from out/), alternated in this process:
        the same work, so the target is <= 1.05x."""
        from . import reproduce as repro
        from .engine import Engine
        from .tree import load_tree
        sz, fig = self.sizes, Figure("R1")
        root = self.tree_dir("r1") / "tree"
        shutil.copytree(FIXTURE_SEED.parent.parent.parent, root)
        src = self.tree_dir("r1") / "src"
        src.mkdir(parents=True)
        greeting = b"hello, reproducible world\n"
        (src / "greeting-1.0.txt").write_bytes(greeting)
        base = root / "packages" / "base" / "package.yaml"
        base.write_text(base.read_text().replace("@SRCDIR@", str(src))
                        .replace("@GREETING_SHA256@", hashlib.sha256(greeting).hexdigest()))
        cfg = root / "quorum.yaml"
        # this run's own epoch, so its images can be removed afterwards
        cfg.write_text(re.sub(r"source_date_epoch: \d+", f"source_date_epoch: {self.epoch}", cfg.read_text()))
        (root / "bootstrap" / "seeds" / f"{SEED}.yaml").write_text(self.locked_seed_text())
        first = buildlib.build(load_tree(root), engine=Engine(), options=buildlib.Options(jobs=1))
        self.note_images(first)
        if not first.ok:
            raise RuntimeError(f"R1's first build failed: {[(r.name, r.error) for r in first.failed()]}")
        builds, repros = [], []
        for i in range(sz.r1_rounds):
            self.progress(f"R1: round {i + 1}/{sz.r1_rounds}: cold build, then reproduce --all")
            t = time.monotonic()
            res = buildlib.build(load_tree(root), engine=Engine(),
                                 options=buildlib.Options(jobs=1, reuse=False, nocache=True))
            builds.append(time.monotonic() - t)
            self.note_images(res)
            t = time.monotonic()
            r = repro.reproduce(load_tree(root), all_=True, jobs=1, engine=Engine(), diffoscope=False)
            repros.append(time.monotonic() - t)
            if r.exit_code != 0:
                raise RuntimeError(f"R1: the fixture tree did not reproduce: "
                                   f"{[(v.name, v.verdict, v.reason) for v in r.verdicts if v.verdict != 'REPRODUCED']}")
        ratios = [b / a for a, b in zip(builds, repros)]
        ratio = statistics.median(ratios)
        fig.values = {"builds": builds, "reproduces": repros, "ratios": ratios}
        fig.rows.append(Row("R1", f"reproduce --all / cold build, fixture tree ({len(first.order)} nodes, "
                                  f"median of {sz.r1_rounds} pairs)",
                            f"reproduce {_s(statistics.median(repros))}", f"cold build {_s(statistics.median(builds))}",
                            f"{ratio:.2f}×", "≤ 1.05×", ratio <= 1.05))
        fig.notes.append("both without the engine's layer cache and without out/; reproduce adds the variations "
                         "(another build path, time zone, locale, umask, one CPU, an extra variable) and the "
                         "digest comparison")
        return fig


    def r2(self) -> Figure:
        """The default tree: reproduce --all -j 2 against its cold build -j 2."""
        from . import reproduce as repro
        from .benchtree import copy_default_tree
        from .engine import Engine
        from .tree import load_tree
        fig = Figure("R2")
        root = copy_default_tree(self.tree_dir("r2") / "tree", self.epoch)
        self.progress("R2: cold build of the default tree (-j 2)")
        t = time.monotonic()
        res = buildlib.build(load_tree(root), engine=Engine(), options=buildlib.Options(jobs=2))
        build_s = time.monotonic() - t
        self.note_images(res)
        if not res.ok:
            raise RuntimeError(f"R2: the default tree did not build: {[(r.name, r.error) for r in res.failed()]}")
        self.progress("R2: reproduce --all -j 2 on Docker")
        t = time.monotonic()
        r = repro.reproduce(load_tree(root), all_=True, jobs=2, engine=Engine(), diffoscope=False)
        repro_s = time.monotonic() - t
        bad = [(v.name, v.verdict) for v in r.verdicts if v.verdict != "REPRODUCED"]
        fig.values = {"build": build_s, "reproduce": repro_s, "nodes": len(res.order), "not_reproduced": bad,
                      "applied": sorted(r.applied)}
        fig.rows.append(Row("R2", f"reproduce --all -j 2 / cold build -j 2, default tree ({len(res.order)} nodes, "
                                  f"{len(r.verdicts) - len(bad)} REPRODUCED)",
                            f"reproduce {_s(repro_s)}", f"cold build {_s(build_s)}", f"{repro_s / build_s:.2f}×",
                            "all REPRODUCED", not bad))
        fig.notes.append(f"variations applied: {', '.join(sorted(r.applied))}; the rebuild also compiles the "
                         "preload shim and rebuilds the seeds")
        self._r2_root = root
        self._r2_repro = repro_s
        return fig

    def r3(self) -> Figure:
        """The default tree's rebuild on Podman against the same on Docker."""
        from . import reproduce as repro
        from .benchtree import podman_service
        from .engine import Engine
        from .tree import load_tree
        fig = Figure("R3")
        if self._r2_root is None:
            self.r2()
        assert self._r2_root is not None
        with podman_service(self.tree_dir("r3")) as url:
            self.progress(f"R3: reproduce --all -j 2 on Podman ({url})")
            t = time.monotonic()
            r = repro.reproduce(load_tree(self._r2_root), all_=True, jobs=2, engine=Engine(url), diffoscope=False,
                                out=self._r2_root / "out" / "reproduce-podman")
            podman_s = time.monotonic() - t
        bad = [(v.name, v.verdict, v.reason[:80]) for v in r.verdicts if v.verdict != "REPRODUCED"]
        fig.values = {"podman": podman_s, "docker": self._r2_repro, "not_reproduced": bad}
        fig.rows.append(Row("R3", f"reproduce --all -j 2 on Podman / on Docker, default tree "
                                  f"({len(r.verdicts) - len(bad)} of {len(r.verdicts)} REPRODUCED)",
                            f"Podman {_s(podman_s)}", f"Docker {_s(self._r2_repro)}",
                            f"{podman_s / self._r2_repro:.2f}×", "all REPRODUCED", not bad))
        fig.notes.append("Podman is a private `podman system service` with vfs storage (a full copy per layer) and "
                         "runc; both rebuilds apply the same variations and judge against the same manifest")
        return fig


def _burn(iterations: int) -> str:
    """A CPU burn of one process (a `dd | sha256sum` pipe would keep two CPUs
    busy at -j1 and make the bound too low)."""
    return f"awk 'BEGIN {{ for (i = 0; i < {iterations}; i++) s += i; print s }}'"


def _exists(api, image: str) -> bool:
    try:
        api.inspect_image(image)
        return True
    except Exception:
        return False


# The planning process of P6: only what planning imports, then one pass.
_PLAN_CHILD = r"""
import gc, json, sys, time

def hwm():
    # VmHWM belongs to this process's own address space; ru_maxrss would
    # carry over the parent's peak across fork and exec.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

from quorum import graph
from quorum.tree import load_tree
gc.collect()
base = hwm()
t0 = time.perf_counter()
tree = load_tree(sys.argv[1])
t1 = time.perf_counter()
g = graph.build_graph(tree)
t2 = time.perf_counter()
order = graph.order(g)
t3 = time.perf_counter()
need = graph.closure(g, [sys.argv[2]])
t4 = time.perf_counter()
print(json.dumps({"t_load_tree": t1 - t0, "t_build_graph": t2 - t1, "t_order": t3 - t2, "t_closure": t4 - t3,
                  "total": t4 - t0, "base_bytes": base, "peak_bytes": hwm(), "nodes": len(order),
                  "edges": g.number_of_edges(), "closure": len(need)}))
"""


def run(only: list[str] | tuple[str, ...] = FIGURES, sizes: Sizes = Sizes(), *,
        progress: Callable[[str], None] | None = None, quick: bool = False, workdir: Path | None = None) -> Report:
    """Measure the figures in ``only``; never raises for a figure that fails
    (it becomes a row saying so, with status "error")."""
    t0 = time.monotonic()
    progress = progress or Progress()
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "loadavg_start": _loadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-", dir=workdir))
    bench = Bench(sizes, progress, tmp)
    figures: list[Figure] = []
    try:
        for key in FIGURES:
            if key not in only:
                continue
            f0 = time.monotonic()
            load = _loadavg()
            progress(f"{key}: start" + (f" (load average {load:.2f})" if load is not None else ""))
            try:
                fig = getattr(bench, key.lower())()
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                fig = Figure(key, status="error")
                fig.rows.append(Row(key, "could not be measured", f"error: {e.__class__.__name__}: {e}"[:160]))
            fig.seconds = time.monotonic() - f0
            progress(f"{key}: done in {fig.seconds:.1f} s")
            figures.append(fig)
    finally:
        if bench._client is not None or bench.seed_images:
            progress("removing the images this run made")
            try:
                v = bench.client.version()
                machine["engine"] = {"version": v.get("Version"), "api": v.get("ApiVersion")}
            except Exception:
                pass
            bench.cleanup_engine()
        shutil.rmtree(tmp, ignore_errors=True)
    machine["loadavg_end"] = _loadavg()
    return Report(figures=figures, machine=machine, quick=quick, seconds=time.monotonic() - t0)


def _only(text: str) -> list[str]:
    keys = [k.strip().upper() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in FIGURES]
    if bad or not keys:
        raise argparse.ArgumentTypeError(f"unknown figure {', '.join(bad) or '(none)'}; known: {', '.join(FIGURES)}")
    return keys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quorum.bench",
                                description="Measure quorum's performance figures on synthetic trees (P1 overhead "
                                            "against plain docker-py, P2 no-op build, P3 makespan, P6 planning, R1 "
                                            "reproduce, S1 the scheduler over pools of fake engines, S2 two real "
                                            "engines) and print them against their targets.",
                                epilog="The exit status is 0 whatever the figures say (a benchmark reports, it "
                                       "does not judge); 1 if a figure could not be measured.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a smoke run (3 trivial packages, 100-package no-op, 3 CPU packages, "
                        "2,000 nodes)")
    p.add_argument("--only", type=_only, default=[f for f in FIGURES if f not in ON_REQUEST], metavar="P1,P2,...",
                   help=f"measure only these figures (of {', '.join(FIGURES)}; {', '.join(ON_REQUEST)} take "
                        "minutes each (R2, R3 rebuild the default tree; S2 starts a private dockerd, as root) and "
                        "run only when named)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object instead of a table")
    args = p.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    try:
        report = run(args.only, sizes, quick=args.quick)
    except KeyboardInterrupt:
        print("bench: interrupted; temporary trees and images removed", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        m = report.machine
        head = f"quorum {__version__} bench{' (--quick)' if report.quick else ''}: {m.get('cpus')} CPUs"
        if m.get("engine"):
            head += f", engine {m['engine'].get('version')}"
        if m.get("loadavg_start") is not None:
            head += f", load average {m['loadavg_start']:.2f} at start, {m.get('loadavg_end') or 0:.2f} at end"
        print(head + f"; {report.seconds:.0f} s in all\n")
        print(report.table())
    return 1 if report.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
