"""quorum sign: you sign only what you reproduced; release; replace; log;
image signatures; key selection; passphrase-protected keys via the agent."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trust_keys import (COMMIT, NAMESPACE, add_artifact, gpg, keyring, later, make_tree,  # noqa: E402,F401
                        new_home, write_policy)

from quorum import manifest as manifest_mod, simplesign, translog  # noqa: E402
from quorum import sign as signlib, verify as verifylib  # noqa: E402
from quorum.cli import main  # noqa: E402
from quorum.errors import QuorumError  # noqa: E402
from quorum.gpg import GpgError, Home, kill_agent  # noqa: E402
from quorum.policy import TrustFiles  # noqa: E402


@pytest.fixture
def tree(tmp_path, keyring):
    root = make_tree(tmp_path / "tree")
    write_policy(root, {"maintainer": (1, [keyring["alice"], keyring["bob"]]),
                        "reviewer": (1, [keyring["carol"]])})
    return root


def do_sign(root, kr, who, **kw):
    return signlib.sign(root, user=kr.home, key=kw.pop("key", kr[who].fpr), **kw)


def released(root, kr, who="alice", **kw):
    return do_sign(root, kr, who, release=True, commit=COMMIT, **kw)

def release_killed_at_write(tree, keyring, monkeypatch, nth: int) -> None:
    """bob releases a new manifest, and the process dies (as if killed) at
    sign's nth atomic write."""
    real = signlib.canon.atomic_write
    writes = []

    def dying(path, data, mode=0o644):
        writes.append(path)
        if len(writes) == nth:
            raise KeyboardInterrupt("killed")
        return real(path, data, mode)

    monkeypatch.setattr(signlib.canon, "atomic_write", dying)
    with pytest.raises(KeyboardInterrupt):
        released(tree, keyring, "bob", expires_in=signlib.parse_duration("8w"))
    monkeypatch.setattr(signlib.canon, "atomic_write", real)


# --- you sign only what you reproduced --------------------------------------------------------

def test_refuses_when_local_artifacts_do_not_match_naming_them(tree, keyring):
    files = TrustFiles(tree)
    (tree / "out" / ".quorum" / "records" / "zlib.json").unlink()          # not built here
    layer = next((tree / "out" / "hello" / "blobs" / "sha256").iterdir())
    big = max((tree / "out" / "hello" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    big.write_bytes(big.read_bytes()[:-1] + b"X")                           # damaged
    assert layer.exists()
    before = files.manifest.read_bytes()
    with pytest.raises(QuorumError) as e:
        released(tree, keyring)
    msg = str(e.value)
    assert "refusing to sign" in msg and "hello (layout damaged" in msg and "zlib (not built here)" in msg
    assert files.manifest.read_bytes() == before and not files.signatures.exists() and not files.log.exists()


def test_refuses_a_different_build(tree, keyring):
    add_artifact(tree, "zlib", content=b"something else\n")      # out/ now holds another zlib
    with pytest.raises(QuorumError, match=r"zlib \(built sha256:"):
        released(tree, keyring)


def test_plain_sign_needs_a_release_and_refuses_expired(tree, keyring):
    with pytest.raises(QuorumError, match="not released yet"):
        do_sign(tree, keyring, "carol")
    released(tree, keyring)
    with pytest.raises(QuorumError, match="expired at"):
        do_sign(tree, keyring, "carol", now=later(91))


# --- release ---------------------------------------------------------------------------------------

def test_release_stamps_and_rerelease_bumps_serial_and_drops_stale(tree, keyring):
    files = TrustFiles(tree)
    r = released(tree, keyring, expires_in=signlib.parse_duration("30d"))
    man = manifest_mod.parse(files.manifest.read_bytes())
    assert man.commit == COMMIT and man.serial == 1 and r.released
    exp = verifylib.parse_expires(man.expires)
    assert abs((exp - later(30)).total_seconds()) < 120
    assert files.manifest.read_bytes() == man.to_bytes()       # canonical
    do_sign(tree, keyring, "carol")
    # A second release (new expiry) is new signed bytes: new serial, and the
    # signatures over the old bytes go.
    r2 = released(tree, keyring, "bob", expires_in=signlib.parse_duration("8w"))
    man2 = manifest_mod.parse(files.manifest.read_bytes())
    assert man2.serial == 2 and sorted(p.name for p in r2.removed) == sorted(
        [keyring["alice"].fpr + ".asc", keyring["carol"].fpr + ".asc"])
    assert [p.name for p in files.signatures.iterdir()] == [keyring["bob"].fpr + ".asc"]


def test_failed_signing_leaves_the_tree_as_it_was(tree, keyring):
    files = TrustFiles(tree)
    released(tree, keyring)
    do_sign(tree, keyring, "carol")
    before = {p: p.read_bytes() for p in files.manifests.rglob("*") if p.is_file()}
    with pytest.raises(GpgError, match="signing with key"):
        do_sign(tree, keyring, "alice", key="F" * 40, release=True, commit=COMMIT)
    assert {p: p.read_bytes() for p in files.manifests.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("kill_at", [1, 2, 3])
def test_a_release_killed_midway_is_finished_by_the_next_sign(tree, keyring, monkeypatch, kill_at):
    """#9: a kill between dropping the old signatures and writing the new
    manifest left the manifest with fewer signatures.  The journal holds the
    new state; verify names it, the next sign finishes it."""
    files = TrustFiles(tree)
    released(tree, keyring)
    do_sign(tree, keyring, "carol")
    # The 1st write is the journal itself; then manifest, signature, log.
    release_killed_at_write(tree, keyring, monkeypatch, 1 + kill_at)
    assert signlib.Journal.path(files).exists()
    with pytest.raises(QuorumError, match="interrupted 'quorum sign'"):
        verifylib.verify(tree, state_dir=tree / "state", trust_on_first_use=True)
    assert signlib.finish_interrupted(tree)
    assert not signlib.Journal.path(files).exists()
    man = manifest_mod.parse(files.manifest.read_bytes())
    assert man.serial == 2
    assert [p.name for p in files.signatures.iterdir()] == [keyring["bob"].fpr + ".asc"]
    entries = translog.read(files.log)
    assert entries[-1]["signer"] == keyring["bob"].fpr and entries[-1]["serial"] == 2 and len(entries) == 3


def test_release_takes_the_commit_of_a_clean_checkout(tree, keyring, monkeypatch):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tree / ".gitignore").write_text("/out/\n")
    git = lambda *a: subprocess.run(["git", "-C", str(tree), *a], check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "tree")
    (tree / "packages").mkdir()
    (tree / "packages" / "new.txt").write_text("uncommitted\n")
    with pytest.raises(QuorumError, match="uncommitted changes.*packages/new.txt"):
        do_sign(tree, keyring, "alice", release=True)
    (tree / "packages" / "new.txt").unlink()
    do_sign(tree, keyring, "alice", release=True)
    assert manifest_mod.parse(TrustFiles(tree).manifest.read_bytes()).commit == git("rev-parse", "HEAD").strip()


# --- replace, never duplicate; the log ------------------------------------------------------------------

def test_signing_again_replaces_and_logs_each_signing(tree, keyring, tmp_path):
    files = TrustFiles(tree)
    released(tree, keyring)
    first = files.signature(keyring["alice"].fpr).read_bytes()
    do_sign(tree, keyring, "carol")
    r = do_sign(tree, keyring, "alice", key=keyring["alice"].fpr)
    assert sorted(p.name for p in files.signatures.iterdir()) == sorted(
        [keyring["alice"].fpr + ".asc", keyring["carol"].fpr + ".asc"])
    entries = translog.read(files.log)
    assert [e["signer"] for e in entries] == [keyring["alice"].fpr, keyring["carol"].fpr, keyring["alice"].fpr]
    assert translog.replay(entries).seq == 3 and r.log_entry == entries[-1]
    assert entries[-1]["manifest_sha256"] == entries[0]["manifest_sha256"]
    assert first  # the earlier signature stays in the log's history, not on disk
    assert verifylib.verify(tree, state_dir=tmp_path / "s", trust_on_first_use=True).ok


def test_refuses_to_extend_a_broken_log(tree, keyring):
    released(tree, keyring)
    log = TrustFiles(tree).log
    log.write_bytes(log.read_bytes().replace(b'"seq":1', b'"seq":7'))
    with pytest.raises(QuorumError, match="seq is 7"):
        do_sign(tree, keyring, "carol")
    assert not TrustFiles(tree).signature(keyring["carol"].fpr).exists()


# --- image signatures ------------------------------------------------------------------------------------

def test_image_signatures_in_lookaside_layout(tree, keyring):
    files = TrustFiles(tree)
    add_artifact(tree, "seed1", kind="seed")     # in out/ but not in the manifest: irrelevant
    released(tree, keyring)
    do_sign(tree, keyring, "carol")
    do_sign(tree, keyring, "alice")             # again: replaces signature-1, adds nothing
    man = manifest_mod.parse(files.manifest.read_bytes())
    for name, e in man.entries.items():
        d = files.sigstore / NAMESPACE / f"{name}@sha256={e.digest.split(':')[1]}"
        sigs = simplesign.signature_files(d)
        assert [p.name for p in sigs] == ["signature-1", "signature-2"]
        with Home.temporary() as h:
            h.import_keys(keyring["alice"].public + keyring["carol"].public)
            signers = []
            for p in sigs:
                v, payload = h.verify_attached(p.read_bytes())
                assert v.problem() is None
                assert simplesign.parse_payload(payload) == (f"{NAMESPACE}/{name}:1.0", e.digest)
                signers.append(v.signatures[0].primary)
        assert signers == [keyring["alice"].fpr, keyring["carol"].fpr]


def test_seeds_get_no_image_signature(tmp_path, keyring):
    root = make_tree(tmp_path / "t", {"hello": b"h\n"})
    write_policy(root, {"maintainer": (1, [keyring["alice"]])})
    path = TrustFiles(root).manifest
    man = manifest_mod.parse(path.read_bytes())
    man.entries["base"] = add_artifact(root, "base", version="3 debs", kind="seed")
    manifest_mod.write(path, manifest_mod.Manifest(tree=man.tree, entries=dict(sorted(man.entries.items()))))
    r = released(root, keyring)
    assert [p.parent.name.split("@")[0] for p in r.images] == ["hello"]


# --- which key --------------------------------------------------------------------------------------------

def test_signing_key_from_env_then_git_config(tree, keyring, monkeypatch):
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("QUORUM_SIGNING_KEY", raising=False)
    assert signlib.signing_key(tree) is None
    subprocess.run(["git", "init", "-q", str(tree)], check=True)
    subprocess.run(["git", "-C", str(tree), "config", "user.signingkey", keyring["bob"].fpr], check=True)
    assert signlib.signing_key(tree) == keyring["bob"].fpr
    monkeypatch.setenv("QUORUM_SIGNING_KEY", keyring["carol"].fpr)
    assert signlib.signing_key(tree) == keyring["carol"].fpr


def test_cli_sign_uses_gnupghome_and_env_key(tree, keyring, monkeypatch, capsys):
    monkeypatch.setenv("GNUPGHOME", str(keyring.home.path))
    monkeypatch.setenv("QUORUM_SIGNING_KEY", keyring["alice"].fpr)
    assert main(["sign", "--tree", str(tree), "--release", "--commit", COMMIT, "--expires-in", "12h"]) == 0
    out = capsys.readouterr().out
    assert "released serial 1" in out and keyring["alice"].fpr in out
    monkeypatch.setenv("QUORUM_SIGNING_KEY", keyring["carol"].fpr)
    assert main(["sign", "--tree", str(tree), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["signer"] == keyring["carol"].fpr and len(doc["images"]) == 2 and doc["log_seq"] == 2
    assert main(["sign", "--tree", str(tree), "--expires-in", "soon", "--release"]) == 1
    assert "--expires-in" in capsys.readouterr().err


# --- passphrase-protected keys through gpg-agent -----------------------------------------------------------

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def locked_key():
    """A home with one passphrase-protected key and an agent that may not
    ask anyone (its pinentry always fails) but accepts preset passphrases."""
    home = new_home()
    (home / "gpg-agent.conf").write_text("allow-preset-passphrase\nallow-loopback-pinentry\n"
                                         "pinentry-program /bin/false\n")
    gpg(home, "--pinentry-mode", "loopback", "--passphrase", PASSPHRASE, "--quick-gen-key",
        "Locked <locked@example.org>", "ed25519", "sign", "0")
    out = gpg(home, "--with-colons", "--with-keygrip", "--list-secret-keys").decode()
    fpr = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:"))
    grip = next(ln.split(":")[9] for ln in out.splitlines() if ln.startswith("grp:"))
    kill_agent(home)           # forget the passphrase cached while generating
    yield home, fpr, grip
    kill_agent(home)


def test_passphrase_key_through_agent_preset(locked_key, tmp_path):
    home, fpr, grip = locked_key
    user = Home(home)
    with pytest.raises(GpgError, match="signing with key"):
        user.sign(b"data\n", fpr)          # nothing cached, no pinentry: refused, not hung
    subprocess.run(["gpg-connect-agent", "--homedir", str(home),
                    f"PRESET_PASSPHRASE {grip} -1 {PASSPHRASE.encode().hex().upper()}", "/bye"],
                   check=True, capture_output=True, timeout=30)
    sig, signer = user.sign(b"data\n", fpr)
    assert signer == fpr and sig.startswith(b"-----BEGIN PGP SIGNATURE-----")


def test_passphrase_key_with_loopback(locked_key):
    home, fpr, _ = locked_key
    sig, signer = Home(home).sign(b"data\n", fpr, passphrase=PASSPHRASE)
    assert signer == fpr and sig


# --- image signatures are made with the primary key (issue #10 item 7) ---------------------------------

def _image_signers(root, kr, who) -> list[tuple[str, str]]:
    """(signing key, primary) of every image signature, checked in a home
    holding only ``who``'s public key."""
    out = []
    with Home.temporary() as h:
        h.import_keys(kr[who].public)
        for d in sorted(TrustFiles(root).sigstore.rglob("*@sha256=*")):
            for p in simplesign.signature_files(d):
                v, _ = h.verify_attached(p.read_bytes())
                assert v.problem() is None
                out.append((v.signatures[0].fingerprint, v.signatures[0].primary))
    return out


def test_image_signatures_use_the_primary_even_when_a_subkey_signs(tmp_path, keyring):
    root = make_tree(tmp_path / "t")
    k = keyring
    write_policy(root, {"maintainer": (1, [k["erin"]])})
    r = released(root, k, "erin", key=k["erin"].sub + "!")
    # The manifest signature is the subkey's (as asked); container tools
    # need the primary's, so the images get that.
    assert r.fingerprint == k["erin"].fpr and not r.warnings
    assert _image_signers(root, k, "erin") == [(k["erin"].fpr, k["erin"].fpr)] * 2


def test_offline_primary_falls_back_to_the_subkey_with_a_warning(tmp_path, keyring):
    from trust_keys import new_home
    k = keyring
    home = new_home()
    # A home with the signing subkey's secret only (the primary is offline).
    gpg(home, "--import", data=gpg(k.home.path, "--export-secret-subkeys", k["erin"].fpr))
    root = make_tree(tmp_path / "t")
    write_policy(root, {"maintainer": (1, [k["erin"]])})
    r = signlib.sign(root, user=Home(home), key=k["erin"].fpr, release=True, commit=COMMIT)
    assert any("made with subkey" in w and "signedBy" in w for w in r.warnings), r.warnings
    assert _image_signers(root, k, "erin") == [(k["erin"].sub, k["erin"].fpr)] * 2


def test_the_next_sign_finishes_an_interrupted_one_before_its_own(tree, keyring, monkeypatch):
    """The same kill as above, then an ordinary sign by another reviewer:
    it applies the journal first, so both signatures are over the new bytes."""
    files = TrustFiles(tree)
    released(tree, keyring)
    release_killed_at_write(tree, keyring, monkeypatch, 2)   # the journal is written, the manifest is not
    do_sign(tree, keyring, "carol")
    assert not signlib.Journal.path(files).exists()
    assert manifest_mod.parse(files.manifest.read_bytes()).serial == 2
    assert sorted(p.name for p in files.signatures.iterdir()) == sorted(
        [keyring["bob"].fpr + ".asc", keyring["carol"].fpr + ".asc"])
