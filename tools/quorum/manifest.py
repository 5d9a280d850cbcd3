"""The hash manifest: manifests/manifest.json (docs/spec/manifest.md).

It is what people sign, so its bytes must be a pure function of what was
built: canonical JSON (sorted keys, fixed separators and indentation, UTF-8,
one trailing newline), no wall-clock time, no host, no path.  ``serial`` only
moves when a digest moves, so rebuilding an unchanged tree rewrites the same
bytes and ``git diff manifests/`` stays silent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import canon
from .errors import QuorumError
from .safeio import JSON_LIMIT, loads_json, read_regular

FORMAT = "quorum.manifest/1"


class ManifestError(QuorumError):
    pass


@dataclass(frozen=True)
class Entry:
    kind: str            # "seed" | "bootstrap" | "package"
    version: str         # package version, or for a seed seed.version(): "<N>debs-<hash of the pins>"
    digest: str          # OCI manifest digest of the artifact
    input_hash: str
    size: int            # bytes of the artifact's blobs

    def to_json(self) -> dict:
        return {"kind": self.kind, "version": self.version, "digest": self.digest,
                "input_hash": self.input_hash, "size": self.size}


@dataclass
class Manifest:
    tree: str
    entries: dict[str, Entry]
    serial: int = 1
    # Freshness and identity (issue #5): set by `quorum sign`'s release step,
    # never by a build, because they depend on the clock and the checkout.
    expires: str | None = None
    commit: str | None = None
    # Results of whole-tree checks, e.g. the bootstrap's DDC gate:
    # name -> small JSON object.
    checks: dict[str, Any] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        return {n: e.digest for n, e in self.entries.items()}

    def to_json(self) -> dict:
        tree: dict[str, Any] = {"name": self.tree}
        if self.commit:
            tree["commit"] = self.commit
        doc: dict[str, Any] = {
            "format": FORMAT,
            "tree": tree,
            "serial": self.serial,
            "artifacts": {n: e.to_json() for n, e in self.entries.items()},
        }
        if self.expires:
            doc["expires"] = self.expires
        if self.checks:
            doc["checks"] = self.checks
        return doc

    def to_bytes(self) -> bytes:
        """The canonical bytes: what is written, hashed and signed."""
        return canon.dumps_pretty(self.to_json())

    def sha256(self) -> str:
        return canon.sha256_bytes(self.to_bytes())


def parse(data: bytes, source: str = "manifest") -> Manifest:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError("not UTF-8 text", file=source) from None
    doc = loads_json(text, file=source, error=ManifestError)
    if not isinstance(doc, dict):
        raise ManifestError("expected a JSON object", file=source)
    if doc.get("format") != FORMAT:
        raise ManifestError(f"unknown format {doc.get('format')!r} (this quorum reads {FORMAT!r})",
                            file=source, field="format")
    try:
        tree = doc["tree"]
        entries = {}
        for name, e in sorted(doc.get("artifacts", {}).items()):
            entries[name] = Entry(kind=str(e["kind"]), version=str(e["version"]), digest=str(e["digest"]),
                                  input_hash=str(e["input_hash"]), size=int(e["size"]))
        serial = doc.get("serial", 1)
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
            raise ManifestError("expected a positive integer", file=source, field="serial")
        return Manifest(tree=str(tree["name"]), entries=entries, serial=serial,
                        expires=doc.get("expires"), commit=tree.get("commit"),
                        checks=dict(doc.get("checks") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ManifestError(f"malformed manifest ({e.__class__.__name__}: {e})", file=source) from None


def load(path: Path) -> Manifest | None:
    if not path.exists() and not path.is_symlink():
        return None
    return parse(read_regular(path, limit=JSON_LIMIT, error=ManifestError, what="manifest"), str(path))


def updated(previous: Manifest | None, tree: str, entries: dict[str, Entry],
            checks: dict[str, Any] | None = None) -> Manifest:
    """The manifest after a full build.  Serial, expiry and commit carry over
    while the digests are unchanged, so an unchanged tree yields the same
    bytes; any digest change bumps the serial and drops expiry and commit
    (they belonged to the release that the old digests were)."""
    new = Manifest(tree=tree, entries=dict(sorted(entries.items())), checks=checks or {})
    if previous is None:
        return new
    if previous.digests() == new.digests() and previous.tree == tree:
        new.serial, new.expires, new.commit = previous.serial, previous.expires, previous.commit
    else:
        new.serial = previous.serial + 1
    return new


def write(path: Path, manifest: Manifest) -> bool:
    """Write atomically; returns True if the bytes changed."""
    data = manifest.to_bytes()
    if path.exists() and path.read_bytes() == data:
        return False
    canon.atomic_write(path, data)
    return True
