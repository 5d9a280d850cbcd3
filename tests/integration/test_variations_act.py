"""Each variation that reproduce adds must catch a package made sensitive
to it, alone: file order, a date at day granularity, the build user.  The
package builds in the default tree's GCC seed (dynamically linked Debian
tools, locked now), which is also what quorum compiles its preload shim in."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import ROOT, run_quorum
from quorum import seed as seedmod
from quorum.fetch import SourceCache
from quorum.tree import load_tree
from treeutil import add_package

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SENSITIVE = """\
name: sensitive
version: "1"
seed: gcc
description: >-
  writes an unsorted folder listing, the build day and the build user into
  its artifact
build: |
  mkdir -p "$DESTDIR/s" d
  for f in one two three four five six; do echo "$f" > "d/$f"; done
  ls -f d | grep -v '^[.]' > "$DESTDIR/s/order"
  date +%F > "$DESTDIR/s/day"
  id -u > "$DESTDIR/s/uid"
  chmod 0644 "$DESTDIR/s/order" "$DESTDIR/s/day" "$DESTDIR/s/uid"
"""


@pytest.fixture(scope="module")
def sensitive_tree(tmp_path_factory, locked_seed_text):
    from treeutil import make_fixture_tree
    root = make_fixture_tree(tmp_path_factory.mktemp("vary") / "tree", seed_lock=locked_seed_text)
    shutil.copy(ROOT / "bootstrap" / "seeds" / "gcc.yaml", root / "bootstrap" / "seeds" / "gcc.yaml")
    tree = load_tree(root)
    seedmod.write_lock(tree.seeds["gcc"], seedmod.lock(tree.seeds["gcc"], SourceCache()))
    add_package(root, "sensitive", SENSITIVE)
    p = run_quorum("build", "--tree", str(root), timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    return root


def _reproduce(root, vary):
    p = run_quorum("reproduce", "--tree", str(root), "--no-diffoscope", f"--vary={vary}", "sensitive")
    report = json.loads((root / "out/reproduce/report.json").read_text())
    return p, report


@pytest.mark.parametrize("vary,leaks", [("file_order", "s/order"), ("clock", "s/day"), ("user", "s/uid")])
def test_each_variation_alone_catches_its_leak(sensitive_tree, vary, leaks):
    p, report = _reproduce(sensitive_tree, f"-all,+{vary}")
    assert vary in report["applied"], report["not_applied"]
    assert p.returncode == 1, p.stdout + p.stderr
    assert report["verdicts"][0]["verdict"] == "MISMATCH"
    diff = (sensitive_tree / "out/reproduce/sensitive/diff.txt").read_text()
    # the file the variation reaches, and none of the others
    assert leaks in diff and leaks in p.stdout
    for other in {"s/order", "s/day", "s/uid"} - {leaks}:
        assert other not in diff, (vary, diff)


def test_without_the_variations_it_reproduces(sensitive_tree):
    # The control: the same rebuild with only what cannot be switched off
    # agrees, so the mismatches above are the variations' doing.
    p, report = _reproduce(sensitive_tree, "-all")
    assert p.returncode == 0, p.stdout + p.stderr
    assert report["verdicts"][0]["verdict"] == "REPRODUCED"


def test_static_seed_is_named_as_not_reached(sensitive_tree):
    # The fixture's packages build in a static busybox: no preload reaches
    # them, and the report says so instead of claiming the clock moved.
    p = run_quorum("reproduce", "--tree", str(sensitive_tree), "--no-diffoscope", "--vary=-all,+clock", "base")
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads((sensitive_tree / "out/reproduce/report.json").read_text())
    assert "clock" in report["not_applied"] and "busybox has only static programs" in report["not_applied"]["clock"]


def test_shim_compiler_must_be_the_manifests_seed(sensitive_tree, tmp_path):
    # The shim runs inside every rebuild: if out/'s GCC seed is not the one
    # the manifest names, it is not used (and the variations say so), since
    # a swapped compiler could make a poisoned artifact "reproduce".
    path = sensitive_tree / "manifests" / "manifest.json"
    original = path.read_bytes()
    doc = json.loads(original)
    entry = doc["artifacts"]["gcc"]
    entry["digest"] = "sha256:" + "0" * 64
    path.write_text(json.dumps(doc))
    try:
        _reproduce(sensitive_tree, "-all,+clock")
        report = json.loads((sensitive_tree / "out/reproduce/report.json").read_text())
        assert "clock" not in report["applied"]
        assert "not the one the manifest names" in report["not_applied"]["clock"]
    finally:
        path.write_bytes(original)
