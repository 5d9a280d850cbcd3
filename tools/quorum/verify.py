"""`quorum verify`: is the manifest signed by enough distinct people?

Stateless as far as GnuPG goes: every run builds a throwaway home holding
only the policy's anchor keys, so neither the user's keyring nor GnuPG's
trust database can make a signature count.  A signature counts for a role
when it is one good detached signature over the manifest's exact bytes, by
a key whose *primary* fingerprint the role lists, in a file named after that
fingerprint, recorded in the transparency log.  Counting is by distinct
primary fingerprint, so a person signing twice, or with a subkey and the
primary, is one person.

The only state is this machine's memory (trustroot.py): the pinned trust
root the tree is known by, and the highest serial, the policy version and
the log head accepted under it, which is what turns "valid" into "not
rolled back".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from . import canon, manifest as manifest_mod, policy as policy_mod, translog
from .errors import QuorumError
from .gpg import HASH_NAMES, Home, KeyInfo, is_fingerprint
from .manifest import Manifest, ManifestError
from .model import NAME_RE
from .safeio import JSON_LIMIT, read_regular
from .tree import load_config
from .trustroot import Root, State, default_state_dir, find_root

if TYPE_CHECKING:   # imported where it is used: verify needs it only with rebuilder roles
    from .attest import RebuildCount

EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# A detached signature is a few hundred bytes; anything huge is not one.
MAX_SIGNATURE = 64 * 1024
# How far a signature's date may be ahead of this machine's clock: clocks
# drift, but not by more than this on a machine that keeps time.
MAX_CLOCK_SKEW = timedelta(minutes=10)


class VerifyError(QuorumError):
    pass


# --- the manifest's bytes ----------------------------------------------------------

def load_manifest(path: Path) -> tuple[Manifest, bytes]:
    """The manifest and its bytes, which must be the canonical form: the
    bytes are what is signed, and a second spelling of the same content
    would be a second thing to sign."""
    if not path.exists() and not path.is_symlink():
        raise ManifestError("no manifest: run 'quorum build' first", file=path)
    data = read_regular(path, limit=JSON_LIMIT, error=ManifestError, what="manifest")
    man = manifest_mod.parse(data, str(path))
    if man.to_bytes() != data:
        raise ManifestError("not in canonical form (edited by hand?); rebuild to rewrite it", file=path)
    return man, data


def parse_expires(value: str, source: str = "manifest") -> datetime:
    try:
        return datetime.strptime(value, EXPIRES_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise ManifestError(f"{value!r} is not a UTC time like 2030-01-31T00:00:00Z", file=source,
                            field="expires") from None


# --- one folder of detached signatures ---------------------------------------------------

@dataclass
class Checked:
    """One signature file and what became of it."""
    file: Path
    sha256: str = ""
    fingerprint: str | None = None     # the signer's primary key, as far as GnuPG could tell
    uid: str = ""
    problem: str | None = None         # why it does not count (None: it counts)
    created: int | None = None         # the signature's own date (seconds since 1970)
    hash_algo: str | None = None       # e.g. "SHA512"
    subkey: str | None = None          # the subkey that made it, when not the primary

    def to_json(self) -> dict:
        return {"file": self.file.name, "sha256": self.sha256, "fingerprint": self.fingerprint,
                "uid": self.uid, "counted": self.problem is None, "problem": self.problem,
                "created": _utc(self.created) if self.created is not None else None,
                "hash_algo": self.hash_algo, "subkey": self.subkey}


def check_signature_dir(home: Home, d: Path, data: bytes, now: datetime | None = None) -> list[Checked]:
    """Check every file in ``d`` as a signature over ``data`` in ``home``
    (which holds the anchors and nothing else)."""
    if not d.is_dir():
        return []
    now = now or datetime.now(timezone.utc)
    return [check_signature_file(home, p, data, now) for p in sorted(d.iterdir()) if not p.name.startswith(".")]


def check_signature_file(home: Home, p: Path, data: bytes, now: datetime | None = None) -> Checked:
    now = now or datetime.now(timezone.utc)
    c = Checked(file=p)
    if p.is_symlink() or not p.is_file():
        c.problem = "not a regular file"
        return c
    try:
        # The size is checked before anything is read: a 3 GB file here
        # must cost nothing.
        raw = read_regular(p, limit=MAX_SIGNATURE, error=VerifyError, what="signature")
    except VerifyError as e:
        c.problem = f"{e.message}; not a detached signature"
        return c
    c.sha256 = canon.sha256_bytes(raw)
    if p.suffix != ".asc" or not is_fingerprint(p.stem):
        c.problem = "not named <PRIMARY-FINGERPRINT>.asc"
    else:
        v = home.verify_detached(raw, data)
        c.problem = v.problem()
        if len(v.signatures) == 1:
            # Said even when it does not count: "by whom, when, how" is what
            # a person needs to find out why.
            s = v.signatures[0]
            c.fingerprint = s.primary or s.fingerprint
            c.uid = s.uid or ""
            c.created = s.created
            c.hash_algo = HASH_NAMES.get(s.hash_algo or "", s.hash_algo)
            c.subkey = s.fingerprint if s.primary and s.fingerprint != s.primary else None
        if c.problem is None:
            s = v.signatures[0]
            # The file name is the signer's claim; a copy of Alice's
            # signature under Bob's name must not pass for Bob's.
            if s.primary != p.stem:
                c.problem = f"made by {s.primary}, but the file is named for {p.stem}"
            elif s.sig_class != "00":
                c.problem = f"not a binary-document signature (class {s.sig_class})"
            elif s.created is not None and s.created > (now + MAX_CLOCK_SKEW).timestamp():
                # A date in the future is a clock that lies or a signature
                # made to outlive a revocation or expiry that comes before
                # its date; either way it cannot be placed in time.
                c.problem = (f"dated {_utc(s.created)}, in the future (more than "
                             f"{int(MAX_CLOCK_SKEW.total_seconds()) // 60} minutes ahead of this machine's clock)")
    return c


def _utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime(EXPIRES_FORMAT)


# --- counting per role -----------------------------------------------------------------------

@dataclass
class RoleVerdict:
    name: str
    threshold: int
    signers: list[tuple[str, str]]       # (fingerprint, name)
    # False when the policy that defines this role is not approved (its
    # rotation chain failed): then no count of its signers is "ok".
    policy_trusted: bool = True
    # Rebuild attestations (docs/spec/attestations.md): how many distinct
    # rebuilders of this role each artifact needs, and the artifacts that
    # have fewer (name -> how many).
    rebuilders: int = 0
    short: dict[str, int] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return len(self.signers) >= self.threshold and not self.short

    @property
    def ok(self) -> bool:
        return self.policy_trusted and self.met

    def to_json(self) -> dict:
        return {"role": self.name, "threshold": self.threshold, "count": len(self.signers), "ok": self.ok,
                "policy_trusted": self.policy_trusted,
                "signers": [{"fingerprint": f, "name": n} for f, n in self.signers],
                "rebuilders": self.rebuilders, "short_of_rebuilders": dict(sorted(self.short.items()))}


def tally(policy: policy_mod.Policy, checked: list[Checked]) -> list[RoleVerdict]:
    """Distinct primary fingerprints per role, among the role's anchors."""
    good: dict[str, str] = {}
    for c in checked:
        if c.problem is None and c.fingerprint:
            good.setdefault(c.fingerprint, c.uid)
    return [RoleVerdict(name=r.name, threshold=r.threshold,
                        signers=[(f, good[f]) for f in sorted(good) if f in r.keys])
            for r in policy.roles.values()]


# --- policy rotation -------------------------------------------------------------------------------

@dataclass
class Rotation:
    version: int                        # the version this step accepts
    threshold: int
    role: str
    signers: list[str]
    checked: list[Checked]
    missing_keys: list[str] = field(default_factory=list)   # anchors whose key file is gone

    @property
    def ok(self) -> bool:
        return len(self.signers) >= self.threshold


# The version-n policy of a tree (kept here under its old name for callers).
policy_at = policy_mod.policy_at


def check_rotation(files: policy_mod.TrustFiles, old: policy_mod.Policy, new: policy_mod.Policy,
                   now: datetime | None = None) -> Rotation:
    """Is ``new`` signed by a threshold of ``old``'s rotation role?  Checked
    in a home holding only those keys, so nobody else's signature can count."""
    role = old.roles[old.rotation_role]
    missing = []
    with Home.temporary() as h:
        for fpr in role.keys:
            p = policy_mod.find_pinned_key(files, fpr, role.digests[fpr])
            if p is None:
                missing.append(fpr)
                continue
            policy_mod.import_anchor(h, p, fpr, role.digests[fpr])
        checked = check_signature_dir(h, files.policy_signatures(new.version), new.data, now)
    signers = sorted({c.fingerprint for c in checked if c.problem is None and c.fingerprint in role.keys})
    return Rotation(version=new.version, threshold=role.threshold, role=role.name, signers=signers,
                    checked=checked, missing_keys=missing)


def check_policy_chain(files: policy_mod.TrustFiles, current: policy_mod.Policy, root: Root,
                       accept_policy: bool = False,
                       now: datetime | None = None) -> tuple[list[str], list[str], list[Rotation]]:
    """-> (problems, notes, rotations checked).  From the version this
    machine accepted last (else the pinned root's version) up to the
    current one, each version must be signed by a threshold of the rotation
    role of the version before it."""
    state = root.state
    problems: list[str] = []
    notes: list[str] = []
    if accept_policy:
        notes.append(f"policy version {current.version} accepted as given (--accept-policy)")
        return problems, notes, []
    known = state.policy_version
    if known is None:
        start = root.version
        if root.source == "first use":
            notes.append(f"first use of this tree on this machine: policy version {root.version} "
                         f"(sha256:{root.digest}) is trusted as found (--trust-on-first-use)")
    elif current.version < known:
        return [f"policy version {current.version} is older than version {known} accepted before "
                "(a policy rollback)"], notes, []
    else:
        start = known
        start_policy = policy_at(files, current, known)
        if start_policy.sha256 != state.policy_sha256:
            return [f"policy version {known} is not the one this machine accepted before "
                    "(the policy history was rewritten; --accept-policy to trust it anyway)"], notes, []
    rotations = []
    for n in range(start + 1, current.version + 1):
        rot = check_rotation(files, policy_at(files, current, n - 1), policy_at(files, current, n), now)
        rotations.append(rot)
        notes += [f"no key file for {f} ({rot.role} of policy version {n - 1}) with the sha256 that version "
                  f"pins, under manifests/keys/ or manifests/key-history/: its approval of version {n} "
                  "cannot be checked" for f in rot.missing_keys]
        if not rot.ok:
            problems.append(f"policy version {n} is signed by {len(rot.signers)} {rot.role}(s) of version "
                            f"{n - 1}; {rot.threshold} needed")
            break
    return problems, notes, rotations


# --- the whole verdict ----------------------------------------------------------------------------

@dataclass
class Report:
    tree: str
    commit: str | None
    serial: int
    expires: str | None
    manifest_sha256: str
    policy_version: int
    roles: list[RoleVerdict] = field(default_factory=list)
    signatures: list[Checked] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)     # refusals whatever the counts
    notes: list[str] = field(default_factory=list)
    rotations: list[Rotation] = field(default_factory=list)
    root: Root | None = None       # where this machine's trust in the tree starts

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.roles) and all(r.ok for r in self.roles)

    def to_json(self) -> dict:
        return {"ok": self.ok, "tree": self.tree, "root": self.root.to_json() if self.root else None, "commit": self.commit, "serial": self.serial,
                "expires": self.expires, "manifest_sha256": self.manifest_sha256,
                "policy_version": self.policy_version, "roles": [r.to_json() for r in self.roles],
                "signatures": [c.to_json() for c in self.signatures], "problems": self.problems,
                "notes": self.notes,
                "rotations": [{"version": r.version, "role": r.role, "threshold": r.threshold,
                               "signers": r.signers, "ok": r.ok} for r in self.rotations]}


def verify(root: Path, *, state_dir: Path | None = None, now: datetime | None = None,
           accept_serial: int | None = None, accept_policy: bool = False, record: bool = True,
           pinned_root: str | None = None, trust_on_first_use: bool = False) -> Report:
    root = Path(root)
    now = now or datetime.now(timezone.utc)
    state_dir = state_dir or default_state_dir()
    files = policy_mod.TrustFiles(root)
    config = load_config(root)
    journal = files.manifests / ".sign-journal.json"
    if journal.exists() or journal.is_symlink():
        # The manifest, signatures and log are mid-change on this machine.
        raise VerifyError("an interrupted 'quorum sign' left its journal here: run 'quorum sign' again to "
                          "finish it, then verify", file=journal)
    files.refuse_linked_folders()
    man, data = load_manifest(files.manifest)
    # Before the tree name is used as a file name, and so that a manifest
    # moved here from another tree is not taken for this one.
    if man.tree != config.name or not NAME_RE.match(man.tree):
        raise VerifyError(f"is for tree {man.tree!r}, but this tree is {config.name!r}", file=files.manifest,
                          field="tree.name")
    pol = policy_mod.load(files.policy)
    # The tree is known by its trust root, not by the name it gives itself.
    trust = find_root(state_dir, files, pol, pinned=pinned_root, trust_on_first_use=trust_on_first_use,
                      tree=man.tree)
    state = trust.state
    report = Report(tree=man.tree, commit=man.commit, serial=man.serial, expires=man.expires,
                    manifest_sha256=canon.sha256_bytes(data), policy_version=pol.version, root=trust)
    report.problems += _freshness(man, now, files.manifest)
    report.problems += _rollback(man, report.manifest_sha256, state, accept_serial)
    problems, notes, report.rotations = check_policy_chain(files, pol, trust, accept_policy, now)
    report.problems += problems
    report.notes += notes
    report.notes += [f"{p} is not listed in the policy and is ignored" for p in policy_mod.unlisted_key_files(files, pol)]
    entries, head = _read_log(files, state, accept_serial, report)
    with Home.temporary() as home:
        anchors = policy_mod.import_anchors(home, files, pol)
        report.signatures = check_signature_dir(home, files.signatures, data, now)
        rebuilt = _count_rebuilders(home, files, pol, man, anchors) if any(
            r.rebuilders for r in pol.roles.values()) else None
    for c in report.signatures:
        # A counted signature always names its signer (check_signature_file);
        # None here would be no signer to find, so "not in the log" as well.
        if c.problem is None and (c.fingerprint is None or translog.find(
                entries, signer=c.fingerprint, signature_sha256=c.sha256,
                manifest_sha256=report.manifest_sha256) is None):
            # An unlogged signature is one the public history never saw:
            # it might be a split view shown only to this verifier.
            c.problem = "not in the transparency log"
    report.roles = tally(pol, report.signatures)
    if rebuilt is not None:
        report.notes += rebuilt.notes
        for r in report.roles:
            r.rebuilders = pol.roles[r.name].rebuilders
            if r.rebuilders:
                keys = set(pol.roles[r.name].keys)
                r.short = {n: len(f & keys) for n, f in rebuilt.by_package.items() if len(f & keys) < r.rebuilders}
    if problems:
        for r in report.roles:
            r.policy_trusted = False
    for fpr, key in sorted(anchors.items()):
        status = policy_mod.key_status(key)
        if status:
            # Reported, not fatal: the other anchors may still meet the
            # thresholds, and a maintainer's key expiring must not stop
            # every user's verification.
            report.notes.append(f"anchor {key.name} {fpr} ({', '.join(pol.roles_of(fpr))}) is {status}: "
                                "its signatures do not count")
    if report.ok and record:
        State(root=trust.digest, serial=man.serial, manifest_sha256=report.manifest_sha256,
              policy_version=pol.version, policy_sha256=pol.sha256, log=head).save(state_dir, man.tree)
    return report


def _count_rebuilders(home: Home, files: policy_mod.TrustFiles, pol: policy_mod.Policy, man: Manifest,
                      anchors: dict[str, KeyInfo]) -> RebuildCount:
    """Signed rebuild attestations per artifact, by the anchors of roles that
    require them (only keys GnuPG reports as neither revoked nor expired)."""
    from . import attest
    wanted = sorted({k for r in pol.roles.values() if r.rebuilders for k in r.keys})
    unusable = {f for f in wanted if policy_mod.key_status(anchors[f])}
    unusable |= {p.fingerprint for f in wanted for p in anchors[f].parts if not p.usable}
    return attest.count_rebuilders(homedir=str(home.path), manifests=files.manifests, tree=man.tree,
                                   digests={n: e.digest for n, e in man.entries.items()}, fingerprints=wanted,
                                   unusable=unusable)


def _freshness(man: Manifest, now: datetime, path: Path) -> list[str]:
    """A manifest with no expiry could be replayed forever (a freeze attack)."""
    out = []
    if man.expires is None:
        out.append("the manifest has no expires: it was never released ('quorum sign --release')")
    elif parse_expires(man.expires, str(path)) <= now:
        out.append(f"the manifest expired at {man.expires}")
    if man.commit is None:
        out.append("the manifest names no tree.commit: it was never released ('quorum sign --release')")
    return out


def _rollback(man: Manifest, sha: str, state: State, accept_serial: int | None) -> list[str]:
    """An older serial after a newer one was accepted is a rollback to
    digests someone may have withdrawn for a reason."""
    floor = accept_serial if accept_serial is not None else state.serial
    if man.serial < floor:
        return [f"serial {man.serial} is lower than serial {floor} accepted before on this machine "
                "(a rollback; --accept-serial N to reset deliberately)"]
    if accept_serial is None and man.serial == state.serial and state.manifest_sha256 not in (None, sha):
        return [f"a different manifest with the same serial {man.serial} was accepted before on this machine"]
    return []


def _read_log(files: policy_mod.TrustFiles, state: State, accept_serial: int | None,
              report: Report) -> tuple[list[dict], translog.Head]:
    try:
        entries = translog.read(files.log)
        head = translog.replay(entries, files.log)
        if accept_serial is None:
            translog.check_extends(entries, state.log, files.log)
    except translog.LogError as e:
        report.problems.append(f"transparency log: {e}")
        return [], translog.Head(0, translog.GENESIS)
    return entries, head
