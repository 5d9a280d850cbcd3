"""The scheduler over a pool, against the fake engine (no Docker): order,
parallelism, placement and affinity, one load per image and engine, requeue
after a lost engine, back-off, retries, gates, keep-going, rebuilds
elsewhere.  Each test runs the real Builder: input hashes, layouts, records
and the manifest are the real code's; only the engine is fake."""
from __future__ import annotations

from pathlib import Path

import pytest

from quorum.build import Builder, Options
from quorum.engines.fake import FakeEngine
from quorum.errors import QuorumError
from quorum.pool import Member, Pool
from quorum.store import Store
from quorum.tree import load_tree

# A diamond (base -> left, right -> top), a chain beside it, one loner.
DIAMOND = {"base": [], "left": ["base"], "right": ["base"], "top": ["left", "right"],
           "c1": [], "c2": ["c1"], "c3": ["c2"], "solo": []}


def write_tree(root: Path, pkgs: dict[str, list[str]], *, gates: dict[str, list[str]] | None = None) -> Path:
    (root / "packages").mkdir(parents=True)
    (root / "bootstrap").mkdir()
    text = "name: ft\nnamespace: quorum-ft\nsource_date_epoch: 1700000000\n"
    if gates:
        text += "gates:\n" + "".join(f"  {g}:\n    identical: [{', '.join(m)}]\n" for g, m in gates.items())
    (root / "quorum.yaml").write_text(text)
    for name, deps in pkgs.items():
        d = root / "packages" / name
        d.mkdir()
        dep = f"deps: [{', '.join(deps)}]\n" if deps else ""
        (d / "package.yaml").write_text(f"name: {name}\nversion: '1'\n{dep}build: |\n  true\n")
    return root


def run(root: Path, *engines: FakeEngine, slots: int = 1, options: Options = Options(), pool: Pool | None = None,
        store: Store | None = None):
    events: list[dict] = []
    pool = pool or Pool([Member(engine=e, slots=slots) for e in engines])
    b = Builder(load_tree(root), pool=pool, options=options, emit=events.append, store=store)
    return b.run(), events, b


def started_on(events: list[dict]) -> dict[str, str]:
    """node -> engine of its last start."""
    return {e["name"]: e["engine"] for e in events if e["event"] == "start"}


def test_two_engines_give_the_one_engine_manifest_and_both_are_used(tmp_path):
    one = write_tree(tmp_path / "one", DIAMOND)
    res1, _, _ = run(one, FakeEngine(name="solo-engine"))
    two = write_tree(tmp_path / "two", DIAMOND)
    a = FakeEngine(name="a", default_delay=0.05)
    b = FakeEngine(name="b", default_delay=0.05)
    res2, events, _ = run(two, a, b)
    assert res1.ok and res2.ok
    assert (two / "manifests" / "manifest.json").read_bytes() == (one / "manifests" / "manifest.json").read_bytes()
    assert set(started_on(events).values()) == {"a", "b"}
    assert a.builds and b.builds and sorted(a.builds + b.builds) == sorted(DIAMOND)
    # each dependency's image went to each engine at most once
    for e in (a, b):
        assert all(n == 1 for n in e.loads.values()), e.loads
    # the records name the engine that built each artifact
    store = Store(two / "out")
    for name in DIAMOND:
        assert store.record(name).engine == (a if name in a.builds else b).identity


def test_a_dependency_goes_to_each_engine_at_most_once(tmp_path):
    fan = {"base": [], **{f"d{i}": ["base"] for i in range(6)}}
    a = FakeEngine(name="a", default_delay=0.05)
    b = FakeEngine(name="b", default_delay=0.05)
    res, events, _ = run(write_tree(tmp_path / "t", fan), a, b)
    assert res.ok
    on = started_on(events)
    other = b if on["base"] == "a" else a
    # several dependents of base ran on the other engine: base went there once
    assert sum(1 for n, e in on.items() if n != "base" and e == other.name) >= 2, on
    base_image = res.nodes["base"].config_digest
    assert other.loads[base_image] == 1
    assert [e["engine"] for e in events if e["event"] == "load" and e["name"] == "base"] == [other.name]


def test_every_event_about_a_node_names_its_engine(tmp_path):
    res, events, _ = run(write_tree(tmp_path / "t", DIAMOND), FakeEngine(name="a"), FakeEngine(name="b"))
    assert res.ok
    about_nodes = [e for e in events if e.get("name") in DIAMOND]
    assert about_nodes and all(e.get("engine") in ("a", "b") for e in about_nodes), about_nodes
    assert {r.engine for r in res.nodes.values()} <= {"a", "b"}
    assert sorted(e["name"] for e in events if e["event"] == "start") == sorted(DIAMOND)


def test_affinity_keeps_a_chain_on_the_engine_that_holds_its_inputs(tmp_path):
    chain = {"c1": [], "c2": ["c1"], "c3": ["c2"], "c4": ["c3"]}
    a, b = FakeEngine(name="a"), FakeEngine(name="b")
    res, events, _ = run(write_tree(tmp_path / "t", chain), a, b)
    assert res.ok
    on = started_on(events)
    assert len(set(on.values())) == 1, on
    used = a if on["c1"] == "a" else b
    # only the load-back of each normalised artifact into the engine that
    # built it: no dependency had to be moved
    assert sum(used.loads.values()) == len(chain) and not (a if used is b else b).loads


def test_placement_prefers_the_engine_holding_most_inputs_then_most_free_slots():
    a, b, c = (Member(engine=FakeEngine(name=n), slots=2) for n in "abc")
    pool = Pool([a, b, c])
    b.held |= {"sha256:x", "sha256:y"}
    c.held |= {"sha256:x"}
    assert pool.place(["sha256:x", "sha256:y"]) is b
    assert pool.place(["sha256:x", "sha256:y"]) is b
    assert pool.place(["sha256:x", "sha256:y"]) is c      # b is full
    assert pool.place([]) is a                            # most free slots
    assert pool.place([], allowed=lambda m: m is not a) is c
    pool.release(b)
    assert pool.place(["sha256:y"]) is b


def test_slots_bound_parallelism_and_are_used(tmp_path):
    wide = {f"w{i}": [] for i in range(6)}
    a = FakeEngine(name="a", default_delay=0.15)
    res, _, _ = run(write_tree(tmp_path / "t", wide), a, slots=3)
    assert res.ok and a.max_running == 3


def test_a_lost_engine_is_marked_unhealthy_and_its_node_requeued_elsewhere(tmp_path):
    shared: dict[str, list[str]] = {"left": ["lost"]}    # whichever engine builds "left" first is lost
    a = FakeEngine(name="a", default_delay=0.05, injected=shared)
    b = FakeEngine(name="b", default_delay=0.05, injected=shared)
    root = write_tree(tmp_path / "t", DIAMOND)
    pool = Pool([Member(engine=a), Member(engine=b)], backoff=(60, 60))
    res, events, _ = run(root, pool=pool)
    assert res.ok, [(n.name, n.error) for n in res.failed()]
    assert not any(e["event"] == "failed" for e in events)
    requeues = [e for e in events if e["event"] == "requeue"]
    assert [e["name"] for e in requeues] == ["left"]
    lost = requeues[0]["engine"]
    health = [e for e in events if e["event"] == "engine"]
    assert health[0]["engine"] == lost and health[0]["health"] == "unhealthy" and health[0]["retry_in"] == 60
    # after the loss everything ran on the other engine
    after = events[events.index(requeues[0]):]
    assert {e["engine"] for e in after if e["event"] == "start"} == {"b" if lost == "a" else "a"}
    assert res.nodes["left"].engine != lost


def test_with_one_engine_lost_the_failure_is_the_engines_not_the_packages(tmp_path):
    a = FakeEngine(name="a")
    a.fail("c2", "lost")
    res, events, _ = run(write_tree(tmp_path / "t", DIAMOND), a, options=Options(keep_going=True))
    assert res.nodes["c2"].status == "failed" and res.nodes["c2"].failure == "engine"
    assert "stopped answering" in res.nodes["c2"].error
    assert res.nodes["c3"].status == "skipped"
    assert not any(e["event"] == "requeue" for e in events)


def test_back_off_doubles_and_a_revived_engine_rejoins():
    now = [0.0]
    m = Member(engine=FakeEngine(name="a"))
    m.held.add("sha256:x")
    pool = Pool([m], clock=lambda: now[0], backoff=(5, 20))
    assert pool.mark_unhealthy(m, "gone") == 5
    assert m.held == set() and m.free == 0 and pool.place() is None
    assert pool.due() == [] and pool.next_probe_in() == 5
    now[0] = 5
    assert pool.due() == [m]
    pool.probed(m, False)
    assert m.retry_at == 5 + 10 and not m.healthy
    now[0] = 15
    pool.probed(m, False)
    assert m.retry_at == 15 + 20                          # capped
    now[0] = 35
    pool.probed(m, True)
    assert m.healthy and pool.place() is m


def test_the_scheduler_probes_an_engine_after_its_back_off(tmp_path):
    a = FakeEngine(name="a", default_delay=0.02)
    b = FakeEngine(name="b", default_delay=0.02)
    now = [0.0]
    pool = Pool([Member(engine=a), Member(engine=b)], clock=lambda: now[0], backoff=(5, 5))
    pool.mark_unhealthy(pool.members[1], "gone")
    now[0] = 10                                           # the back-off is over and b answers
    res, events, _ = run(write_tree(tmp_path / "t", DIAMOND), pool=pool)
    assert res.ok
    assert {"event": "engine", "engine": "b", "health": "healthy", "error": None, "retry_in": None} in events


def test_a_daemon_error_is_retried_once_then_reported_as_the_engines(tmp_path):
    a = FakeEngine(name="a")
    a.fail("c1", "daemon")
    res, events, _ = run(write_tree(tmp_path / "t", DIAMOND), a)
    assert res.ok and [e["name"] for e in events if e["event"] == "retry"] == ["c1"]

    b = FakeEngine(name="b")
    b.fail("c1", "daemon", "daemon")
    res, events, _ = run(write_tree(tmp_path / "t2", DIAMOND), b, options=Options(keep_going=True))
    assert res.nodes["c1"].failure == "engine" and res.nodes["c2"].status == "skipped"
    assert [e["name"] for e in events if e["event"] == "retry"] == ["c1"]


def test_a_package_failure_skips_its_dependents_and_keep_going_builds_the_rest(tmp_path):
    a = FakeEngine(name="a")
    a.fail("left", "build")
    res, events, _ = run(write_tree(tmp_path / "t", DIAMOND), a, options=Options(keep_going=True))
    assert res.nodes["left"].failure == "build"
    assert res.nodes["top"].status == "skipped" and res.nodes["top"].error == "left failed"
    assert all(res.nodes[n].status == "built" for n in ("base", "right", "c1", "c2", "c3", "solo"))

    b = FakeEngine(name="b")
    b.fail("base", "build")
    res, events, _ = run(write_tree(tmp_path / "t2", DIAMOND), b)
    assert res.nodes["base"].failure == "build"
    # without --keep-going nothing starts after the failure
    assert not any(e["event"] == "start" for e in events[[e["event"] for e in events].index("failed"):])
    assert any(e["event"] == "skipped" and e["because"] == "stop" for e in events)
    assert not res.ok


def test_gates_hold_dependents_until_members_agree(tmp_path):
    pkgs = {"m1": [], "m2": [], "after": ["m1"]}
    ok = FakeEngine(name="a", layer_of={"m2": "m1"})
    res, events, _ = run(write_tree(tmp_path / "t", pkgs, gates={"twins": ["m1", "m2"]}), ok)
    assert res.ok and res.gates["twins"]["result"] == "pass"
    names = [e.get("name") for e in events]
    assert names.index("twins") < names.index("after")       # the gate was checked before "after" started

    bad = FakeEngine(name="b")
    res, events, _ = run(write_tree(tmp_path / "t2", pkgs, gates={"twins": ["m1", "m2"]}), bad)
    assert res.gates["twins"]["result"] == "fail" and not res.ok
    assert res.nodes["after"].status == "skipped" and "after" not in bad.builds


def test_reproduce_elsewhere_rebuilds_on_another_engine_or_refuses(tmp_path):
    root = write_tree(tmp_path / "t", DIAMOND)
    a, b = FakeEngine(name="a"), FakeEngine(name="b")
    res, _, _ = run(root, a)
    assert res.ok and set(a.builds) == set(DIAMOND)
    opts = Options(targets=tuple(DIAMOND), force=tuple(DIAMOND), reuse_store=root / "out", write_manifest=False,
                   elsewhere=True, nocache=True)
    a2 = FakeEngine(name="a-again", identity=a.identity)     # the same engine under another name
    res, events, _ = run(root, a2, b, options=opts, store=Store(tmp_path / "rebuild"))
    assert res.ok and set(b.builds) == set(DIAMOND) and a2.builds == []
    assert {res.nodes[n].digest for n in DIAMOND} == {Store(root / "out").record(n).digest for n in DIAMOND}

    with pytest.raises(QuorumError) as ei:
        run(root, FakeEngine(name="a-alone", identity=a.identity), options=opts, store=Store(tmp_path / "r2"))
    assert ei.value.field == "--elsewhere" and "add another with --engine" in str(ei.value)


def test_an_image_one_engine_holds_is_copied_to_another_once(tmp_path):
    """How reproduce gives its preload shim to every engine that rebuilds."""
    import io
    import tarfile

    from quorum.reproduce import _copy_from
    a, b = FakeEngine(name="a"), FakeEngine(name="b")
    ctx = io.BytesIO()
    data = b"# Rendered by quorum for shim 1: x\n"
    with tarfile.open(fileobj=ctx, mode="w") as tf:
        ti = tarfile.TarInfo("Containerfile")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    ctx.seek(0)
    image = a.build(ctx)
    pool = Pool([Member(engine=a), Member(engine=b)])
    copy = _copy_from(a, image, Store(tmp_path / "store"))
    assert pool.ensure_image(pool.members[1], image, copy) is True
    assert pool.ensure_image(pool.members[1], image, copy) is False
    assert b.has_image(image) and b.loads[image] == 1
    assert list((tmp_path / "store" / ".tmp").iterdir()) == []      # the staged archive is gone
