"""The bootstrap's diverse double-compiling gate, on the real engine.

TinyCC is compiled by two seeds of independent lineage (GCC, Clang); each
stage-1 TinyCC then compiles TinyCC again, and the two stage-2 compilers must
be bit-identical.  The test uses the repository's own definitions, with the
seeds locked now (the committed pins may have left Debian's archive)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from quorum import build as buildlib
from quorum import reproduce as repro
from quorum import seed as seedmod
from quorum.fetch import SourceCache
from quorum.tree import load_tree

pytestmark = [pytest.mark.engine, pytest.mark.slow]

STAGES = ["tcc-stage1-gcc", "tcc-stage1-clang", "tcc-stage2-gcc", "tcc-stage2-clang"]
# The toolchain of packages/ and its fastest package: rebuilt under every
# variation by test_default_tree_reproduces_under_every_variation.
TOOLCHAIN = ["musl", "tcc-musl"]
PACKAGES = ["zlib"]


@pytest.fixture(scope="module")
def ddc_tree(tmp_path_factory) -> Path:
    t = tmp_path_factory.mktemp("ddc") / "tree"
    (t / "bootstrap").mkdir(parents=True)
    # The default tree's settings without its seed-free gate: that gate
    # needs environments/tree-tools.yaml and all its members, and this test
    # is about the compiler (the gate is exercised by `make` on the default
    # tree and on the fixture tree by test_environment_gate.py).
    config = yaml.safe_load((ROOT / "quorum.yaml").read_text())
    config["gates"] = {k: v for k, v in config["gates"].items() if "environment" not in v}
    (t / "quorum.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(ROOT / "bootstrap" / "seeds", t / "bootstrap" / "seeds")
    for s in STAGES + TOOLCHAIN:
        shutil.copytree(ROOT / "bootstrap" / s, t / "bootstrap" / s)
    for p in PACKAGES:
        shutil.copytree(ROOT / "packages" / p, t / "packages" / p)
    (t / "manifests").mkdir()
    tree = load_tree(t)
    cache = SourceCache()
    for s in ("gcc", "clang", "tools"):
        seedmod.write_lock(tree.seeds[s], seedmod.lock(tree.seeds[s], cache))
    return t


def test_stage2_compilers_are_bit_identical(ddc_tree, engine):
    events: list[dict] = []
    # Asking for one side of the gate builds both: the gate cannot be skipped.
    res = buildlib.build(load_tree(ddc_tree), engine=engine,
                         options=buildlib.Options(jobs=2, targets=("tcc-stage2-gcc",)), emit=events.append)
    assert res.ok, [(r.name, r.error, r.log_tail[-5:]) for r in res.failed()]
    assert set(STAGES) <= {n for n, r in res.nodes.items() if r.status in ("built", "cached")}
    gate = res.gates["ddc-tcc"]
    assert gate["result"] == "pass"
    assert gate["digests"]["tcc-stage2-gcc"] == gate["digests"]["tcc-stage2-clang"]
    # ... while the stage-1 compilers, made by different compilers, differ:
    # the agreement above is evidence, not a coincidence of identical inputs.
    assert res.nodes["tcc-stage1-gcc"].layer_digest != res.nodes["tcc-stage1-clang"].layer_digest
    assert [e for e in events if e["event"] == "gate"][0]["result"] == "pass"


def test_default_tree_reproduces_under_every_variation(ddc_tree, engine):
    """The default tree's own definitions, not a fixture made to pass: musl,
    the musl TinyCC and zlib, rebuilt with every cache off and every
    variation on, must come out bit-identical.  Guards against a package
    change that embeds the build path (TinyCC's -g), follows the umask, the
    build user, the order a folder lists in or the date."""
    # the whole (small) tree: only a full build writes the manifest that
    # reproduce compares with
    res = buildlib.build(load_tree(ddc_tree), engine=engine, options=buildlib.Options(jobs=2))
    assert res.ok, [(r.name, r.error, r.log_tail[-5:]) for r in res.failed()]
    r = repro.reproduce(load_tree(ddc_tree), packages=TOOLCHAIN + PACKAGES, jobs=2, engine=engine,
                        diffoscope=False)
    assert {v.name: v.verdict for v in r.verdicts} == {n: "REPRODUCED" for n in TOOLCHAIN + PACKAGES}, \
        [(v.name, v.verdict, v.reason, v.diff_text) for v in r.verdicts if v.verdict != "REPRODUCED"]
    assert {"build_path", "timezone", "umask", "cpus", "environment", "user", "clock", "file_order"} <= set(r.applied)
    # the preload shim reaches every one of them: the tools seed is glibc-linked
    assert "every rebuilt package's dynamically linked programs (3 packages)" in r.applied["clock"]
    assert "tcc-musl" in r.applied["user"]      # needs-root: named, not hidden
