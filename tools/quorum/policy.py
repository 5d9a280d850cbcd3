"""The trust policy (manifests/policy.yaml) and the files around it.

The policy names roles, each with a threshold and the primary-key
fingerprints that are its trust anchors; the key material lives one key per
file in ``manifests/keys/<role>/<FINGERPRINT>.asc``.  The *list* in the
policy is what counts, not the folder: the policy's bytes are what a
rotation signs, so a key file dropped into a folder without a signed policy
change must not become an anchor.  See docs/spec/policy.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast


from . import canon
from .errors import DefinitionError, QuorumError
from .gpg import Home, KeyInfo, KeyPart, is_fingerprint
from .safeio import DEFINITION_LIMIT, read_regular
from .tree import _Fields, parse_yaml

FORMAT = "quorum.policy/2"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
# A key file larger than this is not a public key someone meant to commit.
MAX_KEY_FILE = 1 << 20


class PolicyError(QuorumError):
    """The policy or an anchor key file is malformed or inconsistent."""


@dataclass(frozen=True)
class TrustFiles:
    """Where the trust data of a tree lives (all below manifests/)."""
    root: Path

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def manifest(self) -> Path:
        return self.manifests / "manifest.json"

    @property
    def policy(self) -> Path:
        return self.manifests / "policy.yaml"

    @property
    def keys(self) -> Path:
        return self.manifests / "keys"

    @property
    def signatures(self) -> Path:
        return self.manifests / "signatures"

    @property
    def log(self) -> Path:
        return self.manifests / "log.jsonl"

    @property
    def sigstore(self) -> Path:
        return self.manifests / "sigstore"

    @property
    def key_history(self) -> Path:
        return self.manifests / "key-history"

    @property
    def policy_history(self) -> Path:
        return self.manifests / "policy-history"

    def refuse_linked_folders(self) -> None:
        """Every folder quorum reads trust files from must be a real folder
        of the tree.  Files are opened without following symlinks, but a
        folder that is a link (``signatures -> /elsewhere``) would make
        every file in it come from outside the repository that was
        reviewed, or from a place that never ends (a FIFO, /proc)."""
        top = [self.manifests, self.keys, self.signatures, self.policy_history, self.key_history,
               self.manifests / "policy-signatures", self.sigstore]
        for d in top + self._children(self.keys) + self._children(self.manifests / "policy-signatures"):
            if d.is_symlink():
                raise PolicyError("is a symbolic link; trust files are read only from real folders inside "
                                  "the tree: replace the link by a folder holding the files", file=d)
            if d.exists() and not d.is_dir():
                raise PolicyError("must be a folder", file=d)

    @staticmethod
    def _children(d: Path) -> list[Path]:
        if d.is_symlink() or not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))

    def key_file(self, role: str, fingerprint: str) -> Path:
        return self.keys / role / f"{fingerprint}.asc"

    def signature(self, fingerprint: str) -> Path:
        return self.signatures / f"{fingerprint}.asc"

    def old_policy(self, version: int) -> Path:
        return self.policy_history / f"{version}.yaml"

    def policy_signatures(self, version: int) -> Path:
        return self.manifests / "policy-signatures" / str(version)


@dataclass(frozen=True)
class Role:
    name: str
    threshold: int
    keys: tuple[str, ...]       # primary fingerprints, as listed
    # fingerprint -> sha256 of its key file: the policy's signers approve
    # the key *file*, revocations and expiry dates included, not only the
    # key's name.
    digests: dict[str, str] = field(default_factory=dict, compare=False)
    # How many distinct keys of this role must have signed a REPRODUCED
    # rebuild attestation for every artifact of the manifest (0: none
    # needed); see docs/spec/attestations.md.
    rebuilders: int = 0


@dataclass(frozen=True)
class Policy:
    version: int
    rotation_role: str
    roles: dict[str, Role]
    path: Path
    data: bytes = field(repr=False)   # the exact bytes: what a rotation signs

    @property
    def sha256(self) -> str:
        return canon.sha256_bytes(self.data)

    def anchors(self) -> set[str]:
        return {k for r in self.roles.values() for k in r.keys}

    def roles_of(self, fingerprint: str) -> list[str]:
        return [r.name for r in self.roles.values() if fingerprint in r.keys]

    def digest_of(self, fingerprint: str) -> str:
        """The sha256 this policy pins for the key's file."""
        return next(r.digests[fingerprint] for r in self.roles.values() if fingerprint in r.digests)


def load(path: Path) -> Policy:
    """Read and validate a policy file strictly (unknown fields, wrong types,
    unsatisfiable thresholds: one error naming the file and the field)."""
    if not path.exists() and not path.is_symlink():
        raise PolicyError("no trust policy (see docs/trust.md to create one)", file=path)
    data = read_regular(path, limit=DEFINITION_LIMIT, error=PolicyError, what="policy")
    f = _Fields(_parse_yaml(data, path), path)
    fmt = f.string("format", required=True)
    if fmt == "quorum.policy/1":
        raise f.err("format", "quorum.policy/1 does not pin the anchors' key files: write each key as "
                              "{fingerprint: FPR, sha256: <sha256sum of its .asc>} and set format: "
                              f"{FORMAT} (docs/spec/policy.md)")
    if fmt != FORMAT:
        raise f.err("format", f"unknown policy format {fmt!r} (this quorum reads {FORMAT!r})")
    version = f.get("version", int, required=True, what="a positive integer")
    if version < 1:
        raise f.err("version", "must be a positive integer")
    rotation_role = f.string("rotation_role", ROLE_RE, default="maintainer", what="a role name")
    raw_roles = f.get("roles", dict, required=True, what="a mapping of role name to {threshold, keys}")
    if not raw_roles:
        raise f.err("roles", "at least one role is needed")
    roles: dict[str, Role] = {}
    pinned: dict[str, tuple[str, str]] = {}
    for name in raw_roles:
        role = roles[str(name)] = _load_role(raw_roles[name], str(name), path)
        for i, fpr in enumerate(role.keys):
            other = pinned.setdefault(fpr, (role.name, role.digests[fpr]))
            if other[1] != role.digests[fpr]:
                # One key, one file content: two pins would let each role's
                # folder hold a different copy (one with its revocation
                # stripped).
                raise f.err(f"roles.{role.name}.keys[{i}].sha256",
                            f"differs from the sha256 roles.{other[0]} pins for the same key")
    if rotation_role not in roles:
        raise f.err("rotation_role", f"names no role of this policy ({', '.join(sorted(roles))})")
    f.finish()
    return Policy(version=version, rotation_role=rotation_role, roles=roles, path=path, data=data)


def _parse_yaml(data: bytes, path: Path) -> Any:
    """Parse the very bytes that were read (and that a rotation signs): a
    second read could see a different file."""
    return parse_yaml(data, path, PolicyError)


def _load_role(data: dict[str, Any], name: str, path: Path) -> Role:
    prefix = f"roles.{name}"
    if not ROLE_RE.match(name):
        raise DefinitionError(f"role name must match {ROLE_RE.pattern}", file=path, field=prefix)
    g = _Fields(data, path, prefix)
    threshold = g.get("threshold", int, required=True, what="a positive integer")
    entries = g.get("keys", list, required=True, what="a list of {fingerprint, sha256}")
    keys: list[str] = []
    digests: dict[str, str] = {}
    for i, entry in enumerate(entries):
        e = _Fields(entry, path, f"{prefix}.keys[{i}]")
        k = e.get("fingerprint", str, required=True, what="a primary key fingerprint")
        # One spelling only: the fingerprint is also a file name, and two
        # spellings of one key must not look like two people.
        if not is_fingerprint(k):
            raise e.err("fingerprint", f"{k!r:.70} is not a fingerprint (40 or 64 upper-case hex digits, "
                                       "no spaces; see 'gpg --with-colons --fingerprint')")
        # required=True: string() raises rather than return None, which its
        # declared type (tree._Fields, owned elsewhere) cannot say.
        digest = cast(str, e.string("sha256", _SHA256_RE, required=True, what="64 lower-case hex digits"))
        e.finish()
        keys.append(k)
        digests[k] = digest
    if len(set(keys)) != len(keys):
        raise g.err("keys", "lists a key twice (a key counts once per role)")
    if threshold < 1:
        raise g.err("threshold", "must be at least 1 (a threshold of 0 would accept anything)")
    if threshold > len(keys):
        raise g.err("threshold", f"{threshold} can never be met: the role has {len(keys)} key(s)")
    rebuilders = g.get("rebuilders", int, default=0, what="an integer from 0 to the number of keys")
    if isinstance(rebuilders, bool) or not 0 <= rebuilders <= len(keys):
        raise g.err("rebuilders", f"must be from 0 to {len(keys)} (the role's keys)")
    g.finish()
    return Role(name=name, threshold=threshold, keys=tuple(keys), digests=digests, rebuilders=rebuilders)


# --- anchor key files ---------------------------------------------------------

def check_key_file(home: Home, path: Path, fingerprint: str) -> KeyInfo:
    """The one public key in ``path``, which must be ``fingerprint``."""
    return check_key_data(home, _read_key_file(path), path, fingerprint)


def import_anchor(home: Home, path: Path, fingerprint: str, sha256: str) -> KeyInfo:
    """Check the key file against the digest the policy pins and import the
    very bytes that were checked (a second read could find another file
    swapped in meanwhile)."""
    data = _read_key_file(path)
    actual = canon.sha256_bytes(data)
    if actual != sha256:
        # The fingerprint alone names the key but not its state: an old
        # copy from before a revocation, or one with its revocation or a
        # shortened expiry stripped, has the same fingerprint.
        raise PolicyError(f"sha256 is {actual}, but the policy pins {sha256} for this key: the file was "
                          "changed without a policy rotation (an old or altered copy?); restore the pinned "
                          "file, or rotate the policy to the new digest (docs/trust.md)", file=path)
    key = check_key_data(home, data, path, fingerprint)
    home.import_keys(data)
    return key


def _read_key_file(path: Path) -> bytes:
    if not path.exists() and not path.is_symlink():
        raise PolicyError("missing (each anchor needs its public key here)", file=path)
    return read_regular(path, limit=MAX_KEY_FILE, error=PolicyError, what="key file")


def check_key_data(home: Home, data: bytes, path: Path, fingerprint: str) -> KeyInfo:
    """The one public key in ``data`` (read from ``path``).

    A file with two primary keys is refused: whoever reviews the file sees
    one name, and a second key riding along would become an anchor
    unnoticed.  A secret key is refused: it does not belong in a repository
    and would need an agent to import.  A weak key is refused: its
    signatures could be forged.  A revoked or expired key is *not* refused
    here: it is reported and its signatures do not count (GnuPG says so
    when verifying), but the rest of the policy still works."""
    keys = home.show_keys(data)
    if not keys:
        raise PolicyError("holds no OpenPGP public key (malformed armor?)", file=path)
    if len(keys) != 1:
        raise PolicyError(f"holds {len(keys)} primary keys; exactly one is allowed per file", file=path)
    key = keys[0]
    if key.has_secret:
        raise PolicyError("holds a SECRET key; commit only the public key (gpg --armor --export)", file=path)
    if key.fingerprint != fingerprint:
        hint = " (that is a subkey: name the file after the primary key)" if fingerprint in key.subkeys else ""
        raise PolicyError(f"holds key {key.fingerprint}, but the file is named for {fingerprint}{hint}",
                          file=path)
    for part in key.parts:
        # Subkeys that cannot sign, or can no longer sign, make no signature
        # that could count; every other one must be strong.
        if part is not key.primary and not (part.can_sign and part.usable):
            continue
        weak = weakness(part)
        if weak:
            which = "its primary key" if part is key.primary else f"its signing subkey {part.fingerprint}"
            raise PolicyError(f"{which} is {weak}; anchors need RSA of at least {MIN_RSA_BITS} bits, Ed25519/"
                              "Ed448 or ECDSA on P-256/P-384/P-521 (docs/spec/policy.md#key-strength): the "
                              "key's owner makes a new key and the policy is rotated to it", file=path)
    return key


# Minimum strength of an anchor (docs/spec/policy.md#key-strength).  A
# 1024-bit RSA or DSA key can be factored or its discrete log computed by a
# well-funded attacker, who could then sign any manifest as that anchor; DSA
# also leaks the key through a biased or reused nonce.
MIN_RSA_BITS = 3072
_RSA = {1, 2, 3}
_ECDSA_CURVES = {"nistp256", "nistp384", "nistp521"}
_EDDSA_CURVES = {"ed25519", "ed448"}
_ALGO_NAMES = {16: "Elgamal", 17: "DSA", 18: "ECDH", 19: "ECDSA", 22: "EdDSA"}


def weakness(part: KeyPart) -> str | None:
    """Why this key (part) is too weak to be an anchor, or None."""
    if part.algo in _RSA:
        return None if part.bits >= MIN_RSA_BITS else f"a {part.bits}-bit RSA key"
    if part.algo == 19:
        return None if part.curve in _ECDSA_CURVES else f"an ECDSA key on curve {part.curve or '?'}"
    if part.algo in (22, 27, 28):    # EdDSA; 27/28: Ed25519/Ed448 of RFC 9580
        return None if part.algo != 22 or part.curve in _EDDSA_CURVES else f"an EdDSA key on {part.curve or '?'}"
    return f"a {part.bits}-bit {_ALGO_NAMES.get(part.algo, f'algorithm-{part.algo}')} key"


def key_status(key: KeyInfo) -> str | None:
    """"revoked on …" / "expired on …" for a key whose signatures cannot
    count any more, else None."""
    if key.revoked:
        return "revoked" + (f" on {_day(key.revoked_at)}" if key.revoked_at else "")
    if key.expired:
        return "expired" + (f" on {_day(key.primary.expires)}" if key.primary and key.primary.expires else "")
    return None


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def import_anchors(home: Home, files: TrustFiles, policy: Policy) -> dict[str, KeyInfo]:
    """Check every anchor's key file and import it into ``home`` (a
    throwaway home that holds nothing else).  -> fingerprint -> key."""
    keys: dict[str, KeyInfo] = {}
    for role in policy.roles.values():
        for fpr in role.keys:
            keys[fpr] = import_anchor(home, files.key_file(role.name, fpr), fpr, role.digests[fpr])
    return keys


def find_pinned_key(files: TrustFiles, fingerprint: str, sha256: str) -> Path | None:
    """The key file of ``fingerprint`` whose sha256 is ``sha256``: in any
    role's folder (also keys/retired/), or kept as key-history/<sha256>.asc
    after the key file was updated.  Checking an old rotation needs the key
    as that policy version pinned it, of people who may no longer hold a
    role."""
    candidates = [files.key_history / f"{sha256}.asc"]
    if not files.keys.is_symlink() and files.keys.is_dir():
        candidates += [d / f"{fingerprint}.asc" for d in sorted(files.keys.iterdir())
                       if not d.is_symlink() and d.is_dir()]
    for p in candidates:
        if p.exists() and not p.is_symlink() and canon.sha256_bytes(_read_key_file(p)) == sha256:
            return p
    return None


def unlisted_key_files(files: TrustFiles, policy: Policy) -> list[Path]:
    """Key files in a role's folder that the policy does not list (they are
    ignored; reported so nobody thinks they count)."""
    out = []
    for role in policy.roles.values():
        d = files.keys / role.name
        if d.is_dir():
            out += [p for p in sorted(d.glob("*.asc")) if p.stem not in role.keys]
    return out


def policy_at(files: TrustFiles, current: Policy, version: int) -> Policy:
    """Policy ``version`` of this tree: the current one, or its copy in
    policy-history/ (which must say the version it is stored as)."""
    if version == current.version:
        return current
    path = files.old_policy(version)
    if not path.exists() and not path.is_symlink():
        raise PolicyError(f"missing: policy version {version} is needed to check the rotation chain up to "
                          f"version {current.version} (keep every old policy; 'quorum policy rotate' does)",
                          file=path)
    old = load(path)
    if old.version != version:
        raise PolicyError(f"says version {old.version}, but is stored as version {version}", file=path,
                          field="version")
    return old
