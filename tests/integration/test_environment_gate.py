"""Environments made of tree artifacts and the seed-free gate, on the real
engine with the fixture tree (docs/spec/environment.md).

The fixture's only seed is Debian's busybox.  ``toolbox`` (a package of the
tree) copies that busybox and makes its applet links; the environment
``kit`` is toolbox + base, so every fixture package can be built in it, and
the gate builds each package of packages/ a second time there.  A toolbox
whose ``cat`` adds a byte is the poisoned tool the gate exists to catch.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from conftest import run_quorum
from quorum import build as buildlib
from quorum import oci
from quorum.store import Store
from quorum.tree import load_tree
from treeutil import TOOLBOX, add_package

pytestmark = pytest.mark.engine

# A shell that does its job and then adds a byte to every text file the
# build made: what a poisoned tool in a build environment looks like from
# the outside.  (A wrapped cat would not do: the seed's busybox shell runs
# its own applets before anything on PATH.)
SH_WRAPPER = """#!/bin/busybox sh
/bin/busybox sh "$@" || exit
for f in $(/bin/busybox find /rootfs -type f -name '*.txt'); do /bin/busybox printf x >> "$f"; done
"""
POISON = 'cp sh-wrapper "$DESTDIR/bin/sh"\n  chmod 0755 "$DESTDIR/bin/sh"'

KIT = """name: kit
description: a build environment made of fixture artifacts only
members: [toolbox, base]
symlinks:
  /bin/sh: busybox
"""

AFTER = """name: after
version: '1'
seed: kit
deps: [top]
build: |
  mkdir -p "$DESTDIR/usr/share/after"
  cp /usr/share/top/both.txt "$DESTDIR/usr/share/after/both.txt"
  chmod -R u=rwX,go=rX "$DESTDIR"
"""


def build(tree_dir: Path, engine, **opts) -> tuple[buildlib.Result, list[dict]]:
    events: list[dict] = []
    res = buildlib.build(load_tree(tree_dir), engine=engine, options=buildlib.Options(**opts), emit=events.append)
    return res, events


def layer_names(tree_dir: Path, name: str) -> dict[str, tarfile.TarInfo]:
    return oci.layer_entries(oci.read_layout(tree_dir / "out" / name)["layer_path"])


def test_packages_built_in_an_environment_of_tree_artifacts_must_equal_their_seed_builds(fixture_tree, engine):
    add_package(fixture_tree, "toolbox", TOOLBOX.replace("POISON", ":"))
    add_package(fixture_tree, "after", AFTER)
    (fixture_tree / "environments").mkdir()
    (fixture_tree / "environments" / "kit.yaml").write_text(KIT)
    cfg = fixture_tree / "quorum.yaml"
    cfg.write_text(cfg.read_text() + "gates:\n  seed-free:\n    environment: kit\n")

    res, events = build(fixture_tree, engine, jobs=2)
    assert res.ok, [(r.name, r.error) for r in res.failed()]
    members = ["base", "left", "right", "solo", "toolbox", "top"]
    twins = [f"{m}@kit" for m in members]
    assert all(res.nodes[t].status == "built" for t in twins)
    # The environment is the union of its members plus its symlinks; the
    # package naming it was built after the gate, in it.
    env = layer_names(fixture_tree, "kit")
    assert env["bin/sh"].issym() and env["bin/sh"].linkname == "busybox"
    assert "bin/busybox" in env and "usr/share/base/greeting.txt" in env and "usr/lib" not in env
    order = [e["name"] for e in events if e["event"] == "built"]
    assert order.index("gate:seed-free") < order.index("after")
    assert order.index("gate:seed-free") > max(order.index(t) for t in twins)

    m = json.loads((fixture_tree / "manifests/manifest.json").read_text())
    assert m["artifacts"]["kit"]["kind"] == "environment"
    assert not any("@" in n or n.startswith("gate:") for n in m["artifacts"])   # proofs, not artifacts
    check = m["checks"]["seed-free"]
    assert check["result"] == "pass" and check["environment"] == "kit" and check["members"] == members
    for p in members:
        assert check["digests"][p] == check["digests"][f"{p}@kit"]
    # The twin is in the store (so a second build takes it from the cache),
    # and is the same files as its package.
    store = Store(fixture_tree / "out")
    assert store.record("top@kit").layer_digest == store.record("top").layer_digest

    p = run_quorum("audit", "--tree", str(fixture_tree), "--json")
    doc = json.loads(p.stdout)
    sf = doc["seed_free"]
    assert sf == [{"gate": "seed-free", "environment": "kit", "identical": members, "exempt": {}, "in_environment": ["after"], "missing": []}]
    # toolbox ships the seed's busybox (the fixture has no other shell), and
    # the environment with it: the audit names both.
    assert {(f["package"], f["path"]) for f in doc["findings"]} == {("toolbox", "bin/busybox"), ("kit", "bin/busybox")}

    # Poison the environment's shell: the gate fails, names the package and
    # the file, nothing built in the environment is built, no manifest.
    add_package(fixture_tree, "toolbox", TOOLBOX.replace("POISON", POISON), files={"sh-wrapper": SH_WRAPPER})
    (fixture_tree / "environments" / "kit.yaml").write_text(KIT.split("symlinks:")[0])
    after = fixture_tree / "packages" / "after" / "package.yaml"
    after.write_text(after.read_text().replace("after/both.txt", "after/copy.txt"))
    before = (fixture_tree / "manifests/manifest.json").read_bytes()
    p = run_quorum("build", "--tree", str(fixture_tree), "-j", "2")
    assert p.returncode == 1, p.stderr
    assert "gate seed-free: base built in kit differs from its build in busybox (and 3 more" in p.stderr
    assert "usr/share/base/greeting.txt" in p.stderr
    assert (fixture_tree / "manifests/manifest.json").read_bytes() == before
    res2, _ = build(fixture_tree, engine)
    assert not res2.ok
    assert res2.nodes["gate:seed-free"].status == "failed"
    assert res2.nodes["after"].status == "skipped"
    check = res2.gates["seed-free"]
    assert check["result"] == "fail"
    assert [d.split(":")[0] for d in check["differences"]] == \
        ["base vs base@kit", "left vs left@kit", "right vs right@kit", "top vs top@kit"]
    assert "usr/share/top/both.txt" in check["differences"][3]
    assert check["digests"]["toolbox"] == check["digests"]["toolbox@kit"]   # the fixed point still holds

    # An explicit exemption (with its reason) lets the gate pass; the record
    # and the audit name every exempt package, and that it still differs.
    why = "the poisoned shell of the fixture: exempt only to show the mechanism"
    cfg.write_text(cfg.read_text() + "    exempt:\n" + "".join(f"      {p}: '{why}'\n"
                                                             for p in ("base", "left", "right", "top")))
    res3, _ = build(fixture_tree, engine)
    assert res3.ok, [(r.name, r.error) for r in res3.failed()]
    check = json.loads((fixture_tree / "manifests/manifest.json").read_text())["checks"]["seed-free"]
    assert check["result"] == "pass"
    assert check["exempt"] == {p: {"reason": why, "identical": False} for p in ("base", "left", "right", "top")}
    p = run_quorum("audit", "--tree", str(fixture_tree))
    assert f"EXEMPT top: {why}" in p.stdout
    assert "gate seed-free: 2 packages built again in kit" in p.stdout   # solo and toolbox
