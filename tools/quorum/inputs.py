"""Input hashes: the identity of a build before it runs.

An input hash covers everything that may change an artifact's bytes and
nothing that may not.  In: quorum's FORMAT_VERSION, the definition, the
rendered Containerfile and scripts, the package's files (content and
executable bit), source hashes, the digests of dependencies and seed, and
SOURCE_DATE_EPOCH.  Out: paths of the checkout, the machine, the time, the
number of jobs (passed as a build argument so that -j does not rebuild).
"""
from __future__ import annotations

from typing import Any

from . import FORMAT_VERSION, canon
from .model import Package, Seed
from .render import Rendered, file_hashes
from .seed import input_fields


def package_input_hash(pkg: Package, rendered: Rendered, *, seed_digest: str | None,
                       dep_digests: dict[str, str], epoch: int) -> str:
    doc = {
        "quorum": FORMAT_VERSION,
        "kind": pkg.kind,
        "name": pkg.name,
        "version": pkg.version,
        # The definition as parsed (sorted keys), so that re-indenting the
        # YAML or reordering its keys does not rebuild, while any value does.
        # Left out: the description, the audit allowances (they judge the
        # output, they do not shape it), and the sources' URLs and origins (a new
        # mirror changes where bytes come from, never which bytes: those are
        # the sha256s below).
        "definition": _plain({k: v for k, v in pkg.raw.items() if k not in ("description", "sources", "audit")}),
        "containerfile": rendered.containerfile,
        "build_sh": rendered.build_sh,
        "test_sh": rendered.test_sh,
        "files": file_hashes(pkg),
        "sources": [[s.file, s.sha256] for s in pkg.sources],
        "seed": seed_digest,
        "deps": dict(sorted(dep_digests.items())),
        "epoch": epoch,
    }
    return "sha256:" + canon.sha256_bytes(canon.dumps(doc))


def seed_input_hash(seed: Seed, epoch: int) -> str:
    doc = {"quorum": FORMAT_VERSION, "name": seed.name, **input_fields(seed, epoch)}
    return "sha256:" + canon.sha256_bytes(canon.dumps(doc))


def _plain(v: Any) -> Any:
    """YAML values reduced to JSON types (dates and the like become strings)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)
