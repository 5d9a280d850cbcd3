"""Attestations on the real engine: provenance for every artifact, the same
bytes from two checkouts, and a rebuild attestation from reproduce."""
from __future__ import annotations

import json

import pytest

from quorum import attest, build as buildlib, manifest as manifest_mod, reproduce as repro
from quorum.tree import load_tree
from treeutil import make_fixture_tree

pytestmark = pytest.mark.engine


def test_provenance_and_rebuild_attestations(fixture_tree, engine, tmp_path, locked_seed_text):
    res = buildlib.build(load_tree(fixture_tree), engine=engine, options=buildlib.Options(jobs=2))
    assert res.ok, res.failed()
    man = manifest_mod.load(fixture_tree / "manifests" / "manifest.json")
    for n in res.order:
        p = attest.provenance_path(fixture_tree / "out", n)
        st = attest.load_statement(p)
        assert st["predicateType"] == attest.PROVENANCE_PREDICATE
        assert "sha256:" + st["subject"][0]["digest"]["sha256"] == man.entries[n].digest
        assert st["predicate"]["runDetails"]["builder"]["version"]["engine"] in ("docker", "podman")
        # No build path: the checkout's folder appears nowhere (the source's
        # file:// URL, beside it, is part of the definition).
        assert str(fixture_tree) + "/" not in p.read_text()
    base = attest.load_statement(attest.provenance_path(fixture_tree / "out", "base"))
    roles = {d["annotations"]["role"] for d in base["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert {"source", "seed", "rendered"} <= roles

    # Another checkout in another folder (the engine's layer cache makes
    # this quick): the same provenance, byte for byte.
    other = make_fixture_tree(tmp_path / "elsewhere" / "tree", seed_lock=locked_seed_text,
                              srcdir=tmp_path / "tree-src")
    res2 = buildlib.build(load_tree(other), engine=engine, options=buildlib.Options(jobs=2))
    assert res2.ok, res2.failed()
    for n in res.order:
        assert (attest.provenance_path(other / "out", n).read_bytes()
                == attest.provenance_path(fixture_tree / "out", n).read_bytes()), n

    r = repro.reproduce(load_tree(fixture_tree), packages=["base"], jobs=2, engine=engine)
    assert [v.verdict for v in r.verdicts] == ["REPRODUCED"]
    st = attest.load_statement(attest.rebuild_path(fixture_tree / "out" / "reproduce", "base"))
    pred = st["predicate"]
    assert pred["verdict"] == "REPRODUCED" and "sha256:" + pred["expected"]["sha256"] == man.entries["base"].digest
    assert set(pred["variations"]["applied"]) >= {"build_path", "umask", "hostname"}
    assert json.loads((fixture_tree / "out/reproduce/report.json").read_text())["exit_code"] == 0
