"""The dependency graph of a tree, and the questions asked of it.

Nodes are seed and package names (one namespace, checked in ``tree``); an
edge ``a -> b`` means *b is built on a*.  Knows nothing of files or engines.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import networkx as nx

from .errors import GraphError
from .model import Tree
from .text import known


def build_graph(tree: Tree) -> nx.DiGraph:
    g = nx.DiGraph()
    for s in tree.seeds.values():
        g.add_node(s.name, kind="seed")
    for e in tree.environments.values():
        g.add_node(e.name, kind="environment")
    for p in tree.packages.values():
        g.add_node(p.name, kind=p.kind)
    for p in tree.packages.values():
        seed = tree.base_of(p)
        if seed is not None:
            if seed not in tree.seeds and seed not in tree.environments:
                field = "seed" if p.seed else None
                where = "" if p.seed else " (the default from quorum.yaml)"
                raise GraphError(f"seed {seed!r}{where} does not exist in bootstrap/seeds/ or environments/"
                                 + known([*tree.seeds, *tree.environments]), file=p.definition_file,
                                 field=field or "seed")
            g.add_edge(seed, p.name)
        for i, d in enumerate(p.deps):
            if d not in tree.packages:
                hint = (" (it is a seed: name it in seed:, not deps:)" if d in tree.seeds
                        else " (it is an environment: name it in seed:, not deps:)" if d in tree.environments
                        else known(tree.packages))
                raise GraphError(f"dependency {d!r} does not exist{hint}",
                                 file=p.definition_file, field=f"deps[{i}]")
            g.add_edge(d, p.name)
    for e in tree.environments.values():
        for m in e.members:
            g.add_edge(m, e.name)
    check_environment_cycles(g, tree)
    check_acyclic(g, tree)
    check_gates(g, tree)
    add_environment_gates(g, tree)
    return g


def check_environment_cycles(g: nx.DiGraph, tree: Tree) -> None:
    """A member built in its own environment (directly, or on something
    that is) could never be built: name the member, not just the cycle."""
    for e in tree.environments.values():
        for i, m in enumerate(e.members):
            if nx.has_path(g, e.name, m):
                path = nx.shortest_path(g, e.name, m)
                how = " -> ".join(reversed(path))
                raise GraphError(f"member {m!r} is built in this environment ({how}; read 'a -> b' as "
                                 "'a needs b'): an environment cannot contain what needs it",
                                 file=e.definition_file, field=f"members[{i}]")


def add_environment_gates(g: nx.DiGraph, tree: Tree) -> None:
    """The twins and the gate node of each environment gate
    (docs/spec/environment.md): a twin is built on the environment and on
    its package's own dependencies; the gate waits for every member and
    twin; whatever else is built in the environment waits for the gate."""
    for gate in tree.config.environment_gates:
        env = gate.environment
        twins = [t for t in tree.twins.values() if t.gate == gate.name]
        for t in twins:
            # A member built on something built in the environment would
            # need the gate to build its twin, and the gate needs the twin.
            if nx.has_path(g, env, t.package.name):
                path = nx.shortest_path(g, env, t.package.name)
                raise GraphError(f"built in seed {tree.base_of(t.package)!r} but on {path[1]!r}, which is built in "
                                 f"environment {env!r} (gate {gate.name}): its twin could never be built; "
                                 f"build it in {env!r} too (seed: {env})",
                                 file=t.package.definition_file, field="seed")
        gnode = gate.node
        g.add_node(gnode, kind="gate")
        users = [n for n in g.successors(env)]
        for t in twins:
            g.add_node(t.name, kind="twin")
            g.add_edge(env, t.name)
            for d in t.package.deps:
                g.add_edge(d, t.name)
            g.add_edge(t.name, gnode)
            g.add_edge(t.package.name, gnode)
        for u in users:
            g.add_edge(gnode, u)


def check_gates(g: nx.DiGraph, tree: Tree) -> None:
    """A gate compares artifacts built side by side; a member built on
    another member would wait for a gate that waits for it, and the build
    would skip both without a reason."""
    for gname, members in tree.config.gates:
        for i, m in enumerate(members):
            ancestors = nx.ancestors(g, m)
            for other in members:
                if other != m and other in ancestors:
                    raise GraphError(f"gate member {m!r} depends on {other!r}, another member of the same gate; "
                                     "a gate's members must be built independently",
                                     file=tree.config.path / "quorum.yaml", field=f"gates.{gname}.identical[{i}]")


def check_acyclic(g: nx.DiGraph, tree: Tree | None = None) -> None:
    # The yes/no test is a topological sort (16 ms at 10,000 nodes);
    # find_cycle is 15x slower and only needed to name the cycle.
    if nx.is_directed_acyclic_graph(g):
        return
    cycle = nx.find_cycle(g)
    # find_cycle gives edges (built-on -> built); show it as "a needs b" so it
    # reads the way the definitions are written.
    path = [cycle[0][0]] + [e[1] for e in cycle]
    needs = " -> ".join(reversed(path))
    file = None
    if tree is not None and path[-1] in tree.packages:
        file = tree.packages[path[-1]].definition_file
    raise GraphError(f"dependency cycle: {needs} (read 'a -> b' as 'a needs b')", file=file, field="deps")


def order(g: nx.DiGraph) -> list[str]:
    """A build order that is the same on every machine: topological, ties
    broken by name (networkx's plain order follows insertion order, which
    follows directory listing)."""
    return list(nx.lexicographical_topological_sort(g))


def closure(g: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """The targets and everything they are built on."""
    need: set[str] = set()
    for t in targets:
        if t not in g:
            raise GraphError(f"no package or seed named {t!r}")
        need.add(t)
        need |= nx.ancestors(g, t)
    return need


def dependents(g: nx.DiGraph, names: Iterable[str]) -> set[str]:
    """Everything that must be rebuilt when any of ``names`` changes."""
    out: set[str] = set()
    for n in names:
        out |= nx.descendants(g, n)
    return out


def levels(g: nx.DiGraph) -> list[list[str]]:
    """Generations: every node in level k depends only on levels < k."""
    return [sorted(gen) for gen in nx.topological_generations(g)]


def critical_path(g: nx.DiGraph, weight: dict[str, float]) -> float:
    """Length of the heaviest chain, weighting each node (for the makespan
    benchmark's lower bound)."""
    best: dict[str, float] = {}
    for n in order(g):
        best[n] = weight.get(n, 0.0) + max((best[p] for p in g.predecessors(n)), default=0.0)
    return max(best.values(), default=0.0)


def to_dot(g: nx.DiGraph) -> str:
    """DOT text, written by hand (pydot/pygraphviz are not needed for text),
    with nodes and edges sorted so the file diffs cleanly."""
    lines = ["digraph quorum {", "  rankdir=LR;", "  node [shape=box, fontname=\"monospace\"];"]
    for n in sorted(g.nodes):
        kind = g.nodes[n].get("kind", "package")
        style = {"seed": ", style=filled, fillcolor=\"#f2e6c9\"",
                 "bootstrap": ", style=filled, fillcolor=\"#dde8f5\""}.get(kind, "")
        lines.append(f"  \"{n}\" [label=\"{n}\"{style}];")
    for a, b in sorted(g.edges):
        lines.append(f"  \"{a}\" -> \"{b}\";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_dot(g: nx.DiGraph, path: Path) -> None:
    from .canon import atomic_write
    atomic_write(path, to_dot(g).encode())
