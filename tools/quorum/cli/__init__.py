"""The command line: a thin layer over the library.

Each verb lives in a small module of this package that registers its parser
(``register(subparsers)``) and turns library results and events into text,
tables or JSON.  No module here builds, signs or verifies anything itself.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path

from ..errors import QuorumError, describe_os_error
from ..text import printable

# Exit codes, the same for every verb (docs/exit-codes.md).
EXIT_OK, EXIT_FAILED, EXIT_INFRA, EXIT_USAGE = 0, 1, 2, 3
EXIT_INTERNAL = 70     # sysexits' EX_SOFTWARE: a bug in quorum

# Verb modules, in the order their verbs appear in --help.  A module that is
# missing (work in progress on a branch) is skipped rather than breaking
# every other verb.
_VERB_MODULES = ("build", "engines", "trust", "repro", "audit", "report", "prune")

EPILOG = """\
A tree is a folder with quorum.yaml, bootstrap/, packages/ and manifests/.
Build output goes to <tree>/out/ (never committed); sources are cached in
$XDG_CACHE_HOME/quorum/sources/.  Typical session:

  quorum build                 build everything, write manifests/manifest.json
  quorum build -j 2 hello      build one package and what it needs
  quorum graph                 print the build order, write out/graph.dot
  quorum engines               list the engines builds run on (docs/farm.md)
  quorum reproduce             rebuild what changed, with variations
  quorum sign / verify         sign the manifest / check the trust policy

Run 'quorum VERB --help' for the options of each verb.

Exit status, for every verb: 0 ok; 1 a package failed or a check said no;
2 the engine or the machine failed; 3 a definition, file or argument is
wrong (docs/exit-codes.md).
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


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; quorum's 2 means the engine or
    the machine failed, so a bad argument exits 3 like any input error."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)}\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="quorum",
        description="Build a tree of package definitions into deterministic OCI artifacts, "
                    "reproduce them, and sign/verify the hash manifest against an M-of-N trust policy.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"quorum {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
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
        return EXIT_USAGE
    if getattr(args, "tree", None) is None and "tree" in vars(args):
        args.tree = default_tree()
    # SIGTERM (a CI timeout, systemd, kill) unwinds like an exception, so
    # every `finally` runs: temporary GnuPG homes, staging folders and
    # temp files are removed, locks released.
    try:
        signal.signal(signal.SIGTERM, _terminated)
    except ValueError:
        pass   # not the main thread (a library caller): it handles signals itself
    try:
        rc = args.func(args)
    except QuorumError as e:
        # The message may quote a definition's values or a file name:
        # escaped, so a planted escape sequence cannot rewrite the screen.
        print(f"quorum: error: {printable(str(e))}", file=sys.stderr)
        _json_error(args, str(e), e.exit_code, file=e.file, field=e.field)
        return e.exit_code
    except KeyboardInterrupt:
        print("quorum: interrupted; nothing half-done was published", file=sys.stderr)
        _exit_now(130)
    except Terminated:
        print("quorum: terminated; nothing half-done was published", file=sys.stderr)
        _exit_now(143)
    except BaseException as e:   # noqa: BLE001 - the last line of defence: never a traceback
        if isinstance(e, SystemExit):
            raise
        if os.environ.get("QUORUM_DEBUG"):
            raise
        msg, code = describe_unexpected(e)
        print(f"quorum: error: {printable(msg)}", file=sys.stderr)
        _json_error(args, msg, code)
        return code
    return int(rc or 0)


def _json_error(args, message: str, code: int, *, file: str | None = None, field: str | None = None) -> None:
    """With --json, an error is a JSON object on stdout too: a script that
    parses stdout must not get an empty string (and then a parse error of
    its own) exactly when something went wrong."""
    if getattr(args, "json", False):
        import json
        print(json.dumps({"ok": False, "error": message, "exit_code": code, "file": file, "field": field},
                         sort_keys=True))


def _exit_now(code: int) -> None:
    """Leave at once: a worker thread still finishing must not keep the
    process (and so the lock it holds) alive; whatever it staged is removed
    by the next holder of the lock.  The main thread's finally-blocks have
    run by the time the exception reached main()."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Terminated(BaseException):
    """SIGTERM, raised where the process was, so cleanups run."""


def _terminated(signum, frame) -> None:
    raise Terminated()


def describe_unexpected(e: BaseException) -> tuple[str, int]:
    """One line and an exit code for an exception no room of quorum turned
    into a QuorumError: the file system's (full disk, permissions, a folder
    where a file belongs), or a bug in quorum, said as such."""
    if isinstance(e, OSError):
        return describe_os_error(e)
    if isinstance(e, MemoryError):
        return "out of memory (an input far larger than expected?)", EXIT_INFRA
    if isinstance(e, RecursionError):
        return "input nested too deeply", EXIT_USAGE
    return (f"internal error (a bug in quorum, please report it): {type(e).__name__}: {e}; "
            "rerun with QUORUM_DEBUG=1 for the traceback", EXIT_INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
