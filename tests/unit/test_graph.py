from __future__ import annotations

import networkx as nx

from quorum import graph


def diamond() -> nx.DiGraph:
    g = nx.DiGraph()
    for a, b in [("s", "base"), ("base", "left"), ("base", "right"), ("left", "top"), ("right", "top"), ("s", "solo")]:
        g.add_edge(a, b)
    for n in g.nodes:
        g.nodes[n]["kind"] = "package"
    return g


def test_order_is_topological_and_name_stable():
    g = diamond()
    o = graph.order(g)
    assert o == ["s", "base", "left", "right", "solo", "top"]
    # Same order whatever the insertion order was.
    g2 = nx.DiGraph()
    g2.add_edges_from(reversed(list(g.edges)))
    assert graph.order(g2) == o


def test_closure_and_dependents():
    g = diamond()
    assert graph.closure(g, ["left"]) == {"s", "base", "left"}
    assert graph.dependents(g, ["left"]) == {"top"}
    assert graph.dependents(g, ["base"]) == {"left", "right", "top"}


def test_critical_path():
    g = diamond()
    w = {n: 1.0 for n in g.nodes}
    assert graph.critical_path(g, w) == 4.0


def test_dot_is_sorted_text():
    d = graph.to_dot(diamond())
    assert d.startswith("digraph quorum {") and '"left" -> "top";' in d
    assert d == graph.to_dot(diamond())
