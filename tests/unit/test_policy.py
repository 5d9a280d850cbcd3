"""policy.yaml validation and anchor key files."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trust_keys import gpg, keyring, write_policy  # noqa: E402,F401

from quorum import policy as policy_mod  # noqa: E402
from quorum.errors import QuorumError  # noqa: E402
from quorum.gpg import Home  # noqa: E402

A, B = "A" * 40, "B" * 40
DA, DB = "a" * 64, "b" * 64


def load_text(tmp_path, text):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return policy_mod.load(p)


GOOD = f"""format: quorum.policy/2
version: 1
roles:
  maintainer:
    threshold: 2
    keys: [{{fingerprint: {A}, sha256: {DA}}}, {{fingerprint: {B}, sha256: {DB}}}]
  ci:
    threshold: 1
    keys: [{{fingerprint: {A}, sha256: {DA}}}]
"""


def test_good_policy(tmp_path):
    pol = load_text(tmp_path, GOOD)
    assert pol.version == 1 and pol.rotation_role == "maintainer"
    assert pol.roles["maintainer"].threshold == 2 and pol.roles["ci"].keys == (A,)
    assert pol.roles_of(A) == ["maintainer", "ci"] and pol.anchors() == {A, B}
    assert pol.digest_of(B) == DB
    assert pol.data == GOOD.encode()


@pytest.mark.parametrize("text, where", [
    (GOOD.replace("version: 1", "version: one"), "version: expected a positive integer"),
    (GOOD.replace("version: 1", "version: 0"), "version: must be a positive integer"),
    (GOOD.replace("format: quorum.policy/2", "format: other/1"), "format: unknown policy format"),
    (GOOD.replace("format: quorum.policy/2", "format: quorum.policy/1"), "format: quorum.policy/1 does not pin"),
    (GOOD.replace(f"sha256: {DB}", "sha256: x"), "roles.maintainer.keys[1].sha256: "),
    (GOOD.replace(f", sha256: {DB}", ""), "roles.maintainer.keys[1].sha256: required field is missing"),
    (GOOD.replace(f"[{{fingerprint: {A}, sha256: {DA}}}]", f"[{{fingerprint: {A}, sha256: {DB}}}]"),
     "roles.ci.keys[0].sha256: differs from the sha256 roles.maintainer pins"),
    (GOOD.replace(f"fingerprint: {B}, ", f"fingerprint: {B}, fpr: x, "), "roles.maintainer.keys[1].fpr: unknown"),
    (GOOD + "extra: 1\n", "extra: unknown field"),
    (GOOD.replace("    threshold: 1\n", "    threshold: 1\n    treshold: 1\n"), "roles.ci.treshold: unknown field"),
    (GOOD.replace("threshold: 2", "threshold: 3"), "roles.maintainer.threshold: 3 can never be met"),
    (GOOD.replace("threshold: 2", "threshold: 0"), "roles.maintainer.threshold: must be at least 1"),
    (GOOD.replace("threshold: 2", "threshold: true"), "roles.maintainer.threshold: expected a positive integer"),
    (GOOD.replace(f"{{fingerprint: {A}, sha256: {DA}}}, ", f"{{fingerprint: {A.lower()}, sha256: {DA}}}, "),
     "roles.maintainer.keys[0].fingerprint: "),
    (GOOD.replace(f"fingerprint: {B}, sha256: {DB}", f"fingerprint: {A}, sha256: {DA}"),
     "roles.maintainer.keys: lists a key twice"),
    (GOOD.replace("  ci:", "  CI:"), "roles.CI: role name must match"),
    (GOOD + "rotation_role: owners\n", "rotation_role: names no role"),
    (GOOD + "roles: {}\n", "duplicate key"),
    ("format: quorum.policy/2\nversion: 1\nroles: {}\n", "roles: at least one role"),
])
def test_bad_policy_names_file_and_field(tmp_path, text, where):
    with pytest.raises(QuorumError) as e:
        load_text(tmp_path, text)
    assert str(e.value).startswith(str(tmp_path / "policy.yaml")) and where in str(e.value)


def test_missing_policy(tmp_path):
    with pytest.raises(QuorumError, match="no trust policy"):
        policy_mod.load(tmp_path / "policy.yaml")


def check(tmp_path, data: bytes, fpr: str):
    p = tmp_path / f"{fpr}.asc"
    p.write_bytes(data)
    with Home.temporary() as h:
        return policy_mod.check_key_file(h, p, fpr)


def test_key_file_rules(tmp_path, keyring):
    k = keyring
    assert check(tmp_path, k["alice"].public, k["alice"].fpr).fingerprint == k["alice"].fpr
    with pytest.raises(QuorumError, match="holds 2 primary keys"):
        check(tmp_path, k["alice"].public + k["mallory"].public, k["alice"].fpr)
    with pytest.raises(QuorumError, match="but the file is named for"):
        check(tmp_path, k["mallory"].public, k["alice"].fpr)
    with pytest.raises(QuorumError, match="that is a subkey"):
        check(tmp_path, k["erin"].public, k["erin"].sub)
    with pytest.raises(QuorumError, match="no OpenPGP public key"):
        check(tmp_path, b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n-----END PGP PUBLIC KEY BLOCK-----\n",
              k["alice"].fpr)
    secret = gpg(k.home.path, "--armor", "--export-secret-keys", k["alice"].fpr)
    with pytest.raises(QuorumError, match="SECRET key"):
        check(tmp_path, secret, k["alice"].fpr)
    with pytest.raises(QuorumError, match="missing"):
        with Home.temporary() as h:
            policy_mod.check_key_file(h, tmp_path / "nope.asc", k["alice"].fpr)


def test_unlisted_key_files_are_reported_not_trusted(tmp_path, keyring):
    root = tmp_path
    write_policy(root, {"maintainer": (1, [keyring["alice"]])})
    stray = root / "manifests" / "keys" / "maintainer" / f"{keyring['mallory'].fpr}.asc"
    stray.write_bytes(keyring["mallory"].public)
    files = policy_mod.TrustFiles(root)
    pol = policy_mod.load(files.policy)
    assert policy_mod.unlisted_key_files(files, pol) == [stray]
    with Home.temporary() as h:
        assert set(policy_mod.import_anchors(h, files, pol)) == {keyring["alice"].fpr}
        assert [k.fingerprint for k in h.list_keys()] == [keyring["alice"].fpr]
