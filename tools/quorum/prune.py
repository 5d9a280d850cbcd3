"""Removing what quorum's builds left in the engine (`quorum prune`).

A build removes its own engine images as it goes (Engine.release); what a
crash, a kill or a lost engine left behind is found here by the label every
build's last image carries (engine.OWNER_LABEL), and removed with the images
under it that the same build made.  Images of a quorum process still
running (by the PID in the owner token, on this host) are left alone, and
so is everything that is not provably quorum's own: the shared layer cache,
loaded artifacts, other people's images.  docs/spec/engine-images.md says
why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .engine import Engine, owner_alive
from .errors import EngineError


@dataclass(frozen=True)
class Leftover:
    image: str                 # the labelled image
    owner: str                 # its owner token
    images: tuple[str, ...]    # it and the images under it the same build made, child first


@dataclass
class PruneResult:
    removed: list[Leftover] = field(default_factory=list)
    kept: list[Leftover] = field(default_factory=list)     # owner still running
    failed: list[str] = field(default_factory=list)       # images the engine would not remove now
    dry_run: bool = False

    @property
    def images_removed(self) -> int:
        return sum(len(x.images) for x in self.removed)

    def to_json(self) -> dict:
        return {"dry_run": self.dry_run, "removed": [asdict(x) for x in self.removed],
                "kept": [asdict(x) for x in self.kept], "failed": self.failed,
                "images_removed": self.images_removed}


def prune(engine: Engine, *, dry_run: bool = False) -> PruneResult:
    res = PruneResult(dry_run=dry_run)
    for image, owner in engine.labelled_images():
        try:
            chain = engine.owned_chain(image, owner)
        except EngineError:
            continue      # removed meanwhile by the build that made it
        leftover = Leftover(image=image, owner=owner, images=tuple(chain))
        if owner_alive(owner):
            res.kept.append(leftover)
            continue
        if not dry_run and engine.release(image, owner) < len(leftover.images):
            res.failed.append(image)
            continue
        res.removed.append(leftover)
    return res
