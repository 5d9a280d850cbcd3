"""Environments: build environments assembled from the tree's own artifacts
(docs/spec/environment.md).

An environment is made like a seed, from files rather than by running
anything: the members' layers are merged in the order of ``members`` by the
seed's union (a path two members provide differently is an error naming
both), the seed's base folders and the environment's symlinks are added,
and the result is normalised like any artifact layer.  Its bytes therefore
depend only on the members' layers, the definition and SOURCE_DATE_EPOCH.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from . import FORMAT_VERSION, canon
from .model import Environment
from .seed import BASE_DIRS, Union


def version(env: Environment) -> str:
    """``<N>members-<h>``: like a seed's version, it names the definition
    (the digest names the bytes) and is known before anything is built."""
    doc = [list(env.members), [list(s) for s in env.symlinks]]
    return f"{len(env.members)}members-{canon.sha256_bytes(canon.dumps(doc))[:12]}"


def input_hash(env: Environment, member_digests: dict[str, str], epoch: int) -> str:
    """Everything the environment's bytes depend on.  Member order is kept:
    it decides whose directory metadata a shared folder takes."""
    doc = {
        "quorum": FORMAT_VERSION,
        "kind": "environment",
        "name": env.name,
        "members": [[m, member_digests[m]] for m in env.members],
        "symlinks": [list(s) for s in env.symlinks],
        "base_dirs": sorted(BASE_DIRS.items()),
        "epoch": epoch,
    }
    return "sha256:" + canon.sha256_bytes(canon.dumps(doc))


def merge(env: Environment, member_layers: list[tuple[str, Path]], raw_out: Path) -> None:
    """The union of the members' layers (``(member, layer tar)`` in the
    order of ``members``), the base folders and the symlinks, as one tar
    (not yet normalised)."""
    with tarfile.open(raw_out, "w", format=tarfile.GNU_FORMAT) as out:
        union = Union(out, file=env.definition_file, field="members", what="the environment")
        for name, layer in member_layers:
            with tarfile.open(layer, "r:") as tf:
                union.add(name, tf)
        union.finish(env.symlinks)
