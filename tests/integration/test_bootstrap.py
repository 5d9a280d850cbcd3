"""The bootstrap's diverse double-compiling gate, on the real engine.

TinyCC is compiled by two seeds of independent lineage (GCC, Clang); each
stage-1 TinyCC then compiles TinyCC again, and the two stage-2 compilers must
be bit-identical.  The test uses the repository's own definitions, with the
seeds locked now (the committed pins may have left Debian's archive)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from quorum import build as buildlib
from quorum import seed as seedmod
from quorum.fetch import SourceCache
from quorum.tree import load_tree

pytestmark = [pytest.mark.engine, pytest.mark.slow]

STAGES = ["tcc-stage1-gcc", "tcc-stage1-clang", "tcc-stage2-gcc", "tcc-stage2-clang"]


@pytest.fixture(scope="module")
def ddc_tree(tmp_path_factory) -> Path:
    t = tmp_path_factory.mktemp("ddc") / "tree"
    (t / "bootstrap").mkdir(parents=True)
    shutil.copy(ROOT / "quorum.yaml", t / "quorum.yaml")
    shutil.copytree(ROOT / "bootstrap" / "seeds", t / "bootstrap" / "seeds")
    for s in STAGES:
        shutil.copytree(ROOT / "bootstrap" / s, t / "bootstrap" / s)
    (t / "manifests").mkdir()
    tree = load_tree(t)
    cache = SourceCache()
    for s in ("gcc", "clang"):
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
