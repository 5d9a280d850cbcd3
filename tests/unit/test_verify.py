"""quorum verify: the attacks it must refuse and the paths it must accept.

Real GnuPG with throwaway keys (tests/trust_keys.py); never the user's
keyring.  Where an attack needs the repository's cooperation (a forged file,
a log entry), the test plays the attacker who controls the repository and
appends to the log too, so that the refusal is shown to come from the check
named in the test and not merely from a missing log entry.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trust_keys import COMMIT, build, keyring, later, make_tree, now, write_policy  # noqa: E402,F401

from quorum import canon, manifest as manifest_mod, translog  # noqa: E402
from quorum import sign as signlib, verify as verifylib  # noqa: E402
from quorum.cli import main  # noqa: E402
from quorum.errors import QuorumError  # noqa: E402
from quorum.policy import TrustFiles  # noqa: E402


# --- helpers ------------------------------------------------------------------------------

def sign(root, kr, who, **kw):
    key = kw.pop("key", None) or kr[who].fpr
    return signlib.sign(root, user=kr.home, key=key, images=False, **kw)


def release(root, kr, who="alice", **kw):
    return sign(root, kr, who, release=True, commit=COMMIT, **kw)


def check(root, state, **kw) -> verifylib.Report:
    # These tests are about what happens after a root is trusted; the
    # trust root itself has its own tests below.
    kw.setdefault("trust_on_first_use", True)
    return verifylib.verify(root, state_dir=state, **kw)


def role(report, name) -> verifylib.RoleVerdict:
    return next(r for r in report.roles if r.name == name)


def uncounted(report) -> dict[str, str]:
    return {c.file.name: c.problem for c in report.signatures if c.problem}


def forge(root, kr, who, data: bytes, *, as_name: str | None = None, extra: list[str] = ()) -> Path:
    """A detached signature by ``who`` over ``data``, written under
    ``as_name``'s file name and logged as if it were legitimate."""
    sig = kr.home.sign(data, kr[who].fpr)[0] if not extra else _gpg_sign(kr, who, data, extra)
    return plant(root, as_name or kr[who].fpr, sig)


def _gpg_sign(kr, who, data, extra):
    from trust_keys import gpg
    who_args = [] if "--local-user" in extra else ["--local-user", kr[who].fpr]
    return gpg(kr.home.path, "--armor", "--detach-sign", *who_args, *extra, data=data)


def plant(root, fpr: str, sig: bytes) -> Path:
    files = TrustFiles(root)
    p = files.signature(fpr)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(sig)
    man = manifest_mod.parse(files.manifest.read_bytes())
    translog.append(files.log, tree=man.tree, serial=man.serial,
                    manifest_sha256=canon.sha256_bytes(files.manifest.read_bytes()),
                    signer=fpr, signature_sha256=canon.sha256_bytes(sig), now=now())
    return p


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def tree(tmp_path, keyring):
    """maintainer 1-of-{alice,bob}, reviewer 1-of-{carol,dave}, released by alice."""
    root = make_tree(tmp_path / "tree")
    write_policy(root, {"maintainer": (1, [keyring["alice"], keyring["bob"]]),
                        "reviewer": (1, [keyring["carol"], keyring["dave"]])})
    release(root, keyring)
    return root


# --- good paths ------------------------------------------------------------------------------

def test_thresholds_met_across_roles(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (2, [k["alice"], k["bob"]]), "reviewer": (1, [k["carol"], k["dave"]]),
                        "ci": (1, [k["ci"]])})
    release(root, k)
    for who in ("bob", "carol", "ci"):
        sign(root, k, who)
    rep = check(root, state)
    assert rep.ok, rep.to_json()
    assert [(r.name, len(r.signers), r.ok) for r in rep.roles] == [("maintainer", 2, True), ("reviewer", 1, True),
                                                                    ("ci", 1, True)]
    assert role(rep, "maintainer").signers[0][1] in (k["alice"].uid, k["bob"].uid)
    assert not rep.problems and not uncounted(rep)


def test_second_reviewer_turns_failing_verify_into_passing(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (1, [k["alice"]]), "reviewer": (2, [k["carol"], k["dave"]])})
    release(root, k)
    sign(root, k, "carol")
    first = check(root, state)
    assert not first.ok and role(first, "reviewer").signers == [(k["carol"].fpr, k["carol"].uid)]
    sign(root, k, "dave")
    second = check(root, state)
    assert second.ok and len(role(second, "reviewer").signers) == 2


def test_key_in_two_roles_counts_in_each_only_where_listed(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (1, [k["alice"]]), "ci": (1, [k["alice"], k["ci"]]),
                        "reviewer": (1, [k["carol"]])})
    release(root, k)
    rep = check(root, state)
    assert role(rep, "maintainer").ok and role(rep, "ci").ok
    assert not role(rep, "reviewer").ok and not rep.ok


def test_cli_table_json_and_exit_codes(tree, keyring, state, capsys):
    assert main(["verify", "--tree", str(tree), "--state-dir", str(state), "--trust-on-first-use"]) == 1
    out = capsys.readouterr().out
    assert "maintainer" in out and keyring["alice"].fpr in out and "Alice Maintainer" in out
    assert "NOT MET (0/1)" in out and "REFUSED" in out
    sign(tree, keyring, "dave")
    assert main(["verify", "--tree", str(tree), "--state-dir", str(state), "--json", "--trust-on-first-use"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["serial"] == 1 and doc["commit"] == COMMIT
    assert {r["role"]: r["count"] for r in doc["roles"]} == {"maintainer": 1, "reviewer": 1}


def test_never_touches_the_users_keyring(tree, keyring, state, monkeypatch, tmp_path):
    # GNUPGHOME holds every key, Mallory's included: it must make no difference.
    monkeypatch.setenv("GNUPGHOME", str(keyring.home.path))
    before = sorted(p.name for p in keyring.home.path.iterdir())
    forge(tree, keyring, "mallory", TrustFiles(tree).manifest.read_bytes())
    rep = check(tree, state)
    assert "not an anchor" in uncounted(rep)[keyring["mallory"].fpr + ".asc"]
    assert sorted(p.name for p in keyring.home.path.iterdir()) == before


# --- attacks -------------------------------------------------------------------------------------

def test_signature_by_key_not_in_policy(tree, keyring, state):
    # Mallory runs quorum sign like anyone: the signature is written (with a
    # warning) but counts for nothing.
    rep_sign = sign(tree, keyring, "mallory")
    assert any("not an anchor" in w for w in rep_sign.warnings)
    rep = check(tree, state)
    assert not role(rep, "reviewer").ok and not rep.ok
    assert "not an anchor" in uncounted(rep)[keyring["mallory"].fpr + ".asc"]


def test_same_key_signing_twice_counts_once(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (2, [k["alice"], k["bob"]])})
    release(root, k)
    data = TrustFiles(root).manifest.read_bytes()
    # Alice's signature copied under Bob's name, and a second signature of
    # Alice's appended to her own file.
    forge(root, k, "alice", data, as_name=k["bob"].fpr)
    own = TrustFiles(root).signature(k["alice"].fpr)
    plant(root, k["alice"].fpr, own.read_bytes() + _gpg_sign(k, "alice", data, ["--digest-algo", "SHA512"]))
    rep = check(root, state)
    assert not rep.ok and role(rep, "maintainer").signers == []
    bad = uncounted(rep)
    assert "but the file is named for" in bad[k["bob"].fpr + ".asc"]
    assert "holds 2 signatures" in bad[k["alice"].fpr + ".asc"]


def test_tally_counts_distinct_primary_fingerprints(keyring):
    from quorum.policy import Policy, Role
    k = keyring
    pol = Policy(version=1, rotation_role="maintainer", path=Path("p"), data=b"",
                 roles={"maintainer": Role("maintainer", 2, (k["alice"].fpr, k["erin"].fpr))})
    checked = [verifylib.Checked(Path("a"), fingerprint=k["erin"].fpr),      # made by the subkey
               verifylib.Checked(Path("b"), fingerprint=k["erin"].fpr),      # made by the primary
               verifylib.Checked(Path("c"), fingerprint=k["alice"].fpr, problem="BAD signature")]
    (v,) = verifylib.tally(pol, checked)
    assert v.signers == [(k["erin"].fpr, "")] and not v.ok


def test_subkey_and_primary_count_once(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (2, [k["erin"], k["bob"]])})
    # Erin releases with her signing subkey: it counts under her primary.
    release(root, k, "erin", key=k["erin"].sub + "!")
    rep = check(root, state, record=False)
    assert role(rep, "maintainer").signers == [(k["erin"].fpr, k["erin"].uid)]
    # The same person again with the primary key, under Bob's name and
    # appended to her own file: still one person.
    data = TrustFiles(root).manifest.read_bytes()
    primary_sig = _gpg_sign(k, "erin", data, ["--local-user", k["erin"].fpr + "!"])
    plant(root, k["bob"].fpr, primary_sig)
    own = TrustFiles(root).signature(k["erin"].fpr)
    plant(root, k["erin"].fpr, own.read_bytes() + primary_sig)
    rep = check(root, state)
    assert not rep.ok and len(role(rep, "maintainer").signers) == 0
    assert "named for" in uncounted(rep)[k["bob"].fpr + ".asc"]


def test_subkey_named_file_is_refused(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (1, [k["erin"]])})
    release(root, k, "erin")
    sig = TrustFiles(root).signature(k["erin"].fpr)
    plant(root, k["erin"].sub, sig.read_bytes())
    sig.unlink()
    rep = check(root, state)
    assert not rep.ok and "named for" in uncounted(rep)[k["erin"].sub + ".asc"]


def test_valid_signature_over_other_bytes(tree, keyring, state):
    forge(tree, keyring, "carol", b"some other manifest\n")
    rep = check(tree, state)
    assert not rep.ok and "BAD signature" in uncounted(rep)[keyring["carol"].fpr + ".asc"]


def test_inline_signed_message_is_not_a_detached_signature(tree, keyring, state):
    from trust_keys import gpg
    signed = gpg(keyring.home.path, "--armor", "--sign", "--local-user", keyring["carol"].fpr,
                 data=TrustFiles(tree).manifest.read_bytes())
    plant(tree, keyring["carol"].fpr, signed)
    rep = check(tree, state)
    assert not rep.ok and "not a detached signature" in uncounted(rep)[keyring["carol"].fpr + ".asc"]


def test_weak_hash_is_refused(tree, keyring, state):
    forge(tree, keyring, "carol", TrustFiles(tree).manifest.read_bytes(), extra=["--digest-algo", "SHA1"])
    rep = check(tree, state)
    assert not rep.ok and "weak hash SHA1" in uncounted(rep)[keyring["carol"].fpr + ".asc"]


def test_manifest_changed_after_signing(tree, keyring, state):
    sign(tree, keyring, "carol")
    assert check(tree, state, record=False).ok
    files = TrustFiles(tree)
    man = manifest_mod.parse(files.manifest.read_bytes())
    e = man.entries["hello"]
    man.entries["hello"] = manifest_mod.Entry(e.kind, e.version, "sha256:" + "e" * 64, e.input_hash, e.size)
    files.manifest.write_bytes(man.to_bytes())
    rep = check(tree, state)
    assert not rep.ok and all(r.signers == [] for r in rep.roles)
    assert all("BAD signature" in p for p in uncounted(rep).values())


def test_non_canonical_manifest_is_an_error(tree, state):
    files = TrustFiles(tree)
    files.manifest.write_bytes(files.manifest.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(QuorumError, match="canonical"):
        check(tree, state)


def test_expired_manifest(tree, keyring, state):
    sign(tree, keyring, "carol")
    assert check(tree, state, record=False).ok
    rep = check(tree, state, now=later(91))
    assert not rep.ok and any("expired" in p for p in rep.problems)


def test_unreleased_manifest(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [keyring["alice"]])})
    forge(root, keyring, "alice", TrustFiles(root).manifest.read_bytes())
    rep = check(root, state)
    assert not rep.ok and any("never released" in p for p in rep.problems)


def test_older_serial_after_newer_was_accepted(tree, keyring, state, tmp_path):
    sign(tree, keyring, "carol")
    snapshot = tmp_path / "serial1"
    shutil.copytree(tree / "manifests", snapshot)
    assert check(tree, state).ok
    # A new release with changed digests: serial 2, signed and accepted.
    build(tree, {"hello": b"hello, again\n", "zlib": b"zlib\n"})
    release(tree, keyring)
    sign(tree, keyring, "carol")
    assert check(tree, state).ok
    # The mirror serves the old, validly signed serial 1 again.
    shutil.rmtree(tree / "manifests")
    shutil.copytree(snapshot, tree / "manifests")
    rep = check(tree, state)
    assert not rep.ok and any("serial 1 is lower than serial 2" in p for p in rep.problems)
    # ... unless the user resets deliberately.
    assert check(tree, state, accept_serial=1).ok


def test_same_serial_different_bytes_after_acceptance(tree, keyring, state, tmp_path):
    sign(tree, keyring, "carol")
    assert check(tree, state).ok
    files = TrustFiles(tree)
    man = manifest_mod.parse(files.manifest.read_bytes())
    man.expires = "2099-01-01T00:00:00Z"        # same serial, new bytes: a forked release
    files.manifest.write_bytes(man.to_bytes())
    for who in ("alice", "carol"):
        forge(tree, keyring, who, man.to_bytes())
    rep = check(tree, state)
    assert not rep.ok and any("same serial" in p for p in rep.problems)


def _rewrite_log(tree, lines):
    TrustFiles(tree).log.write_bytes(b"".join(canon.dumps(e) + b"\n" for e in lines))


def test_log_entry_removed_from_the_middle(tree, keyring, state):
    sign(tree, keyring, "mallory")
    sign(tree, keyring, "carol")
    entries = translog.read(TrustFiles(tree).log)
    _rewrite_log(tree, [entries[0], entries[2]])
    rep = check(tree, state)
    assert not rep.ok and any("transparency log" in p and "line 2" in p for p in rep.problems)


def test_last_log_entry_removed(tree, keyring, state):
    sign(tree, keyring, "carol")
    entries = translog.read(TrustFiles(tree).log)
    _rewrite_log(tree, entries[:-1])
    rep = check(tree, state)
    assert not rep.ok and uncounted(rep)[keyring["carol"].fpr + ".asc"] == "not in the transparency log"


def test_log_entry_altered(tree, keyring, state):
    sign(tree, keyring, "carol")
    entries = translog.read(TrustFiles(tree).log)
    entries[0]["time"] = "2000-01-01T00:00:00Z"
    _rewrite_log(tree, entries)
    rep = check(tree, state)
    assert not rep.ok and any("altered" in p for p in rep.problems)
    # Re-hashing the altered entry only moves the break to the next line.
    entries[0]["hash"] = translog.entry_hash(entries[0])
    _rewrite_log(tree, entries)
    rep = check(tree, state)
    assert not rep.ok and any("line 2" in p and "prev" in p for p in rep.problems)


def test_log_cut_short_after_acceptance(tree, keyring, state):
    sign(tree, keyring, "mallory")
    sign(tree, keyring, "carol")
    assert check(tree, state).ok
    entries = translog.read(TrustFiles(tree).log)
    # Drop Mallory's entry and re-chain everything after it: a consistent
    # but rewritten history.
    kept = [entries[0], dict(entries[2])]
    kept[1].update(seq=2, prev=kept[0]["hash"])
    kept[1]["hash"] = translog.entry_hash(kept[1])
    _rewrite_log(tree, kept)
    rep = check(tree, state)
    assert not rep.ok and any("rewritten" in p or "cut short" in p for p in rep.problems)


def test_malformed_armor(tree, keyring, state):
    good = sign(tree, keyring, "carol").signature.read_bytes()
    name = keyring["carol"].fpr + ".asc"
    lines = good.split(b"\n")
    cases = {
        "mangled header lines": good.replace(b"\n", b"\n!", 3),
        "cut in half": good[:len(good) // 2],
        "no armor body": b"-----BEGIN PGP SIGNATURE-----\n\nnot base64 at all\n-----END PGP SIGNATURE-----\n",
        "body line flipped": b"\n".join(lines[:2] + [lines[2][::-1]] + lines[3:]),
    }
    for what, data in cases.items():
        plant(tree, keyring["carol"].fpr, data)
        rep = check(tree, state)
        assert not rep.ok and name in uncounted(rep), what
    plant(tree, keyring["carol"].fpr, cases["no armor body"])
    assert "not an OpenPGP signature" in uncounted(check(tree, state))[name]


def test_stray_files_do_not_count(tree, keyring, state):
    sig = sign(tree, keyring, "carol").signature
    (sig.parent / "carol.asc").write_bytes(sig.read_bytes())
    (sig.parent / "link.asc").symlink_to(sig)
    rep = check(tree, state)
    bad = uncounted(rep)
    assert "not named" in bad["carol.asc"] and "not a regular file" in bad["link.asc"]
    assert rep.ok      # Carol's own file still counts: strays are reported, not fatal


# --- policy rotation ----------------------------------------------------------------------------

@pytest.fixture
def rotated(tmp_path, keyring, state):
    """Policy v1 (maintainers alice+bob, 2 needed) accepted on this machine,
    then v2 (adds dave as a maintainer) installed."""
    k = keyring
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (2, [k["alice"], k["bob"]]), "reviewer": (1, [k["carol"]])})
    release(root, k)
    sign(root, k, "bob")
    sign(root, k, "carol")
    assert check(root, state).ok
    new = write_policy(root, {"maintainer": (2, [k["alice"], k["bob"], k["dave"]]),
                              "reviewer": (1, [k["carol"]])}, version=2, path=tmp_path / "next.yaml")
    signlib.rotate_policy(root, new)
    return root


def test_policy_rotation_signed_by_too_few_old_maintainers(rotated, keyring, state):
    signlib.sign_policy(rotated, user=keyring.home, key=keyring["alice"].fpr)
    # Dave (a maintainer only in the new version) cannot approve it...
    with pytest.raises(QuorumError, match="not a maintainer of policy version 1"):
        signlib.sign_policy(rotated, user=keyring.home, key=keyring["dave"].fpr)
    # ...and a planted signature of his does not count either.
    pol = TrustFiles(rotated).policy.read_bytes()
    d = TrustFiles(rotated).policy_signatures(2)
    (d / f"{keyring['dave'].fpr}.asc").write_bytes(keyring.home.sign(pol, keyring["dave"].fpr)[0])
    rep = check(rotated, state)
    assert not rep.ok and any("policy version 2 is signed by 1 maintainer(s) of version 1; 2 needed" in p
                              for p in rep.problems)


def test_policy_rotation_signed_by_threshold_is_accepted(rotated, keyring, state):
    for who in ("alice", "bob"):
        signlib.sign_policy(rotated, user=keyring.home, key=keyring[who].fpr)
    rep = check(rotated, state)
    assert rep.ok, rep.to_json()
    assert rep.policy_version == 2 and [r.ok for r in rep.rotations] == [True]
    # A fresh machine checks the whole chain from version 1 too.
    assert check(rotated, state.parent / "fresh").ok


def test_policy_changed_without_rotation(tmp_path, keyring, state):
    k = keyring
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [k["alice"]])})
    release(root, k)
    assert check(root, state).ok
    # Same version number, different anchors: an edit, not a rotation.  It
    # is another root, which this machine does not trust.
    write_policy(root, {"maintainer": (1, [k["mallory"]])})
    sign(root, k, "mallory")
    with pytest.raises(QuorumError, match="trusts no root for this tree \\(a tree named 'demo' was accepted "
                                          "before under root sha256:"):
        check(root, state, trust_on_first_use=False)
    # Back to the accepted version 1, then a proper rotation: the tree is
    # remembered by its root, no flag needed.
    write_policy(root, {"maintainer": (1, [k["alice"]])})
    new = write_policy(root, {"maintainer": (1, [k["alice"]])}, version=2, path=root.parent / "v2.yaml")
    signlib.rotate_policy(root, new)
    signlib.sign_policy(root, user=k.home, key=k["alice"].fpr)
    assert check(root, state, record=False).ok
    assert check(root, state, record=False, trust_on_first_use=False).ok      # remembered by its root


def test_policy_rollback(rotated, keyring, state):
    for who in ("alice", "bob"):
        signlib.sign_policy(rotated, user=keyring.home, key=keyring[who].fpr)
    assert check(rotated, state).ok
    files = TrustFiles(rotated)
    files.policy.write_bytes(files.old_policy(1).read_bytes())
    rep = check(rotated, state)
    assert not rep.ok and any("policy rollback" in p for p in rep.problems)


def test_policy_rotation_through_the_cli(tmp_path, keyring, state, monkeypatch, capsys):
    k = keyring
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [k["alice"]])})
    release(root, k)
    assert check(root, state).ok
    new = write_policy(root, {"maintainer": (1, [k["alice"], k["bob"]])}, version=2, path=tmp_path / "v2.yaml")
    assert main(["policy", "rotate", "--tree", str(root), str(new)]) == 0
    assert main(["policy", "rotate", "--tree", str(root), str(new)]) == 1      # v2 after v2: refused
    assert "must be 3" in capsys.readouterr().err
    assert main(["verify", "--tree", str(root), "--state-dir", str(state), "--trust-on-first-use"]) == 1
    monkeypatch.setenv("GNUPGHOME", str(k.home.path))
    monkeypatch.setenv("QUORUM_SIGNING_KEY", k["alice"].fpr)
    assert main(["policy", "sign", "--tree", str(root)]) == 0
    assert TrustFiles(root).old_policy(1).exists()
    capsys.readouterr()
    assert main(["verify", "--tree", str(root), "--state-dir", str(state), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy_version"] == 2 and doc["rotations"] == [
        {"version": 2, "role": "maintainer", "threshold": 1, "signers": [k["alice"].fpr], "ok": True}]


def test_policy_history_gap_is_an_error(tmp_path, keyring, state):
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [keyring["alice"]])}, version=2)     # no version 1 anywhere
    release(root, keyring)
    with pytest.raises(QuorumError, match="policy-history/1.yaml: missing"):
        check(root, state)


# --- anchor keys in odd states (issue #10) -----------------------------------------------------

def _with_odd_anchor(tmp_path, keyring, kind, *, public=None):
    """maintainer 1-of-{alice, odd}, reviewer 1-of-{carol}; released by
    alice, signed by carol, and a signature of the odd key planted."""
    from trust_keys import odd_key
    odd = odd_key(keyring, kind)
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [keyring["alice"], odd.key]), "reviewer": (1, [keyring["carol"]])})
    if public is not None:
        TrustFiles(root).key_file("maintainer", odd.key.fpr).write_bytes(public)
    release(root, keyring)
    sign(root, keyring, "carol")
    return root, odd


def test_revoked_anchor_is_reported_and_does_not_count(tmp_path, keyring, state):
    root, odd = _with_odd_anchor(tmp_path, keyring, "revoked")
    data = TrustFiles(root).manifest.read_bytes()
    plant(root, odd.key.fpr, odd.sign(data))
    rep = check(root, state, record=False)
    # The threshold is met by alice: the revoked key neither breaks nor helps.
    assert rep.ok, rep.to_json()
    assert role(rep, "maintainer").signers == [(keyring["alice"].fpr, keyring["alice"].uid)]
    assert uncounted(rep)[odd.key.fpr + ".asc"] == "made by a revoked key"
    assert any(f"{odd.key.fpr} (maintainer) is revoked on 20" in n for n in rep.notes), rep.notes
    # Alone, the revoked key can never meet a threshold.
    TrustFiles(root).signature(keyring["alice"].fpr).unlink()
    assert not check(root, state).ok


def test_expired_anchor_is_reported_and_does_not_count(tmp_path, keyring, state):
    from trust_keys import PAST_SIGNING
    root, odd = _with_odd_anchor(tmp_path, keyring, "expired")
    data = TrustFiles(root).manifest.read_bytes()
    # Signed in 2020, while the key was still valid: it expired since.
    plant(root, odd.key.fpr, odd.sign(data, "--faked-system-time", PAST_SIGNING))
    rep = check(root, state, record=False)
    assert rep.ok, rep.to_json()
    assert uncounted(rep)[odd.key.fpr + ".asc"] == "made by an expired key"
    assert any("is expired on 2020-01-02" in n for n in rep.notes), rep.notes


def test_revoked_key_kept_in_retired_checks_an_old_rotation(tmp_path, keyring, state):
    # docs/trust.md: removed anchors' key files go to keys/retired/.  The
    # rotation v1 -> v2 was approved by alice; the revoked key was a v1
    # maintainer too, and its (revoked) key file must not break the chain.
    from trust_keys import odd_key
    k, odd = keyring, odd_key(keyring, "revoked")
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [k["alice"], odd.key])})
    new = write_policy(root, {"maintainer": (1, [k["alice"]])}, version=2, path=tmp_path / "v2.yaml")
    signlib.rotate_policy(root, new)
    signlib.sign_policy(root, user=k.home, key=k["alice"].fpr)
    files = TrustFiles(root)
    retired = files.keys / "retired" / f"{odd.key.fpr}.asc"
    retired.parent.mkdir()
    files.key_file("maintainer", odd.key.fpr).rename(retired)
    release(root, k)
    rep = check(root, state)
    assert rep.ok and [r.ok for r in rep.rotations] == [True], rep.to_json()


@pytest.mark.parametrize("kind, why", [("rsa1024", "its primary key is a 1024-bit RSA key"),
                                       ("dsa1024", "its primary key is a 1024-bit DSA key"),
                                       ("weaksub", "its signing subkey ")])
def test_weak_anchor_key_is_refused_at_policy_load(tmp_path, keyring, state, kind, why):
    from trust_keys import odd_key
    odd = odd_key(keyring, kind)
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [keyring["alice"], odd.key])})
    release(root, keyring)
    plant(root, odd.key.fpr, odd.sign(TrustFiles(root).manifest.read_bytes(), "--digest-algo", "SHA512"))
    with pytest.raises(QuorumError) as e:
        check(root, state)
    msg = str(e.value)
    assert msg.startswith(str(TrustFiles(root).key_file("maintainer", odd.key.fpr))) and why in msg
    assert "RSA of at least 3072 bits" in msg and "1024-bit" in msg


def test_signature_dated_in_the_future_does_not_count(tree, keyring, state):
    data = TrustFiles(tree).manifest.read_bytes()
    forge(tree, keyring, "carol", data, extra=["--faked-system-time", "20300101T000000"])
    rep = check(tree, state)
    assert not rep.ok and uncounted(rep)[keyring["carol"].fpr + ".asc"].startswith(
        "dated 2030-01-01T00:00:00Z, in the future")
    # Within the allowed clock skew a signature counts: a verifier whose
    # clock is a few minutes behind the signer's.
    sign(tree, keyring, "dave")
    assert check(tree, state, now=now() - verifylib.MAX_CLOCK_SKEW / 2).ok


@pytest.mark.parametrize("folder", ["signatures", "keys/maintainer", "keys", "policy-signatures"])
def test_trust_folder_that_is_a_symlink_is_refused(tree, keyring, state, tmp_path, folder):
    # The attacker's folder outside the tree holds good signatures and keys:
    # were the link followed, verification would pass.
    sign(tree, keyring, "carol")
    files = TrustFiles(tree)
    d = files.manifests / folder
    if not d.exists():
        d.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(d), str(elsewhere))
    d.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(QuorumError, match=f"{folder}: is a symbolic link; trust files are read only from real"):
        check(tree, state)
    assert main(["verify", "--tree", str(tree), "--state-dir", str(state), "--trust-on-first-use"]) == 1


# --- what --json says (issue #10 item 8) ------------------------------------------------------

def _json(capsys, argv) -> tuple[int, dict]:
    rc = main(argv + ["--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


@pytest.mark.parametrize("breakage, code", [
    ("no-policy", 1), ("bad-policy", 3), ("linked-signatures", 1), ("non-canonical", 1), ("journal", 1),
    ("no-manifest", 1), ("bad-quorum-yaml", 3)])
def test_json_on_every_error_path_is_an_object(tree, keyring, state, capsys, tmp_path, breakage, code):
    files = TrustFiles(tree)
    if breakage == "no-policy":
        files.policy.unlink()
    elif breakage == "bad-policy":
        files.policy.write_text("format: quorum.policy/1\nversion: x\n")
    elif breakage == "linked-signatures":
        files.signatures.rename(tmp_path / "sigs")
        files.signatures.symlink_to(tmp_path / "sigs")
    elif breakage == "non-canonical":
        files.manifest.write_bytes(files.manifest.read_bytes() + b"\n")
    elif breakage == "journal":
        (files.manifests / ".sign-journal.json").write_text("{}")
    elif breakage == "no-manifest":
        files.manifest.unlink()
    elif breakage == "bad-quorum-yaml":
        (tree / "quorum.yaml").write_text("name: [\n")
    rc, doc = _json(capsys, ["verify", "--tree", str(tree), "--state-dir", str(state), "--trust-on-first-use"])
    assert rc == code and doc["ok"] is False and doc["exit_code"] == code and doc["error"], doc


def test_json_reports_uncounted_signer_time_hash_and_subkey(tmp_path, keyring, state, capsys):
    k = keyring
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [k["erin"]])})
    release(root, k, "erin", key=k["erin"].sub + "!")
    data = TrustFiles(root).manifest.read_bytes()
    forge(root, k, "mallory", data, extra=["--digest-algo", "SHA384"])
    rc, doc = _json(capsys, ["verify", "--tree", str(root), "--state-dir", str(state), "--trust-on-first-use"])
    sigs = {s["file"]: s for s in doc["signatures"]}
    erin, mallory = sigs[k["erin"].fpr + ".asc"], sigs[k["mallory"].fpr + ".asc"]
    assert rc == 0 and erin["counted"] and erin["subkey"] == k["erin"].sub and erin["hash_algo"]
    assert erin["created"].startswith(str(now().year))
    # Not counted, but GnuPG named the key: so does the report.
    assert not mallory["counted"] and mallory["fingerprint"] == k["mallory"].fpr


def test_roles_are_not_ok_under_an_unapproved_policy(rotated, keyring, state, capsys):
    # v2 is installed but nobody approved it: alice's and carol's
    # signatures meet its thresholds, yet no role may say ok.
    rc, doc = _json(capsys, ["verify", "--tree", str(rotated), "--state-dir", str(state), "--trust-on-first-use"])
    assert rc == 1 and doc["ok"] is False
    assert [(r["role"], r["count"] >= r["threshold"], r["ok"], r["policy_trusted"]) for r in doc["roles"]] == [
        ("maintainer", True, False, False), ("reviewer", True, False, False)]
    assert main(["verify", "--tree", str(rotated), "--state-dir", str(state), "--trust-on-first-use"]) == 1
    assert "POLICY NOT APPROVED (2/2)" in capsys.readouterr().out


# --- key files are pinned by the policy (issue #10 item 5) ---------------------------------------

def test_swapped_or_stale_key_file_is_refused(tmp_path, keyring, state):
    from trust_keys import odd_key
    root, odd = _with_odd_anchor(tmp_path, keyring, "revoked")
    files = TrustFiles(root)
    kp = files.key_file("maintainer", odd.key.fpr)
    # The pre-revocation copy: same fingerprint, and the key would count again.
    kp.write_bytes(odd.public_before)
    data = files.manifest.read_bytes()
    plant(root, odd.key.fpr, odd.sign(data))
    with pytest.raises(QuorumError, match="the policy pins .* changed without a policy rotation") as e:
        check(root, state)
    assert str(e.value).startswith(str(kp))
    # The same key with a comment in its armor (other bytes, same key).
    kp.write_bytes(odd.key.public.replace(b"\n\n", b"\nComment: harmless?\n\n", 1))
    with pytest.raises(QuorumError, match="the policy pins"):
        check(root, state)
    kp.write_bytes(odd.key.public)
    assert check(root, state).ok


def test_revocation_added_by_rotation_keeps_old_rotations_checkable(tmp_path, keyring, state):
    # docs/trust.md: a maintainer's revoked key file replaces the old one
    # in a rotation signed by the old threshold; the old file is kept as
    # key-history/<sha256>.asc so the chain from version 1 still checks.
    import hashlib
    from trust_keys import odd_key
    k, odd = keyring, odd_key(keyring, "revoked")
    root = make_tree(tmp_path / "t")
    revoked_key = odd.key
    before = type(revoked_key)(revoked_key.name, revoked_key.uid, revoked_key.fpr, None, odd.public_before)
    write_policy(root, {"maintainer": (1, [k["alice"], before])})
    new = write_policy(root, {"maintainer": (1, [k["alice"], revoked_key])}, version=2,
                       path=tmp_path / "v2.yaml")
    files = TrustFiles(root)
    # write_policy wrote the revoked file over the old one, without keeping
    # the old copy: rotate refuses.
    with pytest.raises(QuorumError, match="key-history/"):
        signlib.rotate_policy(root, new)
    hist = files.key_history / f"{hashlib.sha256(odd.public_before).hexdigest()}.asc"
    hist.parent.mkdir()
    hist.write_bytes(odd.public_before)
    # The pre-revocation key approves the rotation that records its revocation.
    signlib.rotate_policy(root, new)
    sig = odd.sign(files.policy.read_bytes())
    d = files.policy_signatures(2)
    d.mkdir(parents=True)
    (d / f"{revoked_key.fpr}.asc").write_bytes(sig)
    release(root, k)
    rep = check(root, state)
    assert rep.ok and [r.signers for r in rep.rotations] == [[revoked_key.fpr]], rep.to_json()
    assert any("is revoked on" in n for n in rep.notes)


# --- the trust root (task item 2; issue #10 item 4) ---------------------------------------------------

def _policy_digest(root) -> str:
    return "sha256:" + canon.sha256_bytes(TrustFiles(root).policy.read_bytes())


def test_first_use_needs_a_pinned_root_or_the_flag(tree, keyring, state, capsys):
    sign(tree, keyring, "carol")
    digest = _policy_digest(tree)
    with pytest.raises(QuorumError, match=f"trusts no root for this tree: .*'quorum trust pin {digest}'"):
        check(tree, state, trust_on_first_use=False)
    rc, doc = _json(capsys, ["verify", "--tree", str(tree), "--state-dir", str(state)])
    assert rc == 1 and doc["ok"] is False and "--trust-on-first-use" in doc["error"]
    assert main(["trust", "pin", digest, "--state-dir", str(state)]) == 0
    rep = check(tree, state, trust_on_first_use=False)
    assert rep.ok and (rep.root.source, rep.root.version) == ("pinned", 1) and rep.root.digest == digest[7:]
    assert main(["verify", "--tree", str(tree), "--state-dir", str(state)]) == 0
    assert f"root {digest}  (policy v1, remembered)" in capsys.readouterr().out
    assert main(["trust", "pin", "sha256:xyz", "--state-dir", str(state)]) == 3


def test_root_flag_must_name_one_of_the_trees_policies(tree, keyring, state):
    sign(tree, keyring, "carol")
    with pytest.raises(QuorumError, match="the pinned root sha256:0{64} is none of this tree's policy versions"):
        check(tree, state, pinned_root="sha256:" + "0" * 64, trust_on_first_use=False)
    rep = check(tree, state, pinned_root=_policy_digest(tree), trust_on_first_use=False)
    assert rep.ok and rep.root.source == "pinned"


def test_pinning_a_later_version_starts_the_chain_there(rotated, keyring, state, tmp_path):
    # A new user gets the digest of version 2 from the project: the chain
    # from version 1 is not needed (nor checked), later rotations are.
    fresh = tmp_path / "fresh"
    for who in ("alice", "bob"):
        signlib.sign_policy(rotated, user=keyring.home, key=keyring[who].fpr)
    rep = check(rotated, fresh, pinned_root=_policy_digest(rotated), trust_on_first_use=False)
    assert rep.ok and rep.root.version == 2 and rep.rotations == []


def test_renamed_tree_with_a_foreign_policy_is_not_a_first_use(tree, keyring, state, tmp_path):
    # Issue #10 item 4: after accepting tree "demo", the same repository,
    # renamed and with a new version-1 policy of Mallory's only, passed as
    # a first use (the memory was keyed by the name the repository chose).
    sign(tree, keyring, "carol")
    assert check(tree, state).ok
    files = TrustFiles(tree)
    (tree / "quorum.yaml").write_text((tree / "quorum.yaml").read_text().replace("name: demo", "name: demo2"))
    man = manifest_mod.parse(files.manifest.read_bytes())
    man.tree = "demo2"
    files.manifest.write_bytes(man.to_bytes())
    shutil.rmtree(files.keys)
    shutil.rmtree(files.signatures)
    write_policy(tree, {"maintainer": (1, [keyring["mallory"]])})
    forge(tree, keyring, "mallory", files.manifest.read_bytes())
    with pytest.raises(QuorumError, match="trusts no root for this tree"):
        check(tree, state, trust_on_first_use=False)


# --- the log records policy events (task item 5) ------------------------------------------------------

def test_log_records_rotations_and_quorum_log_prints_them(rotated, keyring, state, capsys):
    for who in ("alice", "bob"):
        signlib.sign_policy(rotated, user=keyring.home, key=keyring[who].fpr)
    files = TrustFiles(rotated)
    entries = translog.read(files.log)
    pol_sha = canon.sha256_bytes(files.policy.read_bytes())
    assert [e.get("kind") for e in entries] == [None, None, None, "policy-rotate", "policy-sign", "policy-sign"]
    assert entries[3]["policy_version"] == 2 and entries[3]["policy_sha256"] == pol_sha
    assert [e["signer"] for e in entries[4:]] == [keyring["alice"].fpr, keyring["bob"].fpr]
    assert check(rotated, state).ok          # the chain holds mixed entries
    assert main(["log", "--tree", str(rotated)]) == 0
    out = capsys.readouterr().out
    assert "policy rotated" in out and "policy approved" in out and "manifest signed" in out
    assert "6 entries; chain whole" in out
    rc, doc = _json(capsys, ["log", "--tree", str(rotated)])
    assert rc == 0 and doc["ok"] and len(doc["entries"]) == 6 and doc["head"]["seq"] == 6
    # A policy entry cannot pass for a manifest signature of the same key.
    assert translog.find(entries[4:], signer=keyring["alice"].fpr, signature_sha256=entries[4]["signature_sha256"],
                         manifest_sha256=entries[0]["manifest_sha256"]) is None
    # Removing the rotation from history breaks the chain, and says where.
    _rewrite_log(rotated, entries[:3] + entries[4:])
    rc, doc = _json(capsys, ["log", "--tree", str(rotated)])
    assert rc == 1 and doc["ok"] is False and "line 4" in doc["error"]
    entries[3]["kind"] = "policy-forget"
    _rewrite_log(rotated, entries)
    rc, doc = _json(capsys, ["log", "--tree", str(rotated)])
    assert rc == 1 and "unknown kind 'policy-forget'" in doc["error"]


def test_text_report_escapes_what_the_tree_chose(tree, keyring, state, capsys):
    # A signature file name with an escape sequence in it (a file the
    # attacker planted) must not reach the terminal raw.
    sig = sign(tree, keyring, "carol").signature
    (sig.parent / "\x1b[2Jevil.asc").write_bytes(sig.read_bytes())
    assert main(["verify", "--tree", str(tree), "--state-dir", str(state), "--trust-on-first-use"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2Jevil.asc" in out
