"""quorum's per-image signatures, checked by real container tools.

A local registry (Debian's docker-registry, i.e. distribution's registry,
on 127.0.0.1) receives an artifact with ``skopeo copy --preserve-digests``;
pulling it back with a policy.json ``signedBy`` requirement and a
registries.d ``lookaside`` pointing at file://<tree>/manifests/sigstore must
succeed with the signer's key and fail with anyone else's.  (Lookaside
signatures are consulted only for the docker:// transport, hence the
registry.)  ``skopeo standalone-verify`` checks a signature file directly.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import require_tool, stop_process  # noqa: E402
from trust_keys import COMMIT, NAMESPACE, keyring, make_tree, new_home, write_policy  # noqa: E402,F401

from quorum import manifest as manifest_mod, simplesign  # noqa: E402
from quorum import sign as signlib  # noqa: E402
from quorum.policy import TrustFiles  # noqa: E402



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    registry_exe = require_tool("docker-registry")
    d = tmp_path_factory.mktemp("registry")
    port = _free_port()
    (d / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {d / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log = open(d / "registry.log", "wb")
    proc = subprocess.Popen([registry_exe, "serve", str(d / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("docker-registry did not start: " + (d / "registry.log").read_text())
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=10)
        log.close()


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keyring):
    """A tree with one package, released and signed by Alice."""
    root = make_tree(tmp_path_factory.mktemp("tree") / "t", {"hello": b"hello from quorum\n"})
    write_policy(root, {"maintainer": (1, [keyring["alice"]])})
    report = signlib.sign(root, user=keyring.home, key=keyring["alice"].fpr, release=True, commit=COMMIT)
    man = manifest_mod.parse(TrustFiles(root).manifest.read_bytes())
    return root, man.entries["hello"], report


def skopeo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_standalone_verify_accepts_the_signers_signature_only(signed, keyring, tmp_path):
    root, entry, report = signed
    sig = next(p for p in report.images if p.parent.name.startswith("hello@"))
    manifest_blob = root / "out" / "hello" / "blobs" / "sha256" / entry.digest.split(":")[1]
    home = new_home()
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import"], input=keyring["alice"].public + keyring["mallory"].public,
                   check=True, capture_output=True)
    ref = f"{NAMESPACE}/hello:1.0"
    ok = skopeo("standalone-verify", str(manifest_blob), ref, keyring["alice"].fpr, str(sig), env={"GNUPGHOME": str(home)})
    assert ok.returncode == 0, ok.stderr
    assert entry.digest in ok.stdout
    wrong_key = skopeo("standalone-verify", str(manifest_blob), ref, keyring["mallory"].fpr, str(sig),
                       env={"GNUPGHOME": str(home)})
    assert wrong_key.returncode != 0
    wrong_ref = skopeo("standalone-verify", str(manifest_blob), f"{NAMESPACE}/other:1.0", keyring["alice"].fpr,
                       str(sig), env={"GNUPGHOME": str(home)})
    assert wrong_ref.returncode != 0


def _policy(tmp_path: Path, registry: str, key: bytes, name: str, repo: str = "hello") -> Path:
    keyfile = tmp_path / f"{name}.asc"
    keyfile.write_bytes(key)
    scope = f"{registry}/{NAMESPACE}"
    doc = {"default": [{"type": "reject"}],
           "transports": {"docker": {scope: [{
               "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyfile),
               # The signature names quorum-test/hello:1.0 (no registry
               # host); this registry serves the image under another name,
               # so the policy says which repository the signature must name.
               "signedIdentity": {"type": "exactRepository",
                                  "dockerRepository": f"{NAMESPACE}/{repo}"}}]}}}
    p = tmp_path / f"policy-{name}-{repo}.json"
    p.write_text(json.dumps(doc))
    return p


def test_pull_with_signedby_policy_and_lookaside(signed, registry, keyring, tmp_path):
    root, entry, _ = signed
    image = f"docker://{registry}/{NAMESPACE}/hello:1.0"
    push = skopeo("--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
                  f"oci:{root / 'out' / 'hello'}:{NAMESPACE}/hello:1.0", image)
    assert push.returncode == 0, push.stderr
    raw = skopeo("inspect", "--raw", "--tls-verify=false", image)
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == entry.digest

    regd = tmp_path / "registries.d"
    regd.mkdir()
    (regd / "quorum.yaml").write_text(
        f"docker:\n  {registry}:\n    lookaside: file://{TrustFiles(root).sigstore}\n")
    assert simplesign.lookaside_dir(TrustFiles(root).sigstore, NAMESPACE, "hello", entry.digest).is_dir()

    good = _policy(tmp_path, registry, keyring["alice"].public, "alice")
    pulled = skopeo("--policy", str(good), "--registries.d", str(regd), "copy", "--src-tls-verify=false",
                    image, f"dir:{tmp_path / 'pulled'}")
    assert pulled.returncode == 0, pulled.stderr
    # dir: keeps the signature it checked: the very file quorum wrote.
    sig = simplesign.lookaside_dir(TrustFiles(root).sigstore, NAMESPACE, "hello", entry.digest) / "signature-1"
    assert (tmp_path / "pulled" / "signature-1").read_bytes() == sig.read_bytes()

    wrong = _policy(tmp_path, registry, keyring["mallory"].public, "mallory")
    refused = skopeo("--policy", str(wrong), "--registries.d", str(regd), "copy", "--src-tls-verify=false",
                     image, f"dir:{tmp_path / 'refused'}")
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr

    # The right key, but the signature names another image than required.
    other = _policy(tmp_path, registry, keyring["alice"].public, "alice", repo="other")
    misnamed = skopeo("--policy", str(other), "--registries.d", str(regd), "copy", "--src-tls-verify=false",
                      image, f"dir:{tmp_path / 'misnamed'}")
    assert misnamed.returncode != 0 and "signature" in misnamed.stderr.lower(), misnamed.stderr

    # Without the lookaside configuration there is no signature at all.
    bare = tmp_path / "empty.d"
    bare.mkdir()
    unsigned = skopeo("--policy", str(good), "--registries.d", str(bare), "copy", "--src-tls-verify=false",
                      image, f"dir:{tmp_path / 'unsigned'}")
    assert unsigned.returncode != 0 and "signature" in unsigned.stderr.lower(), unsigned.stderr



def test_subkey_signer_and_a_namespace_without_a_host(tmp_path_factory, registry, keyring, tmp_path):
    # Issue #10 item 7: Erin signs with her signing subkey; the policy
    # names her published key file.  quorum makes image signatures with the
    # primary key, which container tools accept.  The namespace has no
    # registry host, so the signed identity is read as docker.io/<namespace>:
    # that is the signedPrefix a mirror's policy needs (docs/spec/signatures.md).
    root = make_tree(tmp_path_factory.mktemp("erin") / "t", {"hello": b"hello from erin\n"})
    write_policy(root, {"maintainer": (1, [keyring["erin"]])})
    signlib.sign(root, user=keyring.home, key=keyring["erin"].sub + "!", release=True, commit=COMMIT)
    entry = manifest_mod.parse(TrustFiles(root).manifest.read_bytes()).entries["hello"]
    push = skopeo("--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
                  f"oci:{root / 'out' / 'hello'}:{NAMESPACE}/hello:1.0", f"docker://{registry}/{NAMESPACE}/hello:erin")
    assert push.returncode == 0, push.stderr
    regd = tmp_path / "registries.d"
    regd.mkdir()
    (regd / "quorum.yaml").write_text(
        f"docker:\n  {registry}:\n    lookaside: file://{TrustFiles(root).sigstore}\n")
    keyfile = tmp_path / "erin.asc"
    keyfile.write_bytes(keyring["erin"].public)
    scope = f"{registry}/{NAMESPACE}"

    def pull(signed_prefix: str, dest: str) -> subprocess.CompletedProcess:
        doc = {"default": [{"type": "reject"}], "transports": {"docker": {scope: [{
            "type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyfile),
            "signedIdentity": {"type": "remapIdentity", "prefix": scope, "signedPrefix": signed_prefix}}]}}}
        pol = tmp_path / f"policy-{dest}.json"
        pol.write_text(json.dumps(doc))
        # By digest: the signature names hello:1.0, the registry's tag differs.
        return skopeo("--policy", str(pol), "--registries.d", str(regd), "copy", "--src-tls-verify=false",
                      f"docker://{scope}/hello@{entry.digest}", f"dir:{tmp_path / dest}")

    ok = pull(f"docker.io/{NAMESPACE}", "ok")
    assert ok.returncode == 0, ok.stderr
    # The namespace as written in quorum.yaml is not what the tools compare.
    bare = pull(NAMESPACE, "bare")
    assert bare.returncode != 0 and "signature" in bare.stderr.lower(), bare.stderr
