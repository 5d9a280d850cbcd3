"""The prune verb: remove quorum's leftover engine images."""
from __future__ import annotations

import argparse
import json

from .lazy import lazy
from .ui import short

enginemod = lazy("quorum.engine")
prunemod = lazy("quorum.prune")


def register(sub, parent) -> None:
    p = sub.add_parser(
        "prune", parents=[parent], help="remove engine images quorum's builds left behind",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Remove the engine images that quorum builds made and did not get to remove: the last "
                    "image of a build or smoke test that was killed, interrupted or lost its engine.  Each "
                    "carries the label org.quorum.build naming the quorum process that made it; images of a "
                    "process still running on this machine are kept.  Nothing else is touched: the layer "
                    "cache (shared by every checkout and build on the engine), the artifacts loaded for "
                    "dependents, and anything not made by quorum stay.  A build removes its own images as it "
                    "goes, so this is only needed after a crash.",
        epilog="examples:\n"
               "  quorum prune --dry-run      list what would go\n"
               "  quorum prune                remove it\n"
               "  DOCKER_HOST=tcp://builder:2375 quorum prune   on another engine\n"
               "the layer cache is the engine's: 'docker builder prune' / 'docker image prune -a' clear it "
               "for everyone.\n"
               "exit status: 0 done, 1 some image could not be removed now (in use), 2 the engine failed")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(func=cmd_prune)


def cmd_prune(args) -> int:
    res = prunemod.prune(enginemod.Engine(), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(res.to_json(), sort_keys=True))
        return 1 if res.failed else 0
    verb = "would remove" if res.dry_run else "removed"
    for x in res.removed:
        print(f"{verb} {short(x.image)} and {len(x.images) - 1} image(s) under it, left by {x.owner}")
    for x in res.kept:
        print(f"kept {short(x.image)}: {x.owner} is still running")
    for img in res.failed:
        print(f"could not remove {short(img)} now (in use?); run 'quorum prune' again later")
    print(f"{verb} {res.images_removed} image(s) of {len(res.removed)} quorum build(s); "
          f"{len(res.kept)} kept, {len(res.failed)} not removable now")
    return 1 if res.failed else 0
