"""The environment format and the environment gate's configuration
(docs/spec/environment.md): hostile and wrong definitions are refused by
`quorum graph` with one line naming the file and the field, exit 3; the
union of members' layers refuses conflicts and does not depend on anything
but its inputs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT, refused
from quorum import environment as envmod
from quorum.errors import DefinitionError, UnsafeArchiveError
from quorum.model import Environment

SEED = "name: s\nrequest: [busybox-static]\n"
PKG = "name: {n}\nversion: '1'\nbuild: 'true'\n"


def write_tree(root: Path, *, pkgs: dict[str, str] | None = None, envs: dict[str, str] | None = None,
               config: str = "name: t\ndefaults:\n  seed: s\n") -> Path:
    """A tree with the seed s and packages a, b (unless ``pkgs`` says
    otherwise) and the environments given as file name -> text."""
    (root / "bootstrap" / "seeds").mkdir(parents=True)
    (root / "bootstrap" / "seeds" / "s.yaml").write_text(SEED)
    (root / "quorum.yaml").write_text(config)
    for name, text in (pkgs if pkgs is not None else {"a": PKG.format(n="a"), "b": PKG.format(n="b")}).items():
        (root / "packages" / name).mkdir(parents=True)
        (root / "packages" / name / "package.yaml").write_text(text)
    if envs:
        (root / "environments").mkdir()
        for fname, text in envs.items():
            (root / "environments" / fname).write_text(text)
    return root


def graph(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    env.pop("QUORUM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "quorum", "graph", "--json", "--tree", str(tree)], env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


GATE = "name: t\ndefaults:\n  seed: s\ngates:\n  sf:\n    environment: e\n"


def test_an_environment_and_its_gate_make_twins_and_a_gate_node(tmp_path):
    t = write_tree(tmp_path / "t", envs={"e.yaml": "name: e\nmembers: [a]\nsymlinks:\n  /bin/sh: busybox\n"},
                   pkgs={"a": PKG.format(n="a"), "b": PKG.format(n="b"),
                         "c": "name: c\nversion: '1'\nseed: e\ndeps: [b]\nbuild: 'true'\n"},
                   config=GATE)
    p = graph(t)
    assert p.returncode == 0, p.stderr
    edges = {tuple(e) for e in json.loads(p.stdout)["edges"]}
    assert {("a", "e"), ("e", "a@e"), ("e", "b@e"), ("a@e", "gate:sf"), ("b@e", "gate:sf"), ("a", "gate:sf"),
            ("b", "gate:sf"), ("gate:sf", "c"), ("e", "c")} <= edges
    assert "c@e" not in json.loads(p.stdout)["order"]   # built in the environment: nothing to prove


@pytest.mark.parametrize("envs,pkgs,config,needles", [
    ({"e.yaml": "name: e\nmembers: [a]\ncolour: blue\n"}, None, None, ("environments/e.yaml", "colour", "unknown")),
    ({"e.yaml": "name: e\nmembers: [a, nope]\n"}, None, None, ("e.yaml", "members[1]", "not a package")),
    ({"e.yaml": "name: e\nmembers: [s]\n"}, None, None, ("e.yaml", "members[0]", "is a seed")),
    ({"e.yaml": "name: e\nmembers: [a]\n", "f.yaml": "name: f\nmembers: [e]\n"}, None, None,
     ("f.yaml", "members[0]", "is an environment")),
    ({"e.yaml": "name: e\nmembers: [a, b, a]\n"}, None, None, ("e.yaml", "members[2]", "listed twice")),
    ({"e.yaml": "name: e\nmembers: []\n"}, None, None, ("e.yaml", "members", "required")),
    ({"e.yaml": "name: e\n"}, None, None, ("e.yaml", "members", "required")),
    ({"e.yaml": "name: f\nmembers: [a]\n"}, None, None, ("e.yaml", "name", "must match the file name")),
    ({"a.yaml": "name: a\nmembers: [b]\n"}, None, None, ("a.yaml", "name", "already the name of a seed or package")),
    ({"s.yaml": "name: s\nmembers: [b]\n"}, None, None, ("s.yaml", "name", "already the name of a seed or package")),
    ({"e.yaml": "name: e\nmembers: [a]\nsymlinks:\n  bin/sh: busybox\n"}, None, None,
     ("e.yaml", "symlinks.bin/sh", "absolute path")),
    ({"e.yaml": "name: e\nmembers: [a]\nsymlinks:\n  /bin/../../etc/x: busybox\n"}, None, None,
     ("e.yaml", "symlinks./bin/../../etc/x", "without '..'")),
    ({"e.yaml": "name: e\nmembers: &m [a]\nx: *m\n"}, None, None, ("e.yaml", "anchors")),
    ({"e.yaml": "name: e\nmembers: [a]\nmembers: [b]\n"}, None, None, ("e.yaml", "duplicate key")),
    # A member built in the environment, directly or through a dependency.
    ({"e.yaml": "name: e\nmembers: [a]\n"}, {"a": "name: a\nversion: '1'\nseed: e\nbuild: 'true'\n"}, None,
     ("e.yaml", "members[0]", "built in this environment")),
    ({"e.yaml": "name: e\nmembers: [a]\n"},
     {"a": "name: a\nversion: '1'\ndeps: [b]\nbuild: 'true'\n", "b": "name: b\nversion: '1'\nseed: e\nbuild: 'true'\n"},
     None, ("e.yaml", "members[0]", "a -> b -> e")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, {"a": PKG.format(n="a"), "b": "name: b\nversion: '1'\ndeps: [e]\n"
                                                                         "build: 'true'\n"},
     None, ("packages/b/package.yaml", "deps[0]", "it is an environment")),
    # The gate's configuration.
    ({}, None, GATE, ("quorum.yaml", "gates.sf.environment", "does not exist")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, None, GATE.replace("environment: e", "environment: s"),
     ("quorum.yaml", "gates.sf.environment", "it is a seed")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, None, GATE + "    identical: [a, b]\n",
     ("quorum.yaml", "gates.sf.identical", "not both")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, None, GATE + "    exempt:\n      zz: 'a reason of some length'\n",
     ("quorum.yaml", "gates.sf.exempt.zz", "not a member")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, None, GATE + "    exempt:\n      b: why\n",
     ("quorum.yaml", "gates.sf.exempt.b", "give the reason")),
    ({"e.yaml": "name: e\nmembers: [a]\n"}, None, GATE + "    colour: blue\n", ("quorum.yaml", "gates.sf.colour")),
    # A member of the gate built on something built in the environment
    # could never have its twin: the gate would wait for itself.
    ({"e.yaml": "name: e\nmembers: [a]\n"},
     {"a": PKG.format(n="a"), "b": "name: b\nversion: '1'\ndeps: [c]\nbuild: 'true'\n",
      "c": "name: c\nversion: '1'\nseed: e\nbuild: 'true'\n"},
     GATE, ("packages/b/package.yaml", "seed", "could never be built")),
    # A twin's image name may not be taken by a package (a@e -> a_e).
    ({"e.yaml": "name: e\nmembers: [a]\n"}, {"a": PKG.format(n="a"), "a_e": PKG.format(n="a_e")}, GATE,
     ("quorum.yaml", "would share the image name")),
])
def test_wrong_environments_are_refused_naming_file_and_field(tmp_path, envs, pkgs, config, needles):
    t = write_tree(tmp_path / "t", envs=envs, pkgs=pkgs, **({"config": config} if config else {}))
    refused(graph(t), *needles)


def test_an_environments_folder_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.yaml").write_text("name: e\nmembers: [a]\n")
    t = write_tree(tmp_path / "t")
    (t / "environments").symlink_to(elsewhere)
    refused(graph(t), "environments", "symlink")


# --- the union of the members' layers --------------------------------------------

def layer(path: Path, entries: list[tuple[str, bytes | str | None]]) -> Path:
    """A tar of regular files (bytes), symlinks ("->target") and folders (None)."""
    with tarfile.open(path, "w") as tf:
        for name, what in entries:
            ti = tarfile.TarInfo(name)
            if what is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif isinstance(what, str):
                ti.type, ti.linkname = tarfile.SYMTYPE, what
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(what), 0o755
                tf.addfile(ti, io.BytesIO(what))
    return path


def members_of(raw: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(raw) as tf:
        return {m.name: m for m in tf.getmembers()}


ENV = Environment(name="e", definition_file=Path("environments/e.yaml"), members=("one", "two"),
                  symlinks=(("/bin/sh", "busybox"),))


def test_the_union_holds_every_members_files_the_base_folders_and_the_symlinks(tmp_path):
    one = layer(tmp_path / "one.tar", [("bin", None), ("bin/busybox", b"\x7fELF..."), ("usr/share/x", b"same")])
    two = layer(tmp_path / "two.tar", [("bin", None), ("usr/share/x", b"same"), ("usr/bin/make", b"make")])
    envmod.merge(ENV, [("one", one), ("two", two)], tmp_path / "raw.tar")
    got = members_of(tmp_path / "raw.tar")
    assert {"bin/busybox", "usr/share/x", "usr/bin/make", "tmp", "rootfs"} <= set(got)
    assert got["bin/sh"].issym() and got["bin/sh"].linkname == "busybox"
    assert got["tmp"].mode == 0o1777


@pytest.mark.parametrize("two_entries,error,needle", [
    ([("usr/share/x", b"other")], DefinitionError, "'usr/share/x' is shipped differently by one and two"),
    ([("usr/share/x", "elsewhere")], DefinitionError, "shipped differently by one and two"),
    ([("usr/share/x", None)], UnsafeArchiveError, "directory in one"),
    ([("bin/sh", "dash")], DefinitionError, "/bin/sh already exists in the environment (two)"),
])
def test_two_members_providing_one_path_differently_is_an_error_naming_both(tmp_path, two_entries, error, needle):
    one = layer(tmp_path / "one.tar", [("usr/share/x", b"same")])
    two = layer(tmp_path / "two.tar", two_entries)
    with pytest.raises(error) as e:
        envmod.merge(ENV, [("one", one), ("two", two)], tmp_path / "raw.tar")
    assert needle in str(e.value)
    if error is DefinitionError:
        assert e.value.file == "environments/e.yaml"


def test_the_input_hash_covers_member_digests_order_and_symlinks_and_the_version_is_the_definitions():
    digests = {"one": "sha256:" + "1" * 64, "two": "sha256:" + "2" * 64}
    h = envmod.input_hash(ENV, digests, 1)
    assert h == envmod.input_hash(ENV, dict(reversed(list(digests.items()))), 1)
    assert h != envmod.input_hash(ENV, {**digests, "two": "sha256:" + "3" * 64}, 1)
    swapped = Environment(name="e", definition_file=ENV.definition_file, members=("two", "one"),
                          symlinks=ENV.symlinks)
    assert h != envmod.input_hash(swapped, digests, 1)
    assert h != envmod.input_hash(Environment(name="e", definition_file=ENV.definition_file,
                                              members=ENV.members), digests, 1)
    assert h != envmod.input_hash(ENV, digests, 2)
    assert envmod.version(ENV).startswith("2members-") and envmod.version(ENV) != envmod.version(swapped)


def test_an_environment_is_audited_with_its_members_allowances(tmp_path):
    # An environment holds its members' files at the same paths: a script a
    # member may ship identical to a seed's is allowed there too, with the
    # member named; nothing else is.
    from quorum.audit import _allowances
    from quorum.tree import load_tree
    a = PKG.format(n="a") + "audit:\n  same-as-seed:\n    usr/bin/zgrep: generated by its own Makefile, as Debian does\n"
    t = write_tree(tmp_path / "t", pkgs={"a": a, "b": PKG.format(n="b")},
                   envs={"e.yaml": "name: e\nmembers: [a, b]\n"})
    tree = load_tree(t)
    assert _allowances(tree, "a") == {"usr/bin/zgrep": "generated by its own Makefile, as Debian does"}
    assert _allowances(tree, "e") == {"usr/bin/zgrep": "generated by its own Makefile, as Debian does (a)"}
    assert _allowances(tree, "b") == {}
