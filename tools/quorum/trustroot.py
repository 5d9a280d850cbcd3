"""This machine's trust in a tree: the pinned root and what was accepted.

A tree is known by its *trust root*: the sha256 of the policy version this
machine started trusting (normally version 1), never by the name the
repository gives itself — a name is the attacker's to choose, so keying
the memory by ``tree.name`` let a renamed repository with a foreign policy
pass as a first use.  As TUF clients ship with their root metadata, a first
use needs the root pinned beforehand (``quorum trust pin DIGEST``, or
``verify --root DIGEST``) or an explicit ``--trust-on-first-use``.

The memory lives in ``$XDG_STATE_HOME/quorum/accepted/<root sha256>.json``:
the root, and the highest serial, policy version and log head accepted.
A pin is such a file that has accepted nothing yet.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import canon, policy as policy_mod, translog
from .errors import InputError, QuorumError
from .safeio import JSON_LIMIT, loads_json, read_regular

STATE_FORMAT = "quorum.state/2"
_DIGEST_RE = re.compile(r"^(sha256:)?([0-9a-f]{64})\Z")


class TrustRootError(QuorumError):
    pass


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "quorum"


def parse_digest(text: str, what: str = "root") -> str:
    """'sha256:<hex>' or '<hex>' -> hex."""
    m = _DIGEST_RE.match(text.strip().lower())
    if not m:
        raise InputError(f"{text!r:.80} is not a policy digest (sha256:<64 hex digits>, as 'quorum verify' "
                         "prints it)", field=what)
    return m.group(2)


@dataclass
class State:
    """What this machine accepted last for the tree with this root."""
    root: str = ""                       # sha256 of the root policy
    serial: int = 0
    manifest_sha256: str | None = None
    policy_version: int | None = None    # None: pinned, nothing accepted yet
    policy_sha256: str | None = None
    log: translog.Head = field(default_factory=lambda: translog.Head(0, translog.GENESIS))

    @staticmethod
    def path(state_dir: Path, root: str) -> Path:
        return state_dir / "accepted" / f"{root}.json"

    @classmethod
    def load(cls, state_dir: Path, root: str) -> "State | None":
        p = cls.path(state_dir, root)
        if not p.exists() and not p.is_symlink():
            return None
        try:
            doc = loads_json(read_regular(p, limit=JSON_LIMIT, error=TrustRootError, what="state file"),
                             file=p, error=TrustRootError)
            if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or doc.get("root") != root:
                raise TrustRootError(f"not a {STATE_FORMAT} file for root {root}")
            log = doc.get("log") or {}
            pv = doc.get("policy_version")
            return cls(root=root, serial=int(doc.get("serial") or 0), manifest_sha256=doc.get("manifest_sha256"),
                       policy_version=int(pv) if pv is not None else None, policy_sha256=doc.get("policy_sha256"),
                       log=translog.Head(int(log.get("seq", 0)), str(log.get("hash", translog.GENESIS))))
        except (TrustRootError, ValueError, TypeError, AttributeError) as e:
            msg = e.message if isinstance(e, QuorumError) else str(e)
            raise TrustRootError(f"unreadable ({msg}); remove it to start over (this forgets what was "
                                 "accepted and the pinned root)", file=p) from None

    def save(self, state_dir: Path, tree: str = "") -> None:
        doc = {"format": STATE_FORMAT, "root": self.root, "tree": tree, "serial": self.serial,
               "manifest_sha256": self.manifest_sha256, "policy_version": self.policy_version,
               "policy_sha256": self.policy_sha256, "log": {"seq": self.log.seq, "hash": self.log.hash}}
        canon.atomic_write(self.path(state_dir, self.root), canon.dumps_pretty(doc), mode=0o600)


def pin(state_dir: Path, digest: str) -> tuple[Path, bool]:
    """Pin a root; -> (state file, whether it is new).  Pinning a root that
    is already known keeps what was accepted under it."""
    root = parse_digest(digest)
    if State.load(state_dir, root) is not None:
        return State.path(state_dir, root), False
    State(root=root).save(state_dir)
    return State.path(state_dir, root), True


@dataclass
class Root:
    """Where this machine's trust in the tree starts."""
    digest: str              # sha256 of the root policy
    version: int             # its version in this tree
    source: str              # "remembered" | "pinned" | "first use"
    state: State

    def to_json(self) -> dict:
        return {"sha256": f"sha256:{self.digest}", "version": self.version, "source": self.source}


def policy_digests(files: policy_mod.TrustFiles, current: policy_mod.Policy) -> dict[int, str]:
    """version -> sha256 of every policy version this tree holds (history
    files that are missing or broken are left out: they only matter, and
    are reported, when the rotation chain needs them)."""
    out = {current.version: current.sha256}
    for v in range(1, current.version):
        try:
            out[v] = policy_mod.policy_at(files, current, v).sha256
        except QuorumError:
            continue
    return dict(sorted(out.items()))


def find_root(state_dir: Path, files: policy_mod.TrustFiles, current: policy_mod.Policy, *,
              pinned: str | None = None, trust_on_first_use: bool = False, tree: str = "") -> Root:
    """The root this machine trusts for this tree, or TrustRootError saying
    how to pin one."""
    digests = policy_digests(files, current)
    for v, d in digests.items():
        state = State.load(state_dir, d)
        if state is not None:
            return Root(d, v, "remembered" if state.policy_version is not None else "pinned", state)
    if pinned is not None:
        want = parse_digest(pinned, "--root")
        for v, d in digests.items():
            if d == want:
                return Root(d, v, "pinned", State(root=d))
        raise TrustRootError(f"the pinned root sha256:{want} is none of this tree's policy versions ("
                             + ", ".join(f"v{v} sha256:{d}" for v, d in digests.items())
                             + "): this is not the tree you pinned, or its history was rewritten")
    # Trust on first use starts at version 1, so that every rotation after
    # it is checked (a missing version 1 is an error, not a later start).
    first = policy_mod.policy_at(files, current, 1).sha256
    if trust_on_first_use:
        return Root(first, 1, "first use", State(root=first))
    hint = _same_name_hint(state_dir, tree)
    raise TrustRootError(f"this machine trusts no root for this tree{hint}: compare policy version 1's digest "
                         f"sha256:{first} with one the project published (not from this repository), then "
                         f"'quorum trust pin sha256:{first}' — or pass --trust-on-first-use to trust it as found")


def _same_name_hint(state_dir: Path, tree: str) -> str:
    """A tree of the same name accepted before under another root is the
    likely story (a replaced policy): say so."""
    d = state_dir / "accepted"
    if not tree or d.is_symlink() or not d.is_dir():
        return ""
    for p in sorted(d.glob("*.json")):
        try:
            doc = loads_json(read_regular(p, limit=JSON_LIMIT, error=TrustRootError, what="state file"),
                             file=p, error=TrustRootError)
        except TrustRootError:
            continue
        if isinstance(doc, dict) and doc.get("tree") == tree:
            return (f" (a tree named {tree!r} was accepted before under root sha256:{doc.get('root')}: "
                    "its policy was replaced, or this is another tree using the same name)")
    return ""
