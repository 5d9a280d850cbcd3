"""Attestations: SLSA provenance and rebuild Statements, DSSE envelopes
signed with real GnuPG keys, checked by quorum and by in-toto's reference
implementation (docs/spec/attestations.md)."""
from __future__ import annotations

import base64
import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trust_keys import keyring  # noqa: E402,F401  (fixture)

from quorum import attest, canon, render  # noqa: E402
from quorum.gpg import Home  # noqa: E402
from quorum.tree import load_tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
D = {c: "sha256:" + c * 64 for c in "abcdef0"}


def _facts(**kw) -> attest.BuildFacts:
    tree = load_tree(ROOT)
    pkg = tree.packages["zlib"]
    rendered = render.render(pkg, seed_image=D["a"], deps=[], epoch=tree.config.source_date_epoch)
    mats = attest.package_materials(pkg, rendered, [attest.Built("seed", "seed", "q/seed:1", D["b"], D["a"])],
                                    render.file_hashes(pkg))
    base = dict(tree="quorum", name="zlib", kind="package", version=pkg.version, image="q/zlib:1", digest=D["d"],
                config_digest=D["e"], layer_digest=D["f"], input_hash=D["0"], definition="packages/zlib/package.yaml",
                epoch=1, materials=mats, engine={"kind": "docker", "version": "27.0"})
    base.update(kw)
    return attest.BuildFacts(**base)


def _rebuild(verdict="REPRODUCED", expected=D["d"], rebuilt=D["d"]) -> dict:
    return attest.rebuild(attest.RebuildFacts(
        tree="quorum", name="zlib", kind="package", image="q/zlib:1", verdict=verdict, expected=expected,
        rebuilt=rebuilt, reason="", applied={"umask": "umask 022 -> 002"}, not_applied={"user": "no"},
        engine={"kind": "docker", "version": "27.0"}))


# --- provenance ----------------------------------------------------------------------

def test_provenance_names_subject_sources_seed_and_rendered_files():
    st = attest.provenance(_facts())
    attest.check_statement(st, "p")
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    assert st["subject"] == [{"name": "q/zlib:1", "digest": {"sha256": "d" * 64}}]
    bd = st["predicate"]["buildDefinition"]
    assert bd["buildType"] == attest.BUILD_TYPE
    deps = {d["name"]: d for d in bd["resolvedDependencies"]}
    src = deps["zlib_1.2.13.dfsg.orig.tar.bz2"]
    assert src["annotations"]["role"] == "source" and src["annotations"]["debian"]["package"] == "zlib"
    assert deps["q/seed:1"]["digest"] == {"sha256": "b" * 64}
    cf = deps[".quorum/Containerfile"]
    assert base64.b64decode(cf["content"]).startswith(b"# Rendered by quorum")
    assert bd["internalParameters"]["inputHash"] == D["0"]
    assert st["predicate"]["runDetails"]["builder"]["version"]["engine"] == "docker"


def test_provenance_is_deterministic_and_engine_only_informational(tmp_path):
    a, b = attest.provenance(_facts()), attest.provenance(_facts())
    assert canon.dumps(a) == canon.dumps(b)
    c = attest.provenance(_facts(engine={"kind": "podman", "version": "5"}))
    # Another engine changes the builder's description only, never what
    # the artifact is or what it was made from.
    assert c["subject"] == a["subject"] and c["predicate"]["buildDefinition"] == a["predicate"]["buildDefinition"]
    p = tmp_path / "x.json"
    attest.write_statement(p, a)
    assert attest.load_statement(p) == a
    assert p.read_bytes() == canon.dumps_pretty(a)
    assert str(tmp_path) not in p.read_text()


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "_type"),
    (lambda s: s["subject"][0]["digest"].update(sha256="D" * 64), "subject[0].digest"),
    (lambda s: s["subject"].append(copy.deepcopy(s["subject"][0])), "subject"),
    (lambda s: s.update(predicateType="https://example.invalid/x"), "predicateType"),
    (lambda s: s["predicate"]["buildDefinition"].update(buildType="x"), "predicate.buildDefinition.buildType"),
    (lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"][0].pop("digest"),
     "predicate.buildDefinition.resolvedDependencies[0].digest"),
    # Inline content that is not what its digest says.
    (lambda s: [d.update(content=base64.b64encode(b"FROM evil\n").decode())
                for d in s["predicate"]["buildDefinition"]["resolvedDependencies"] if "content" in d][:1],
     "content"),
    (lambda s: s["predicate"]["runDetails"]["builder"].update(id="x"), "predicate.runDetails.builder.id"),
])
def test_malformed_provenance_refused_naming_the_field(mutate, field):
    st = attest.provenance(_facts())
    mutate(st)
    with pytest.raises(attest.AttestError) as e:
        attest.check_statement(st, "prov.json")
    assert "prov.json" in str(e.value) and field in str(e.value)
    assert e.value.exit_code == 3


def test_hostile_statement_files(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("[" * 100000)
    with pytest.raises(attest.AttestError, match="nested"):
        attest.load_statement(p)
    (tmp_path / "link").symlink_to("/dev/zero")
    with pytest.raises(attest.AttestError, match="symbolic link"):
        attest.load_statement(tmp_path / "link")


# --- rebuild attestations --------------------------------------------------------------

def test_rebuild_statement_records_verdict_variations_and_digests():
    st = _rebuild()
    attest.check_statement(st, "r")
    p = st["predicate"]
    assert st["predicateType"] == attest.REBUILD_PREDICATE
    assert p["verdict"] == "REPRODUCED" and p["expected"] == p["rebuilt"] == {"sha256": "d" * 64}
    assert p["variations"]["applied"] == {"umask": "umask 022 -> 002"}
    mm = _rebuild("MISMATCH", rebuilt=D["e"])
    attest.check_statement(mm, "r")
    assert mm["subject"][0]["digest"] == {"sha256": "d" * 64}    # what the manifest claimed
    assert _rebuild("FAILED", expected=None, rebuilt=None) is None


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.update(verdict="REPRODUCED", rebuilt={"sha256": "e" * 64}), "predicate.verdict"),
    (lambda p: p.update(verdict="MISMATCH"), "predicate.verdict"),
    (lambda p: p.update(verdict="OK"), "predicate.verdict"),
    (lambda p: p.update(extra=1), "predicate"),
    (lambda p: p["rebuilder"].update(id="urn:someone"), "predicate.rebuilder.id"),
])
def test_inconsistent_rebuild_refused(mutate, field):
    st = _rebuild()
    mutate(st["predicate"])
    with pytest.raises(attest.AttestError) as e:
        attest.check_statement(st, "r.json")
    assert field in str(e.value)


def test_rebuild_subject_must_be_the_judged_digest():
    st = _rebuild()
    st["subject"][0]["digest"]["sha256"] = "e" * 64
    with pytest.raises(attest.AttestError, match="subject"):
        attest.check_statement(st, "r.json")
