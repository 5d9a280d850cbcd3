"""The default tree builds its own build environment (issue #13,
docs/bootstrap.md): the seed-free gate is configured, covers every package
of packages/ and exempts none, and tree-tools is made of the tree's own
tools.  Guards against a change that quietly weakens the proof: dropping
the gate, exempting a package, or putting something else in tree-tools."""
from __future__ import annotations

from conftest import ROOT
from quorum.tree import gate_members, load_tree

# What a package's build script, its configure and quorum's build.sh run;
# each is a package of packages/, so the gate also rebuilds it inside
# tree-tools (the fixed point).
TOOLS = {"dash", "coreutils", "tar", "make", "sed", "grep", "gawk", "diffutils", "findutils", "patch",
         "gzip", "bzip2", "xz"}


def test_every_package_is_a_member_of_the_seed_free_gate():
    tree = load_tree(ROOT)
    gate = {g.name: g for g in tree.config.environment_gates}["seed-free"]
    assert gate.environment == "tree-tools"
    assert gate.exempt == ()            # fix the package, not the gate
    packages = sorted(n for n, p in tree.packages.items() if p.kind == "package")
    assert gate_members(tree.config, tree.seeds, tree.packages) == packages
    assert TOOLS <= set(packages)


def test_tree_tools_holds_the_trees_tools_only():
    tree = load_tree(ROOT)
    env = tree.environments["tree-tools"]
    # like the tools seed, no compiler and no C library: packages bring
    # musl and tcc-musl as their deps
    assert set(env.members) == TOOLS
    links = dict(env.symlinks)
    assert links["/bin/sh"] == "dash" and links["/usr/bin/awk"] == "gawk"
    # the shell is where the link points: dash installs into /bin as Debian's does
    assert "--bindir=/bin" in tree.packages["dash"].build
