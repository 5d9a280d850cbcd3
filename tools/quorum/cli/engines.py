"""The engine pool on the command line: the --engine/--engine-label flags
that build and reproduce share, and `quorum engines`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..text import printable
from .lazy import lazy

endpoints = lazy("quorum.endpoints")
poolmod = lazy("quorum.pool")


def add_pool_flags(p: argparse.ArgumentParser, *, what: str = "build") -> None:
    p.add_argument("--engine", action="append", default=[], metavar="URL[,slots=N][,label=K=V]...",
                   help=f"{what} on this engine (repeatable: a pool): unix:///PATH (Docker, or Podman's "
                        "'podman system service' socket), tcp://HOST:2376 with TLS, or ssh://USER@HOST; "
                        "default: quorum.yaml's engines:, else $XDG_CONFIG_HOME/quorum/engines.yaml, else "
                        "the local engine (docs/farm.md, docs/spec/engines.md)")
    p.add_argument("--engine-label", action="append", default=[], metavar="KEY=VALUE",
                   help="use only the engines with this label (repeatable: all must match), e.g. cpu=amd")


def pool_from_args(args, tree_root: Path, jobs: int | None = None):
    """The pool a verb runs on.  Nothing connects yet: a no-op build never
    reaches an engine."""
    specs = endpoints.load_specs(tree_root, list(args.engine))
    labels = [poolmod.parse_label(t) for t in args.engine_label]
    return poolmod.from_specs(specs, labels=labels, jobs=jobs)


def register(sub, parent) -> None:
    p = sub.add_parser("engines", parents=[parent], help="list the engines of the pool with facts, health, slots",
                       description="List the engines builds would use (the same sources and precedence as "
                                   "`quorum build`), ask each for its facts (kind, version, OS, kernel, CPU, "
                                   "identity) and show whether it answers and its free slots.  Exit status 2 "
                                   "when an engine does not answer.")
    add_pool_flags(p, what="list")
    p.set_defaults(func=cmd_engines)


def cmd_engines(args) -> int:
    from .ui import table
    pool = pool_from_args(args, args.tree)
    rows, docs = [], []
    for m in pool.members:
        ok = m.engine.answers(timeout=5)
        if not ok:
            pool.mark_unhealthy(m, "does not answer")
        doc = m.to_json()
        docs.append(doc)
        f = m.facts() if ok else None
        rows.append([m.name, m.engine.endpoint, m.health(), f"{m.free}/{m.slots}",
                     ",".join(f"{k}={v}" for k, v in m.labels) or "-",
                     f"{f.kind} {f.version}" if f else "-", f"{f.os}, {f.kernel}" if f else "-",
                     f"{f.cpus} x {f.cpu}" if f else "-", (f.identity[:24] if f else "-")])
    if args.json:
        print(json.dumps({"engines": docs}, sort_keys=True))
    else:
        # Engine answers are the engine's words: escaped like any untrusted text.
        print(table([[printable(str(c)) for c in r] for r in rows],
                    ["name", "endpoint", "health", "free", "labels", "engine", "os", "cpu", "identity"]))
    return 0 if all(m.healthy for m in pool.members) else 2
