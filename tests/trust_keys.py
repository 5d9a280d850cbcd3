"""Throwaway OpenPGP keys and tiny trees for the trust tests.

Import from a test module after putting tests/ on sys.path:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trust_keys import keyring, tree, ...  # noqa

Keys are generated once per test process (ed25519, no passphrase) in a
private GnuPG home under /tmp; nothing here ever reads or writes the user's
keyring.  Agents started for these homes are stopped at exit, by their
home's socket.
"""
from __future__ import annotations

import atexit
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import require_tool
from quorum import manifest as manifest_mod, oci
from quorum.gpg import Home, kill_agent
from quorum.store import Record, Store

PEOPLE = {
    "alice": "Alice Maintainer <alice@example.org>",
    "bob": "Bob Maintainer <bob@example.org>",
    "carol": "Carol Reviewer <carol@example.org>",
    "dave": "Dave Reviewer <dave@example.org>",
    "ci": "CI Builder <ci@example.org>",
    "mallory": "Mallory Outsider <mallory@example.org>",
    "erin": "Erin Subkey <erin@example.org>",      # also has a signing subkey
}


@dataclass(frozen=True)
class Key:
    name: str
    uid: str
    fpr: str                  # primary fingerprint
    sub: str | None = None    # signing subkey fingerprint, when there is one
    public: bytes = b""


@dataclass
class Keyring:
    home: Home                # the signers' home (stands in for "the user's")
    keys: dict[str, Key]

    def __getitem__(self, name: str) -> Key:
        return self.keys[name]


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    p = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args], input=data,
                       capture_output=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout


def _fingerprints(home: Path, uid: str) -> list[str]:
    out = gpg(home, "--with-colons", "--list-keys", uid).decode()
    return [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr:")]


_CACHE: dict[str, Keyring] = {}


def new_home() -> Path:
    d = Path(tempfile.mkdtemp(prefix="qg-t", dir="/tmp"))
    os.chmod(d, 0o700)

    def _cleanup(d=d):
        kill_agent(d)
        shutil.rmtree(d, ignore_errors=True)
    atexit.register(_cleanup)
    return d


def make_keyring() -> Keyring:
    if "k" in _CACHE:
        return _CACHE["k"]
    home = new_home()
    keys = {}
    for name, uid in PEOPLE.items():
        gpg(home, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-gen-key", uid, "ed25519", "sign", "0")
        fpr = _fingerprints(home, uid)[0]
        sub = None
        if name == "erin":
            gpg(home, "--passphrase", "", "--pinentry-mode", "loopback", "--quick-add-key", fpr, "ed25519", "sign", "0")
            sub = _fingerprints(home, uid)[1]
        keys[name] = Key(name, uid, fpr, sub, gpg(home, "--armor", "--export", fpr))
    _CACHE["k"] = Keyring(Home(home), keys)
    return _CACHE["k"]


@pytest.fixture(scope="session")
def keyring() -> Keyring:
    require_tool("gpg")
    require_tool("gpg-agent")
    return make_keyring()


# --- tiny trees ---------------------------------------------------------------------

TREE_NAME = "demo"
NAMESPACE = "quorum-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_artifact(root: Path, name: str, version: str = "1.0", content: bytes = b"hello\n",
                 kind: str = "package") -> manifest_mod.Entry:
    """Publish a one-file OCI layout as out/<name>/ (no engine needed)."""
    store = Store(root / "out")
    src = io.BytesIO()
    with tarfile.open(fileobj=src, mode="w") as tf:
        ti = tarfile.TarInfo(f"usr/share/{name}/README")
        ti.size = len(content)
        tf.addfile(ti, io.BytesIO(content))
    src.seek(0)
    with store.staging(name) as st:
        layer_path = st / "layer.tar"
        with open(layer_path, "wb") as f:
            layer = oci.normalize_layer(src, f, epoch=1)
        img = oci.write_layout(st / "layout", layer_path, layer, epoch=1, name=name, version=version, namespace=NAMESPACE)
        ih = hashlib.sha256(name.encode() + b"\0" + version.encode() + b"\0" + content).hexdigest()
        store.publish(st / "layout", Record(name=name, kind=kind, version=version, digest=img.digest,
                                            config_digest=img.config_digest, layer_digest=layer.digest,
                                            input_hash=ih, size=img.size))
    return manifest_mod.Entry(kind=kind, version=version, digest=img.digest, input_hash=ih, size=img.size)


def make_tree(root: Path, packages: dict[str, bytes] | None = None) -> Path:
    """quorum.yaml, artifacts in out/ and an (unreleased) manifest."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "quorum.yaml").write_text(f"name: {TREE_NAME}\nnamespace: {NAMESPACE}\n")
    build(root, packages or {"hello": b"hello\n", "zlib": b"zlib\n"})
    return root


def build(root: Path, packages: dict[str, bytes]) -> manifest_mod.Manifest:
    """What a build would do: publish artifacts, update the manifest."""
    entries = {n: add_artifact(root, n, content=c) for n, c in packages.items()}
    path = root / "manifests" / "manifest.json"
    man = manifest_mod.updated(manifest_mod.load(path), TREE_NAME, entries)
    manifest_mod.write(path, man)
    return man


def write_policy(root: Path, roles: dict[str, tuple[int, list[Key]]], version: int = 1,
                 rotation_role: str = "maintainer", path: Path | None = None) -> Path:
    """policy.yaml naming the roles, and each key's file under keys/<role>/."""
    lines = ["format: quorum.policy/2", f"version: {version}", f"rotation_role: {rotation_role}", "roles:"]
    for role, (threshold, keys) in roles.items():
        lines += [f"  {role}:", f"    threshold: {threshold}", "    keys:"]
        for k in keys:
            lines += [f"      - fingerprint: {k.fpr}   # {k.uid}",
                      f"        sha256: {hashlib.sha256(k.public).hexdigest()}"]
        for k in keys:
            kp = root / "manifests" / "keys" / role / f"{k.fpr}.asc"
            kp.parent.mkdir(parents=True, exist_ok=True)
            kp.write_bytes(k.public)
    path = path or root / "manifests" / "policy.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def later(days: int) -> datetime:
    return now() + timedelta(days=days)


# --- keys in odd states (issue #10) -------------------------------------------------

PAST = "20200101T000000"          # --faked-system-time: when the "expired" key was made
PAST_SIGNING = "20200101T120000"  # ...and when it signed, while still valid


@dataclass(frozen=True)
class OddKey:
    key: Key
    public_before: bytes          # the key file as it was before a revocation (else == key.public)
    home: Path                    # a home that can still sign with it

    def sign(self, data: bytes, *extra: str) -> bytes:
        return gpg(self.home, "--armor", "--detach-sign", "--local-user", self.key.fpr, *extra, data=data)


_ODD: dict[str, OddKey] = {}


def odd_key(kr: Keyring, kind: str) -> OddKey:
    """A key in the signers' home that an anchor should not be: "revoked"
    (revoked after it was made; ``public_before`` is the old copy),
    "expired" (made in 2020, valid one day), "rsa1024", "dsa1024",
    "weaksub" (an Ed25519 primary with a 1024-bit RSA signing subkey)."""
    if kind in _ODD:
        return _ODD[kind]
    # The revoked key lives in a home of its own, where it is not revoked,
    # so the tests can show what its old (or new) signatures are worth.
    home = new_home() if kind == "revoked" else kr.home.path
    uid = f"Odd {kind} <{kind}@example.org>"
    loop = ["--passphrase", "", "--pinentry-mode", "loopback"]
    if kind == "expired":
        gpg(home, *loop, "--faked-system-time", PAST, "--quick-gen-key", uid, "ed25519", "sign", "1d")
    else:
        algo = {"revoked": "ed25519", "rsa1024": "rsa1024", "dsa1024": "dsa1024", "weaksub": "ed25519"}[kind]
        gpg(home, *loop, "--quick-gen-key", uid, algo, "sign", "0")
    fpr = _fingerprints(home, uid)[0]
    if kind == "weaksub":
        gpg(home, *loop, "--quick-add-key", fpr, "rsa1024", "sign", "0")
    before = gpg(home, "--armor", "--export", fpr)
    if kind == "revoked":
        # GnuPG stores a revocation certificate for every key it makes; its
        # armor line is escaped with a leading ':' against accidental import.
        cert = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
        elsewhere = new_home()
        gpg(elsewhere, "--import", data=before)
        gpg(elsewhere, "--import", data=cert.encode())
        public = gpg(elsewhere, "--armor", "--export", fpr)
    else:
        public = before
    _ODD[kind] = OddKey(Key(kind, uid, fpr, None, public), before, home)
    return _ODD[kind]
