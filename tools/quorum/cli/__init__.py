"""The command line: a thin layer over the library.

Each verb lives in a small module of this package that registers its parser
(``register(subparsers)``) and turns library results and events into text,
tables or JSON.  No module here builds, signs or verifies anything itself.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from ..errors import QuorumError

# Verb modules, in the order their verbs appear in --help.  A module that is
# missing (work in progress on a branch) is skipped rather than breaking
# every other verb.
_VERB_MODULES = ("build", "trust", "repro", "audit", "prune")

EPILOG = """\
A tree is a folder with quorum.yaml, bootstrap/, packages/ and manifests/.
Build output goes to <tree>/out/ (never committed); sources are cached in
$XDG_CACHE_HOME/quorum/sources/.  Typical session:

  quorum build                 build everything, write manifests/manifest.json
  quorum build -j 2 hello      build one package and what it needs
  quorum graph                 print the build order, write out/graph.dot
  quorum reproduce             rebuild what changed, with variations
  quorum sign / verify         sign the manifest / check the trust policy

Run 'quorum VERB --help' for the options of each verb.
"""


def default_tree() -> Path:
    """The tree is the repository quorum is run from: $QUORUM_TREE, else the
    nearest folder upwards with a quorum.yaml, else the current folder."""
    if os.environ.get("QUORUM_TREE"):
        return Path(os.environ["QUORUM_TREE"])
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "quorum.yaml").exists():
            return d
    return here


def common_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--tree", type=Path, default=None, metavar="DIR",
                   help="the tree to work on (default: $QUORUM_TREE, else the nearest folder "
                        "upwards holding quorum.yaml)")
    p.add_argument("--json", action="store_true",
                   help="print machine-readable JSON (one object per line for events) instead of tables")
    return p


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quorum",
        description="Build a tree of package definitions into deterministic OCI artifacts, "
                    "reproduce them, and sign/verify the hash manifest against an M-of-N trust policy.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"quorum {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    parent = common_parent()
    for mod in _VERB_MODULES:
        try:
            m = importlib.import_module(f".{mod}", __name__)
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{mod}":
                continue
            raise
        m.register(sub, parent)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "tree", None) is None and "tree" in vars(args):
        args.tree = default_tree()
    try:
        rc = args.func(args)
    except QuorumError as e:
        print(f"quorum: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("quorum: interrupted; nothing half-done was published", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Leave now: a worker thread still finishing must not keep the
        # process (and so the lock it holds) alive; whatever it staged is
        # removed by the next holder of the lock.
        os._exit(130)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
