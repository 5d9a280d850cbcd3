"""`quorum sign`: sign the hash manifest (and each image) with one's key.

You sign only what you reproduced: before anything is signed, every
artifact the manifest names must be whole in this machine's out/ with the
very digest the manifest records.  The signature is checked again in a
throwaway home before it is written, appended to the transparency log, and
mirrored per image in the containers "simple signing" lookaside layout.

The release step (``--release``) is the only place that stamps the
manifest's freshness fields — ``expires`` and ``tree.commit`` — because a
build must stay a pure function of its inputs (no clock, no checkout).
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import canon, oci, policy as policy_mod, simplesign, translog
from .errors import QuorumError
from .gpg import GpgError, Home, SigResult
from .manifest import Manifest
from .safeio import DEFINITION_LIMIT, JSON_LIMIT, loads_json, read_regular
from .store import Store
from .tree import load_config
from .verify import EXPIRES_FORMAT, MAX_SIGNATURE, load_manifest, parse_expires

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?\Z")
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,4})([hdw])\Z")


class SignError(QuorumError):
    pass


@dataclass
class SignReport:
    fingerprint: str                  # the signer's primary key
    uid: str
    signature: Path
    manifest_sha256: str
    serial: int
    log_entry: dict
    released: bool = False
    removed: list[Path] = field(default_factory=list)        # stale signatures a release dropped
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attestations: list[Path] = field(default_factory=list)   # DSSE envelopes written

    def to_json(self) -> dict:
        return {"signer": self.fingerprint, "uid": self.uid, "signature": str(self.signature),
                "manifest_sha256": self.manifest_sha256, "serial": self.serial, "released": self.released,
                "removed": [str(p) for p in self.removed], "images": [str(p) for p in self.images],
                "log_seq": self.log_entry["seq"], "warnings": self.warnings,
                "attestations": [str(p) for p in self.attestations]}


# --- reading --------------------------------------------------------------------------

def parse_duration(text: str) -> timedelta:
    m = _DURATION_RE.match(text)
    if not m:
        raise SignError(f"{text!r} is not a duration like 12h, 90d or 8w", field="--expires-in")
    n, unit = int(m.group(1)), m.group(2)
    return {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]


# --- you sign only what you reproduced ------------------------------------------------

def check_artifacts(man: Manifest, store: Store) -> list[str]:
    """Names (with the reason) of manifest entries whose artifact is not
    here, or not the one the manifest records."""
    bad = []
    for name, entry in sorted(man.entries.items()):
        rec = store.record(name)
        if rec is None:
            bad.append(f"{name} (not built here)")
        elif rec.digest != entry.digest:
            bad.append(f"{name} (built {rec.digest[:19]}…, manifest says {entry.digest[:19]}…)")
        else:
            try:
                oci.verify_layout(store.layout(name), entry.digest, deep=True)
            except (OSError, ValueError, KeyError) as e:
                bad.append(f"{name} (layout damaged: {e})")
    return bad


# --- the release step ----------------------------------------------------------------

def git_commit(root: Path) -> str:
    """HEAD of the tree's checkout, refusing a dirty one: the commit is the
    tree's identity in the manifest, and uncommitted definitions would make
    that identity a lie."""
    try:
        head = _git(root, "rev-parse", "HEAD").strip()
        dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", ".",
                     ":(exclude)manifests", ":(exclude)out").splitlines()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        raise SignError("cannot read the git commit of the tree (not a git checkout?); "
                        "give --commit", file=root) from None
    if dirty:
        shown = ", ".join(line[3:] for line in dirty[:5]) + (" …" if len(dirty) > 5 else "")
        raise SignError(f"the checkout has uncommitted changes ({shown}); commit them first, "
                        "so the manifest names the commit it was built from", file=root)
    return head


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def stamp(man: Manifest, *, now: datetime, expires_in: timedelta, commit: str) -> Manifest:
    """The released manifest: expiry and commit set.  Re-releasing bytes
    that were released before bumps the serial, so that every distinct
    signed manifest has its own serial and a verifier can refuse a second,
    different manifest under a serial it already accepted."""
    if not _COMMIT_RE.match(commit):
        raise SignError(f"{commit!r} is not a full git commit id", field="commit")
    new = Manifest(tree=man.tree, entries=dict(man.entries), serial=man.serial, checks=dict(man.checks))
    new.expires = (now + expires_in).astimezone(timezone.utc).strftime(EXPIRES_FORMAT)
    new.commit = commit
    if man.expires is not None or man.commit is not None:
        if (new.expires, new.commit) != (man.expires, man.commit):
            new.serial = man.serial + 1
    return new


def remove_stale_signatures(files: policy_mod.TrustFiles) -> list[Path]:
    """Drop manifest signatures (they were over the old bytes and can never
    count again); returns what was removed."""
    removed = []
    if files.signatures.is_dir():
        for p in sorted(files.signatures.glob("*.asc")):
            p.unlink()
            removed.append(p)
    return removed


def require_released(man: Manifest, now: datetime, path: Path) -> None:
    if man.expires is None or man.commit is None:
        raise SignError("not released yet (no expires/commit): the first maintainer runs "
                        "'quorum sign --release', everyone else signs the committed result", file=path)
    exp = parse_expires(man.expires, str(path))
    if exp <= now:
        raise SignError(f"expired at {man.expires}: a maintainer re-releases it with 'quorum sign --release'",
                        file=path, field="expires")


# --- which key -------------------------------------------------------------------------

def signing_key(root: Path) -> str | None:
    """QUORUM_SIGNING_KEY, else git's user.signingkey, else None (GnuPG's
    default key)."""
    if os.environ.get("QUORUM_SIGNING_KEY"):
        return os.environ["QUORUM_SIGNING_KEY"]
    try:
        out = _git(root, "config", "--get", "user.signingkey").strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return None
    return out or None


def _self_check(user: Home, signature: bytes, data: bytes, signing_fpr: str) -> tuple[str, SigResult]:
    """Verify what was just made in a throwaway home holding only the
    signer's public key: proves the signature is one good, detached
    signature over these bytes, and yields the primary fingerprint (and
    the signature)."""
    public = user.export_public(signing_fpr)
    with Home.temporary() as h:
        h.import_keys(public)
        v = h.verify_detached(signature, data)
    problem = v.problem()
    if problem:
        raise SignError(f"the signature GnuPG made does not verify: {problem}")
    sig = v.signatures[0]
    # A good signature always came with VALIDSIG, which names the primary
    # key (gpg.parse_status): this only spells that out for the types.
    if sig.primary is None:
        raise SignError("the signature GnuPG made does not verify: GnuPG did not name its primary key")
    return sig.primary, sig


# --- signing ----------------------------------------------------------------------------

def sign(root: Path, **kw: Any) -> SignReport:
    """Sign the tree's manifest (see _sign) holding out/'s lock: a build
    must not replace the artifacts being vouched for, and two signers must
    not interleave their read-modify-write of the log."""
    with Store(Path(root) / "out").lock():
        return _sign(Path(root), **kw)


def _sign(root: Path, *, user: Home | None = None, key: str | None = None, release: bool = False,
          expires_in: timedelta = timedelta(days=90), commit: str | None = None,
          now: datetime | None = None, images: bool = True, attestations: bool = True) -> SignReport:
    """Sign the tree's manifest (releasing it first with ``release``).
    Nothing is written until GnuPG has made a signature that verifies, so
    a failed signing (wrong passphrase, no token) leaves the tree as it was."""
    now = now or datetime.now(timezone.utc)
    files = policy_mod.TrustFiles(root)
    config = load_config(root)
    # Writing through a linked folder would put signatures outside the tree.
    files.refuse_linked_folders()
    finish_interrupted(root)
    user = user or Home.user()
    key = key if key is not None else signing_key(root)
    man, data = _reproduced_manifest(root, files)
    # A broken log would leave the new signature unlogged and so uncounted.
    translog.replay(translog.read(files.log), files.log)
    if release:
        man = stamp(man, now=now, expires_in=expires_in, commit=commit or git_commit(root))
    else:
        require_released(man, now, files.manifest)
    signed = man.to_bytes()
    signature, signing_fpr = user.sign(signed, key, detach=True)
    primary, sig = _self_check(user, signature, signed, signing_fpr)
    # Several files change together (manifest, signatures, log): the
    # journal is written first, in one atomic write, and holds the whole new
    # state, so a kill at any later point is finished by the next run
    # instead of leaving a manifest that lost its signatures.
    j = Journal(manifest=signed, signer=primary, signature=signature, tree=man.tree, serial=man.serial,
                time=translog.timestamp(now), release=signed != data, log_seq=len(translog.read(files.log)))
    j.write(files)
    removed, entry = j.apply(files)
    sig_path = files.signature(primary)
    sha = canon.sha256_bytes(signed)
    report = SignReport(fingerprint=primary, uid=sig.uid or "", signature=sig_path, manifest_sha256=sha,
                        serial=man.serial, log_entry=entry, released=release, removed=removed,
                        warnings=_anchor_warnings(files, primary))
    if images:
        public = user.export_public(signing_fpr)
        # Image signatures are made with the *primary* key ("FPR!" forces
        # it): skopeo and podman compare the signing key with the primary
        # keys of the key file their policy names, and refuse a subkey's
        # signature ("Signature by key <subkey> is not accepted").
        try:
            report.images = sign_images(files, man, config.namespace, user=user, key=f"{primary}!",
                                        primary=primary, public=public)
        except GpgError:
            if sig.fingerprint == primary:
                raise
            # The primary is offline (a token holding subkeys only): sign
            # with the subkey, and say what container tools will make of it.
            report.images = sign_images(files, man, config.namespace, user=user, key=f"{sig.fingerprint}!",
                                        primary=primary, public=public)
            report.warnings.append(
                f"image signatures were made with subkey {sig.fingerprint} (the primary key is not usable "
                "here): skopeo/podman 'signedBy' policies refuse them; see docs/spec/signatures.md")
    if attestations:
        # Provenance and rebuild attestations as DSSE envelopes
        # (docs/spec/attestations.md): each file stands alone, so no journal.
        from . import attest
        atts = attest.sign_attestations(out=root / "out", manifests=files.manifests, tree=man.tree,
                                        digests={n: e.digest for n, e in man.entries.items()},
                                        fingerprint=primary, homedir=str(user.path) if user.path else None)
        report.attestations = atts.written
        report.warnings += atts.notes
    return report


JOURNAL_FORMAT = "quorum-sign-journal/1"


@dataclass
class Journal:
    """manifests/.sign-journal.json: the new signed state, written before
    any of it is applied.  ``apply`` is idempotent: run again after a kill,
    it ends in the same state."""
    manifest: bytes
    signer: str
    signature: bytes
    tree: str
    serial: int
    time: str
    release: bool
    # The log's length when the journal was written: its entry is the one
    # right after, so applying twice never logs twice, and signing the same
    # bytes twice (identical Ed25519 signatures in one second) logs twice.
    log_seq: int = 0

    @staticmethod
    def path(files: policy_mod.TrustFiles) -> Path:
        return files.manifests / ".sign-journal.json"

    def write(self, files: policy_mod.TrustFiles) -> None:
        canon.atomic_write(self.path(files), canon.dumps_pretty({
            "format": JOURNAL_FORMAT, "manifest": self.manifest.decode("utf-8"), "signer": self.signer,
            "signature": self.signature.decode("ascii"), "tree": self.tree, "serial": self.serial,
            "time": self.time, "release": self.release, "log_seq": self.log_seq}))

    @classmethod
    def load(cls, files: policy_mod.TrustFiles) -> "Journal | None":
        p = cls.path(files)
        if not p.exists() and not p.is_symlink():
            return None
        doc = loads_json(read_regular(p, limit=16 << 20, error=SignError, what="journal"), file=p, error=SignError)
        try:
            assert isinstance(doc, dict) and doc["format"] == JOURNAL_FORMAT
            return cls(manifest=doc["manifest"].encode("utf-8"), signer=str(doc["signer"]),
                       signature=doc["signature"].encode("ascii"), tree=str(doc["tree"]), serial=int(doc["serial"]),
                       time=str(doc["time"]), release=bool(doc["release"]), log_seq=int(doc["log_seq"]))
        except (AssertionError, KeyError, AttributeError, ValueError, TypeError, UnicodeError):
            raise SignError("not a signing journal; remove it if no 'quorum sign' is running", file=p) from None

    def apply(self, files: policy_mod.TrustFiles) -> tuple[list[Path], dict]:
        removed: list[Path] = []
        sig_path = files.signature(self.signer)
        current = (read_regular(files.manifest, limit=JSON_LIMIT, error=SignError, what="manifest")
                   if files.manifest.exists() or files.manifest.is_symlink() else None)
        if self.release and current != self.manifest:
            # Signatures over the old bytes can never count again.
            removed = remove_stale_signatures(files)
        if current != self.manifest:
            canon.atomic_write(files.manifest, self.manifest)
        canon.atomic_write(sig_path, self.signature)
        sha, sig_sha = canon.sha256_bytes(self.manifest), canon.sha256_bytes(self.signature)
        entries = translog.read(files.log)
        entry = None
        if len(entries) > self.log_seq:
            e = entries[self.log_seq]
            if (e["signer"], e["signature_sha256"], e["manifest_sha256"]) == (self.signer, sig_sha, sha):
                entry = e        # applied before the kill
        if entry is None:
            entry = translog.append(files.log, tree=self.tree, serial=self.serial, manifest_sha256=sha,
                                    signer=self.signer, signature_sha256=sig_sha,
                                    now=translog.parse_time(self.time))
        self.path(files).unlink(missing_ok=True)
        return removed, entry


def finish_interrupted(root: Path) -> bool:
    """Complete a signing that was killed after its journal was written.
    True if there was one."""
    files = policy_mod.TrustFiles(Path(root))
    j = Journal.load(files)
    if j is None:
        return False
    j.apply(files)
    return True


def _reproduced_manifest(root: Path, files: policy_mod.TrustFiles) -> tuple[Manifest, bytes]:
    """The manifest, provided this machine's out/ holds exactly its artifacts."""
    man, data = load_manifest(files.manifest)
    bad = check_artifacts(man, Store(root / "out"))
    if bad:
        raise SignError("refusing to sign: the local artifacts do not match the manifest for "
                        + "; ".join(bad) + ". Build (or reproduce) them first: you sign only what you rebuilt",
                        file=files.manifest)
    return man, data


def _anchor_warnings(files: policy_mod.TrustFiles, primary: str) -> list[str]:
    try:
        pol = policy_mod.load(files.policy)
    except QuorumError as e:
        return [f"cannot read the policy ({e}); the signature was written anyway"]
    roles = pol.roles_of(primary)
    if not roles:
        return [f"{primary} is not an anchor of any role in {files.policy}: this signature counts "
                f"for nothing until a policy lists the key (docs/trust.md)"]
    return []


def sign_images(files: policy_mod.TrustFiles, man: Manifest, namespace: str, *, user: Home,
                key: str | None, primary: str, public: bytes) -> list[Path]:
    """One simple-signing signature per package and bootstrap image (seeds
    are build inputs, not images anyone pulls).  A signature this key made
    before for the same image is replaced in place, keeping N gap-free."""
    written = []
    with Home.temporary() as h:
        h.import_keys(public)
        for name, entry in sorted(man.entries.items()):
            if entry.kind == "seed":
                continue
            ref = simplesign.reference(namespace, name, entry.version)
            d = simplesign.lookaside_dir(files.sigstore, namespace, name, entry.digest)
            payload = simplesign.payload(ref, entry.digest)
            signed, _ = user.sign(payload, key, detach=False)
            v, got = h.verify_attached(signed)
            if v.problem() or got != payload:
                raise SignError(f"the image signature GnuPG made for {name} does not verify: "
                                f"{v.problem() or 'payload differs'}")
            written.append(simplesign.write(d, signed, _own_signature_index(h, d, primary)))
    return written


def _own_signature_index(h: Home, d: Path, primary: str) -> int | None:
    """The N of an existing signature-N by this key (checked in a home that
    holds only this key, so a good signature is this key's)."""
    for i, p in enumerate(simplesign.signature_files(d), start=1):
        v, _ = h.verify_attached(read_regular(p, limit=MAX_SIGNATURE, error=SignError, what="image signature"))
        if v.problem() is None and v.signatures[0].primary == primary:
            return i
    return None


# --- policy rotation ---------------------------------------------------------------------

def sign_policy(root: Path, *, user: Home | None = None, key: str | None = None) -> tuple[str, Path]:
    """Sign the current policy.yaml as a rotation from the version before
    it (by one of that version's rotation-role keys)."""
    files = policy_mod.TrustFiles(root)
    user = user or Home.user()
    key = key if key is not None else signing_key(root)
    pol = policy_mod.load(files.policy)
    if pol.version < 2:
        raise SignError("version 1 is the first policy: there is nothing to rotate from", file=files.policy,
                        field="version")
    signature, signing_fpr = user.sign(pol.data, key, detach=True)
    primary, _ = _self_check(user, signature, pol.data, signing_fpr)
    old = previous_policy(files, pol.version)
    if primary not in old.roles[old.rotation_role].keys:
        raise SignError(f"{primary} is not a {old.rotation_role} of policy version {old.version}: "
                        "only they can approve the next version", file=files.old_policy(old.version))
    path = files.policy_signatures(pol.version) / f"{primary}.asc"
    canon.atomic_write(path, signature)
    # The log records the approval too: the history of who trusted whom.
    translog.append_policy(files.log, kind="policy-sign", tree=load_config(root).name, version=pol.version,
                           policy_sha256=pol.sha256, signer=primary,
                           signature_sha256=canon.sha256_bytes(signature), now=datetime.now(timezone.utc))
    return primary, path


def unpinned_keys(files: policy_mod.TrustFiles, pol: policy_mod.Policy, current_only: bool = False) -> list[str]:
    """Keys of ``pol`` whose pinned key file is not in the tree.  For the
    policy being replaced, the pinned copy may be anywhere verifiers look
    (key-history/ too): they need it to check this rotation forever after.
    For the new policy it must be the role's current file."""
    out = []
    for role in pol.roles.values():
        for fpr in role.keys:
            digest = role.digests[fpr]
            if current_only:
                p = files.key_file(role.name, fpr)
                ok = (p.exists() and not p.is_symlink()
                      and canon.sha256_bytes(read_regular(p, limit=policy_mod.MAX_KEY_FILE, error=SignError,
                                                          what="key file")) == digest)
                if not ok:
                    out.append(f"{p} is missing or its sha256 is not the {digest} the new policy pins")
            elif policy_mod.find_pinned_key(files, fpr, digest) is None:
                out.append(f"the key file of {fpr} pinned by policy version {pol.version} (sha256 {digest}) is "
                           f"gone; keep it as {files.key_history / (digest + '.asc')} (e.g. from git history)")
    return out


def previous_policy(files: policy_mod.TrustFiles, version: int) -> policy_mod.Policy:
    path = files.old_policy(version - 1)
    old = policy_mod.load(path)
    if old.version != version - 1:
        raise SignError(f"says version {old.version}, expected {version - 1}", file=path, field="version")
    return old


def rotate_policy(root: Path, new_policy: Path) -> policy_mod.Policy:
    """Install ``new_policy`` as manifests/policy.yaml, keeping the current
    one byte for byte in policy-history/<version>.yaml (verifiers replay the
    chain from there).  The new version must be exactly one higher."""
    files = policy_mod.TrustFiles(root)
    cur = policy_mod.load(files.policy)
    new = policy_mod.load(new_policy)
    if new.version != cur.version + 1:
        raise SignError(f"is version {new.version}; the next version after {cur.version} must be "
                        f"{cur.version + 1}", file=new_policy, field="version")
    problems = unpinned_keys(files, cur) + unpinned_keys(files, new, current_only=True)
    if problems:
        raise SignError("cannot rotate: " + "; ".join(problems), file=new_policy)
    hist = files.old_policy(cur.version)
    if (hist.exists() or hist.is_symlink()) and read_regular(hist, limit=DEFINITION_LIMIT, error=SignError,
                                                             what="policy") != cur.data:
        raise SignError("already holds a different policy of that version", file=hist)
    # A broken log is refused before anything changes, as in sign.
    translog.replay(translog.read(files.log), files.log)
    canon.atomic_write(hist, cur.data)
    canon.atomic_write(files.policy, new.data)
    installed = policy_mod.load(files.policy)
    translog.append_policy(files.log, kind="policy-rotate", tree=load_config(root).name,
                           version=installed.version, policy_sha256=installed.sha256,
                           now=datetime.now(timezone.utc))
    return installed
