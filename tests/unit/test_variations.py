"""reproduce's variations: each acts, or says why it cannot."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from quorum import oci, variations
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


def test_every_variation_is_on_by_default_and_clock_never_claims_to_act(tree):
    assert variations.parse_vary(None) == set(variations.names())
    o = plan(tree, variations.parse_vary(None))
    assert set(o.applied) | set(o.not_applied) == set(variations.names())
    assert {"clock", "file_order"} <= set(o.not_applied) and not {"clock", "file_order"} & set(o.applied)
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
