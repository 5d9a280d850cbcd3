"""reproduce's variations: each acts, or says why it cannot."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from quorum import oci, variations
from quorum.variations import clock
from quorum.tree import load_tree
from treeutil import add_package, make_fixture_tree


def seed_layout(tmp_path: Path, files: list[str]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for f in files:
            ti = tarfile.TarInfo(f)
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    raw.seek(0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as out:
        info = oci.normalize_layer(raw, out, epoch=1)
    oci.write_layout(tmp_path / "layout", layer, info, epoch=1, name="s", version="1", namespace="t")
    return tmp_path / "layout"


@pytest.fixture
def tree(tmp_path):
    root = make_fixture_tree(tmp_path / "tree")
    add_package(root, "rooty", "name: rooty\nversion: '1'\nneeds-root: installs into /usr of the build environment\n"
                               "build: 'true'\n")
    return load_tree(root)


def plan(tree, chosen, layouts=None, targets=None, cpus=2):
    ctx = variations.Context(tree=tree, targets=frozenset(targets or tree.packages), layouts=layouts or {},
                             cpu_count=cpus)
    return variations.plan(chosen, ctx)


def test_every_variation_is_on_by_default_and_the_preload_ones_say_why_not(tree):
    assert variations.parse_vary(None) == set(variations.names())
    o = plan(tree, variations.parse_vary(None))
    assert set(o.applied) | set(o.not_applied) == set(variations.names())
    # the fixture tree has no seed to compile the preload shim in
    assert {"clock", "file_order"} <= set(o.not_applied) and not {"clock", "file_order"} & set(o.applied)
    assert "GCC" in o.not_applied["clock"] and not o.plan.preload
    s = o.plan.settings
    assert s.build_user == "4242:4242" and s.umask == "002" and s.build_dir != "/build"
    assert o.plan.cpuset == "0"
    assert "rooty" in o.applied["user"]          # named as built as root


def test_switched_off_and_unavailable_have_reasons(tree):
    o = plan(tree, variations.parse_vary("-all,+umask"), cpus=1)
    assert set(o.applied) == {"umask", "hostname", "domain"}
    assert o.not_applied["timezone"] == "switched off with --vary"
    o = plan(tree, variations.parse_vary("+cpus"), cpus=1)
    assert o.not_applied["cpus"] == "this machine has one CPU"
    o = plan(tree, {"user"}, targets={"rooty"})
    assert "user" in o.not_applied and o.plan.settings.build_user is None


def test_locale_acts_only_when_every_seed_has_its_data(tree, tmp_path):
    seed = tree.config.default_seed or next(iter(tree.seeds))
    no_data = seed_layout(tmp_path / "a", ["usr/bin/sh"])
    o = plan(tree, {"locale"}, layouts={seed: no_data})
    assert "no locale data" in o.not_applied["locale"] and o.plan.settings.locale == "C"
    o = plan(tree, {"locale"})
    assert "not built" in o.not_applied["locale"]
    c_utf8 = seed_layout(tmp_path / "b", ["usr/lib/locale/C.utf8/LC_CTYPE"])
    o = plan(tree, {"locale"}, layouts={seed: c_utf8})
    assert o.plan.settings.locale == "C.UTF-8" and "locale" in o.applied


def test_needs_root_wants_a_reason(tmp_path):
    from quorum.errors import DefinitionError
    root = make_fixture_tree(tmp_path / "tree")
    add_package(root, "rooty", "name: rooty\nversion: '1'\nneeds-root: yes\nbuild: 'true'\n")
    with pytest.raises(DefinitionError, match="needs-root"):
        load_tree(root)


GCC_SEED = """\
name: gcc
request: [gcc-12, libc6-dev]
packages:
  - {name: gcc-12, version: "12", arch: amd64, sha256: %s}
  - {name: libc6-dev, version: "2", arch: amd64, sha256: %s}
""" % ("a" * 64, "b" * 64)

LOADER = "lib64/ld-linux-x86-64.so.2"


@pytest.fixture
def gcc_tree(tmp_path):
    root = make_fixture_tree(tmp_path / "tree")
    (root / "bootstrap" / "seeds" / "gcc.yaml").write_text(GCC_SEED)
    add_package(root, "dyn", "name: dyn\nversion: '1'\nseed: gcc\nbuild: 'true'\n")
    add_package(root, "own", "name: own\nversion: '1'\nseed: gcc\n",
                files={"Containerfile": "FROM {{ seed }}\n"})
    return load_tree(root)


def test_preload_variations_act_where_a_loader_is_and_name_what_they_miss(gcc_tree, tmp_path):
    layouts = {"gcc": seed_layout(tmp_path / "g", [LOADER, "usr/bin/gcc-12"]),
               "busybox": seed_layout(tmp_path / "b", ["bin/busybox"])}
    o = plan(gcc_tree, {"clock", "file_order"}, layouts=layouts)
    assert {"clock", "file_order"} <= set(o.applied), o.not_applied
    assert o.plan.preload == {"QUORUM_VARY_READDIR": "reverse", "QUORUM_VARY_CLOCK_OFFSET": str(clock.OFFSET)}
    how = o.applied["clock"]
    # what the shim does not reach is named, with why
    assert "own Containerfile: own" in how and "seed busybox has only static programs" in how
    assert "base" in how and "3 years" in how
    # an offset of years: the date moves in every field
    assert clock.OFFSET > 3 * 365 * 86400


def test_preload_variations_do_not_claim_static_only_rebuilds(gcc_tree, tmp_path):
    layouts = {"gcc": seed_layout(tmp_path / "g", [LOADER]), "busybox": seed_layout(tmp_path / "b", ["bin/busybox"])}
    o = plan(gcc_tree, {"clock"}, layouts=layouts, targets={"base", "own"})
    assert "clock" in o.not_applied and not o.plan.preload
    assert "base: seed busybox has only static programs" in o.not_applied["clock"]
    # the compiler seed must be built to compile the shim
    o = plan(gcc_tree, {"file_order"}, layouts={"busybox": layouts["busybox"]}, targets={"dyn"})
    assert "not built in out/" in o.not_applied["file_order"]
