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
from quorum.errors import QuorumError  # noqa: E402
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


# --- DSSE: signed with real GnuPG keys, checked by quorum and by in-toto ----------------

def _anchors(keys) -> tuple[Home, dict]:
    """A throwaway home holding only these public keys, and their anchors."""
    cm = Home.temporary()
    h = cm.__enter__()
    for k in keys:
        h.import_keys(k.public)
    return cm, attest.anchors_from_home(str(h.path), [k.fpr for k in keys])


def _write(tmp_path: Path, env: dict, name="e.json") -> Path:
    p = tmp_path / name
    p.write_bytes(canon.dumps_pretty(env))
    return p


@pytest.mark.parametrize("statement", [lambda: attest.provenance(_facts()), _rebuild], ids=["provenance", "rebuild"])
def test_signed_envelope_verified_by_quorum(keyring, tmp_path, statement):
    st = statement()
    carol, dave = keyring["carol"], keyring["dave"]
    env = attest.sign_envelope(st, fingerprint=carol.fpr, homedir=str(keyring.home.path))
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert json.loads(base64.b64decode(env["payload"])) == st
    cm, anchors = _anchors([carol, dave])
    try:
        checked = attest.verify_envelope(_write(tmp_path, env), anchors)
        assert checked.signers == (carol.fpr,) and checked.statement == st
        # Dave did not sign it: with only his key, nothing counts.
        with pytest.raises(attest.AttestError, match="no good signature"):
            attest.verify_envelope(_write(tmp_path, env), {dave.fpr: anchors[dave.fpr]})
    finally:
        cm.__exit__(None, None, None)


def test_key_with_signing_subkey_signs_with_its_primary(keyring, tmp_path):
    erin = keyring["erin"]
    # GnuPG would pick the signing subkey; quorum makes it use the primary,
    # which every OpenPGP-aware DSSE verifier can represent.
    env = attest.sign_envelope(_rebuild(), fingerprint=erin.fpr, homedir=str(keyring.home.path))
    assert env["signatures"][0]["keyid"] == erin.fpr.lower()
    cm, anchors = _anchors([erin])
    try:
        assert attest.verify_envelope(_write(tmp_path, env), anchors).signers == (erin.fpr,)
    finally:
        cm.__exit__(None, None, None)


def _tamper_subject(st):
    st["subject"][0]["digest"]["sha256"] = "9" * 64


def _tamper_predicate(st):
    st["predicate"]["verdict"] = "MISMATCH"
    st["predicate"]["rebuilt"] = {"sha256": "9" * 64}


@pytest.mark.parametrize("tamper", [_tamper_subject, _tamper_predicate], ids=["subject", "predicate"])
def test_tampered_envelope_refused_by_quorum_and_in_toto(keyring, tmp_path, tamper):
    from in_toto.exceptions import SignatureVerificationError
    from in_toto.models.metadata import Envelope, Metadata
    carol = keyring["carol"]
    st = _rebuild()
    env = attest.sign_envelope(st, fingerprint=carol.fpr, homedir=str(keyring.home.path))
    bad = copy.deepcopy(st)
    tamper(bad)
    env["payload"] = base64.b64encode(canon.dumps(bad)).decode()
    cm, anchors = _anchors([carol])
    try:
        with pytest.raises(attest.AttestError, match="no good signature"):
            attest.verify_envelope(_write(tmp_path, env), anchors)
        meta = Metadata.from_dict(copy.deepcopy(env))
        assert isinstance(meta, Envelope)
        with pytest.raises(SignatureVerificationError):
            meta.verify_signature(_in_toto_key(anchors[carol.fpr]))
    finally:
        cm.__exit__(None, None, None)


def _in_toto_key(anchor: attest.Anchor) -> dict:
    """The anchor's primary key in in-toto's key-dict form."""
    key = anchor.keys[0]
    d = key.to_dict()
    d["keyid"] = key.keyid
    return d


def test_in_toto_reference_implementation_verifies_quorums_envelopes(keyring, tmp_path):
    """Interoperability: in-toto (from PyPI) checks the DSSE signature with
    the signer's OpenPGP key, and in-toto-attestation's schemas accept the
    Statement and the SLSA provenance predicate."""
    from google.protobuf import json_format
    from in_toto.models.metadata import Envelope, Metadata
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    carol = keyring["carol"]
    prov = attest.provenance(_facts())
    env = attest.sign_envelope(prov, fingerprint=carol.fpr, homedir=str(keyring.home.path))
    path = _write(tmp_path, env)
    cm, anchors = _anchors([carol])
    try:
        meta = Metadata.load(str(path))
        assert isinstance(meta, Envelope)
        meta.verify_signature(_in_toto_key(anchors[carol.fpr]))     # raises if not
    finally:
        cm.__exit__(None, None, None)
    payload = json.loads(meta.payload)
    stmt = Statement.copy_from_pb(json_format.ParseDict(payload, statement_pb2.Statement()))
    stmt.validate()
    # The predicate against SLSA provenance v1's schema: unknown fields
    # would be refused.
    pred = json_format.ParseDict(payload["predicate"], provenance_pb2.Provenance())
    assert pred.build_definition.build_type == attest.BUILD_TYPE
    assert len(pred.build_definition.resolved_dependencies) == len(
        prov["predicate"]["buildDefinition"]["resolvedDependencies"])
    Statement.copy_from_pb(json_format.ParseDict(json.loads(canon.dumps(_rebuild())),
                                                 statement_pb2.Statement())).validate()


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(payloadType="text/plain"), "payloadType"),
    (lambda e: e.update(signatures=[]), "signatures"),
    (lambda e: e["signatures"][0].update(sig="!!!"), "signatures"),
    (lambda e: e.update(extra=1), "envelope"),
])
def test_malformed_envelopes_refused(keyring, tmp_path, mutate, message):
    carol = keyring["carol"]
    env = attest.sign_envelope(_rebuild(), fingerprint=carol.fpr, homedir=str(keyring.home.path))
    mutate(env)
    cm, anchors = _anchors([carol])
    try:
        with pytest.raises(attest.AttestError) as e:
            attest.verify_envelope(_write(tmp_path, env), anchors)
        assert message in str(e.value) and "e.json" in str(e.value)
    finally:
        cm.__exit__(None, None, None)


# --- quorum sign + quorum verify: M distinct rebuilders per role ------------------------

def _reproduced(root: Path, verdict: str = "REPRODUCED") -> None:
    """What a reproduce leaves in out/reproduce/attestations/ (no engine)."""
    from quorum import manifest as manifest_mod
    man = manifest_mod.load(root / "manifests" / "manifest.json")
    for n, e in man.entries.items():
        rebuilt = e.digest if verdict == "REPRODUCED" else "sha256:" + "9" * 64
        st = attest.rebuild(attest.RebuildFacts(
            tree=man.tree, name=n, kind=e.kind, image=f"quorum-test/{n}:1.0", verdict=verdict, expected=e.digest,
            rebuilt=rebuilt, reason="", applied={}, not_applied={}, engine={"kind": "fake", "version": "0"}))
        attest.write_statement(attest.rebuild_path(root / "out" / "reproduce", n), st)


@pytest.fixture
def rebuilt_tree(tmp_path, keyring):
    from trust_keys import COMMIT, make_tree, write_policy
    from quorum import sign as signlib
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [keyring["alice"]]),
                        "rebuilder": (1, [keyring["carol"], keyring["dave"], keyring["erin"]])})
    pol = root / "manifests" / "policy.yaml"
    pol.write_text(pol.read_text().replace("  rebuilder:\n    threshold: 1\n",
                                           "  rebuilder:\n    threshold: 1\n    rebuilders: 2\n"))
    signlib.sign(root, user=keyring.home, key=keyring["alice"].fpr, images=False, release=True, commit=COMMIT)
    return root


def _sign_as(root, keyring, who):
    from quorum import sign as signlib
    return signlib.sign(root, user=keyring.home, key=keyring[who].fpr, images=False)


def _verify(root, tmp_path):
    from quorum import verify as verifylib
    rep = verifylib.verify(root, state_dir=tmp_path / "state", trust_on_first_use=True, record=False)
    return rep, next(r for r in rep.roles if r.name == "rebuilder")


def test_verify_requires_m_distinct_rebuilders(rebuilt_tree, keyring, tmp_path, capsys):
    root = rebuilt_tree
    _reproduced(root)
    rep = _sign_as(root, keyring, "carol")
    names = sorted(p.name for p in rep.attestations)
    assert names == ["hello.rebuild.json", "zlib.rebuild.json"]
    report, r = _verify(root, tmp_path)
    # Carol's manifest signature meets the threshold, but one rebuilder is not two.
    assert len(r.signers) == 1 and r.short == {"hello": 1, "zlib": 1} and not report.ok
    from quorum.cli import main
    state = ["--state-dir", str(tmp_path / "cli-state"), "--trust-on-first-use"]
    assert main(["verify", "--tree", str(root), *state]) == 1
    assert "2 artifact(s) rebuilt by fewer than 2: hello (1), zlib (1)" in capsys.readouterr().out
    _sign_as(root, keyring, "dave")
    report, r = _verify(root, tmp_path)
    assert r.short == {} and report.ok, report.notes + report.problems
    assert main(["verify", "--tree", str(root), "--json", *state]) == 0
    roles = {x["role"]: x for x in json.loads(capsys.readouterr().out)["roles"]}
    assert roles["rebuilder"]["rebuilders"] == 2 and roles["rebuilder"]["short_of_rebuilders"] == {}


def test_tampered_or_unfavourable_rebuild_attestations_do_not_count(rebuilt_tree, keyring, tmp_path):
    root = rebuilt_tree
    _reproduced(root)
    _sign_as(root, keyring, "carol")
    _sign_as(root, keyring, "dave")
    # Dave's envelope for zlib, with its subject changed after signing.
    p = attest.signed_dir(root / "manifests", keyring["dave"].fpr) / "zlib.rebuild.json"
    env = json.loads(p.read_text())
    st = json.loads(base64.b64decode(env["payload"]))
    st["predicate"]["name"] = "hello"
    env["payload"] = base64.b64encode(canon.dumps(st)).decode()
    p.write_text(json.dumps(env))
    report, r = _verify(root, tmp_path)
    assert r.short == {"zlib": 1} and not report.ok
    assert any("no good signature" in n and "zlib.rebuild.json" in n for n in report.notes)
    # Carol's envelope copied into Erin's folder counts for nobody.
    src = attest.signed_dir(root / "manifests", keyring["carol"].fpr) / "zlib.rebuild.json"
    dst = attest.signed_dir(root / "manifests", keyring["erin"].fpr) / "zlib.rebuild.json"
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes())
    report, r = _verify(root, tmp_path)
    assert r.short == {"zlib": 1}
    # Erin rebuilt and got other bytes: signed, but a MISMATCH is no vote.
    _reproduced(root, "MISMATCH")
    _sign_as(root, keyring, "erin")
    report, r = _verify(root, tmp_path)
    assert r.short == {"zlib": 1} and not report.ok
    assert any("verdict MISMATCH" in n for n in report.notes)


def test_sign_skips_statements_about_other_digests(rebuilt_tree, keyring):
    root = rebuilt_tree
    _reproduced(root)
    p = attest.rebuild_path(root / "out" / "reproduce", "zlib")
    st = json.loads(p.read_text())
    st["subject"][0]["digest"]["sha256"] = st["predicate"]["expected"]["sha256"] = \
        st["predicate"]["rebuilt"]["sha256"] = "7" * 64
    p.write_bytes(canon.dumps_pretty(st))
    rep = _sign_as(root, keyring, "carol")
    assert [x.name for x in rep.attestations] == ["hello.rebuild.json"]
    assert any("not about zlib" in w for w in rep.warnings)


def test_policy_rebuilders_is_checked(tmp_path, keyring):
    from trust_keys import write_policy
    from quorum import policy as policy_mod
    pol = write_policy(tmp_path, {"maintainer": (1, [keyring["alice"]])})
    base = pol.read_text()
    policy_mod.load(pol)
    for bad in ("2", "yes", "-1"):
        pol.write_text(base.replace("    threshold: 1\n", f"    threshold: 1\n    rebuilders: {bad}\n"))
        with pytest.raises(QuorumError) as e:
            policy_mod.load(pol)
        assert "roles.maintainer.rebuilders" in str(e.value)


def test_revoked_rebuilder_does_not_count(tmp_path, keyring):
    from trust_keys import COMMIT, make_tree, odd_key, write_policy
    from quorum import manifest as manifest_mod, sign as signlib
    revoked = odd_key(keyring, "revoked")
    root = make_tree(tmp_path / "t", {"hello": b"hello\n"})
    pol = write_policy(root, {"maintainer": (1, [keyring["alice"]]),
                              "rebuilder": (1, [keyring["carol"], revoked.key])})
    pol.write_text(pol.read_text().replace("  rebuilder:\n    threshold: 1\n",
                                           "  rebuilder:\n    threshold: 1\n    rebuilders: 2\n"))
    signlib.sign(root, user=keyring.home, key=keyring["alice"].fpr, images=False, release=True, commit=COMMIT)
    _reproduced(root)
    _sign_as(root, keyring, "carol")
    # The revoked key's owner still has a home where it signs as ever.
    st = attest.load_statement(attest.rebuild_path(root / "out" / "reproduce", "hello"))
    env = attest.sign_envelope(st, fingerprint=revoked.key.fpr, homedir=str(revoked.home))
    p = attest.signed_dir(root / "manifests", revoked.key.fpr) / "hello.rebuild.json"
    p.parent.mkdir(parents=True)
    p.write_bytes(canon.dumps_pretty(env))
    report, r = _verify(root, tmp_path)
    assert r.short == {"hello": 1} and not report.ok
    assert manifest_mod.load(root / "manifests" / "manifest.json").entries["hello"]


def test_write_rebuilds_one_statement_per_verdict_and_none_without_digests(tmp_path):
    from quorum.reproduce import Verdict
    ok = Verdict(name="zlib", kind="package", verdict="REPRODUCED", expected=D["d"], rebuilt=D["d"])
    gone = Verdict(name="lua", kind="package", verdict="FAILED", expected=None, rebuilt=None, reason="engine: lost")
    stale = attest.rebuild_path(tmp_path, "lua")
    attest.write_statement(stale, _rebuild())           # an earlier run's
    kw = dict(tree="quorum", namespace="quorum", versions={"zlib": "1.3", "lua": "5.4"},
              applied={"umask": "umask 022 -> 002"}, not_applied={}, engine={"kind": "docker", "version": "27"})
    written = attest.write_rebuilds(tmp_path, verdicts=[ok, gone], **kw)
    assert written == [attest.rebuild_path(tmp_path, "zlib")] and not stale.exists()
    st = attest.load_statement(written[0])
    assert st["subject"][0]["name"] == "quorum/zlib:1.3" and st["predicate"]["verdict"] == "REPRODUCED"
