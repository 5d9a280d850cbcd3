"""The benchmark's harness: the P6 part at a small size, and the shape of
what it reports.  No timing is asserted: a benchmark reports, it does not
judge, and a test machine's speed proves nothing."""
from __future__ import annotations

import json
from dataclasses import replace

import networkx as nx
import pytest

from quorum import bench


def small_run(tmp_path, only=("P6",)) -> bench.Report:
    sizes = replace(bench.Sizes.quick(), p6_nodes=300, p6_runs=1)
    lines: list[str] = []
    report = bench.run(list(only), sizes, progress=lines.append, workdir=tmp_path)
    assert lines, "progress lines are expected while it runs"
    return report


def test_p6_rows_values_and_cleanup(tmp_path):
    report = small_run(tmp_path)
    assert [f.key for f in report.figures] == ["P6"]
    fig = report.figures[0]
    assert fig.status == "ok", fig.rows
    assert len(fig.rows) == 4
    for row in fig.rows:
        assert row.figure == "P6"
        assert len(row.cells()) == len(bench.HEADERS)
    assert [r.met is None for r in fig.rows] == [False, False, True, False]   # graph-only has no target
    assert len(fig.values["warm_runs"]) == 2
    v = fig.values
    assert v["nodes"] == 301                       # 300 packages and the seed
    assert 0 < v["closure"] <= 301 and v["closure"] == v["memory_closure"]
    assert v["peak_bytes"] >= v["delta_bytes"] >= 0
    assert len(v["runs"]) == 1 and set(v["runs"][0]) >= {"t_load_tree", "t_build_graph", "t_order", "t_closure",
                                                          "total", "edges"}
    assert not report.crashed
    # the temporary trees are gone
    assert list(tmp_path.iterdir()) == []


def test_table_and_json_shape(tmp_path):
    # P6 only: the other figures need the engine (they run in `make bench`)
    report = small_run(tmp_path, only=("P6",))
    text = report.table()
    header = text.splitlines()[0]
    for h in bench.HEADERS:
        assert h in header
    assert "P6" in text and "< 2 s" in text
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["headers"] == bench.HEADERS
    assert set(doc["figures"]) == {"P6"}
    assert {r["figure"] for r in doc["rows"]} == {"P6"}
    for r in doc["rows"]:
        assert set(r) == {"figure", "what", "measured", "baseline", "ratio", "target", "met"}
    assert doc["machine"]["cpus"] and doc["quick"] is False


def test_synthetic_dag_is_layered_acyclic_and_stable():
    dag, deep = bench.synth_dag(500)
    assert len(dag) == 500 and dag == bench.synth_dag(500)[0]
    g = nx.DiGraph()
    for name, deps, _ in dag:
        g.add_node(name)
        g.add_edges_from((d, name) for d in deps)
    assert nx.is_directed_acyclic_graph(g)
    layer = {name: lay for name, _, lay in dag}
    for name, deps, lay in dag:
        if lay:
            assert any(layer[d] == lay - 1 for d in deps) and all(layer[d] < lay for d in deps)
        else:
            assert deps == []
    assert layer[deep] == max(layer.values())
    assert len(nx.ancestors(g, deep)) >= max(layer.values())


def test_only_refuses_unknown_figures(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--only", "P1,P9"])
    assert e.value.code == 2
    assert "P9" in capsys.readouterr().err


def test_s1_simulates_every_pool_shape_within_the_bounds():
    from quorum import farmsim
    dag = farmsim.stagex_like()
    assert len(dag.order) == 513 and dag == farmsim.stagex_like()            # seeded: the same DAG each run
    assert dag.depth() >= 20 and max(len(d) for d in dag.deps.values()) >= 5
    for slots, engines in ((1, 1), (4, 4), (16, 16)):
        r = farmsim.simulate(dag, slots, engines)
        # no schedule beats a lower bound; a simulation that did would be wrong
        assert r.makespan >= r.serial_bound - 1e-6 and r.serial_bound >= r.lower_bound - 1e-6
        assert r.ratio <= 1.2, (slots, engines, r.ratio)
        assert (r.transfers == 0) == (engines == 1)
    one = farmsim.simulate(dag, 1, 1)
    assert one.makespan == pytest.approx(sum(dag.seconds.values()))         # one slot: all the work, in a row


def test_s1_figure_rows(tmp_path):
    report = small_run(tmp_path, only=("S1",))
    fig = report.figures[0]
    assert fig.status == "ok" and len(fig.rows) == 10
    assert fig.rows[-1].target == "< 20 ms" and len(fig.values["runs"]) == 9
    assert all(len(r.cells()) == len(bench.HEADERS) for r in fig.rows)
