"""Verbs that build or describe the tree: build, graph, fetch, seed."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import QuorumError
from ..text import printable
from .engines import add_pool_flags, pool_from_args
from .lazy import lazy
from .ui import event_sink, short, table

buildlib = lazy("quorum.build")
graphmod = lazy("quorum.graph")
seedmod = lazy("quorum.seed")
fetchmod = lazy("quorum.fetch")
treemod = lazy("quorum.tree")


# Up to this many nodes the result table lists every node.
TABLE_ALL_ROWS = 40


def register(sub, parent) -> None:
    p = sub.add_parser(
        "build", parents=[parent], help="build the tree (or some packages) into out/ and write the manifest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build seeds and packages in dependency order on the Docker engine, network off, each into "
                    "a deterministic OCI layout out/<name>/.  A package whose input hash already has a whole "
                    "artifact in out/ is not rebuilt.  After a successful build of the whole tree, "
                    "manifests/manifest.json is rewritten (atomically; byte-identical if no digest changed).",
        epilog="examples:\n  quorum build                 everything\n"
               "  quorum build -j 2 lua        lua and what it needs (manifest untouched)\n"
               "  quorum build --archive lua   also write out/lua.tgz (podman load / skopeo oci-archive:)\n"
               "  quorum build --no-cache      rebuild all; a new digest for unchanged inputs is reported\n"
               "exit status: 0 built, 1 a package failed or rebuilt to another digest from the same inputs,\n"
               "  2 the engine or machine failed, 3 a definition or argument is wrong (docs/exit-codes.md)")
    p.add_argument("targets", nargs="*", metavar="NAME", help="packages or seeds to build (default: all)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="packages built at once on a single engine (default: its slots, 1 unless configured); "
                        "a pool of several runs as many as the slots of its engines")
    add_pool_flags(p)
    p.add_argument("-k", "--keep-going", action="store_true",
                   help="after a failure, still build everything that does not depend on it")
    p.add_argument("--archive", action="append", default=[], metavar="NAME",
                   help="also write out/NAME.tgz, a single-file OCI archive (repeatable; implies NAME as target)")
    p.add_argument("--no-cache", action="store_true",
                   help="rebuild even when out/ has the artifact, and without the engine's layer cache")
    p.add_argument("--accept-new-digests", action="store_true",
                   help="write the manifest even where a package's inputs are unchanged but its digest is "
                        "not (normally that nondeterminism is reported, the manifest kept, and exit 1)")
    p.add_argument("-v", "--verbose", action="store_true", help="show build logs as they run")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("graph", parents=[parent], help="print the build order and write out/graph.dot",
                       description="Validate the tree, print the build order (with each node's dependencies) "
                                   "and write the graph as DOT to out/graph.dot (or --dot FILE).")
    p.add_argument("--dot", default=None, metavar="FILE", help="where to write the DOT file (default out/graph.dot)")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("fetch", parents=[parent], help="fill the source cache for offline builds",
                       description="Fetch every source (and every seed's .debs) into the content-addressed cache "
                                   "$XDG_CACHE_HOME/quorum/sources/sha256/, checking each against its pinned "
                                   "sha256.  Afterwards builds need no network.")
    p.add_argument("--all-origins", action="store_true",
                   help="fetch from every origin that answers and require them to agree")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("seed", parents=[parent], help="manage seeds (lock)")
    ssub = p.add_subparsers(dest="seed_verb", metavar="ACTION")
    lp = ssub.add_parser("lock", parents=[parent], help="pin a seed's request to the current Debian closure",
                         description="Resolve the seed's request: list through this machine's apt configuration "
                                     "(on an empty system, no recommends) and rewrite its packages: list with "
                                     "names, versions and sha256s.  Run it when the archive dropped a pinned "
                                     "version; commit the result.")
    lp.add_argument("seeds", nargs="*", metavar="SEED", help="seeds to lock (default: all)")
    lp.set_defaults(func=cmd_seed_lock)
    p.set_defaults(func=lambda a: (p.print_help(), 3)[1])


def _exit_code(result) -> int:
    if result.ok:
        return 0
    if not result.failed():
        return 1   # a gate failed
    return 2 if any(n.failure in ("engine", "machine", "internal") for n in result.failed()) else 1


def cmd_build(args) -> int:
    tree = treemod.load_tree(args.tree)
    targets = tuple(dict.fromkeys(list(args.targets) + list(args.archive)))
    pool = pool_from_args(args, tree.config.path, jobs=max(1, args.jobs) if args.jobs else None)
    opts = buildlib.Options(jobs=pool.slots, targets=targets, keep_going=args.keep_going,
                            archives=tuple(args.archive), reuse=not args.no_cache, nocache=args.no_cache,
                            accept_new_digests=args.accept_new_digests)
    sink = event_sink(args, verbose=args.verbose)
    try:
        result = buildlib.build(tree, pool=pool, options=opts, emit=sink)
    finally:
        sink.close()
    if args.json:
        print(json.dumps({"ok": result.ok, "seconds": round(result.seconds, 3),
                          "manifest_changed": result.manifest_changed,
                          "nondeterministic": [d.to_json() for d in result.drifted],
                          "nodes": [result.nodes[n].to_json() for n in result.order]}, sort_keys=True))
        return _exit_code(result)
    rows = []
    # A large tree's table shows what happened, not the hundreds of nodes
    # that were already up to date.
    elide = len(result.order) > TABLE_ALL_ROWS and not args.verbose
    for n in result.order:
        r = result.nodes[n]
        if elide and r.status == "cached":
            continue
        rows.append([n, r.kind, r.version, short(r.digest), r.status,
                     f"{r.seconds:.1f}" if r.status == "built" else "", r.engine or "-"])
    if rows:
        print(table(rows, ["name", "kind", "version", "digest", "status", "seconds", "engine"]))
    if elide:
        print(f"({sum(1 for r in result.nodes.values() if r.status == 'cached')} cached nodes not listed; "
              "-v lists every node)")
    for r in result.failed():
        print(f"\n{r.name} failed ({r.failure}): {printable(str(r.error))}", file=sys.stderr)
        if r.log_tail:
            print("  last lines of the log:", file=sys.stderr)
            for line in r.log_tail:
                print(f"  | {printable(line)}", file=sys.stderr)
        if r.log_path:
            print(f"  full log: {r.log_path}", file=sys.stderr)
    for gname, gate in sorted(result.gates.items()):
        members = ", ".join(f"{m} {short(d)}" for m, d in gate["digests"].items())
        if gate["result"] == "pass":
            print(f"gate {gname}: pass — identical: {members}")
        else:
            print(f"\ngate {gname}: FAIL — these must be bit-identical and are not: {members}", file=sys.stderr)
            for line in gate.get("differences", []):
                print(f"  differing files: {printable(line)}", file=sys.stderr)
            # An environment gate cannot hold back its own members (the
            # environment is made of them): it holds what is built in it.
            held = (f"nothing built in {gate['environment']} was built" if gate.get("kind") == "environment"
                    else "nothing built on them was built")
            print(f"  {held}; see `quorum diff` for the full comparison", file=sys.stderr)
    if result.drifted:
        print(f"\nNONDETERMINISTIC: {len(result.drifted)} package(s) rebuilt from unchanged inputs to another "
              "digest than the manifest's:", file=sys.stderr)
        for d in result.drifted:
            print(f"  {d.name}: manifest {short(d.manifest_digest)}, now {short(d.new_digest)} "
                  f"(input {short(d.input_hash)})", file=sys.stderr)
        print("  the manifest was NOT rewritten.  Find the cause with 'quorum reproduce NAME' (it keeps both "
              "artifacts and diffs them); rerun with --accept-new-digests only if the new digests are the "
              "ones to publish.", file=sys.stderr)
    built = sum(1 for r in result.nodes.values() if r.status == "built")
    cached = sum(1 for r in result.nodes.values() if r.status == "cached")
    summary = f"{built} built, {cached} cached, {len(result.failed())} failed in {result.seconds:.1f}s"
    if result.manifest_path is not None:
        summary += "; manifest " + ("updated: " if result.manifest_changed else "unchanged: ") + str(result.manifest_path)
    elif result.ok and targets:
        summary += "; manifest not written (only a full build writes it)"
    print(summary)
    return _exit_code(result)


def cmd_graph(args) -> int:
    tree = treemod.load_tree(args.tree)
    g = graphmod.build_graph(tree)
    order = graphmod.order(g)
    dot = args.dot or str(tree.out / "graph.dot")
    from pathlib import Path
    graphmod.write_dot(g, Path(dot))
    if args.json:
        print(json.dumps({"order": order, "edges": sorted([a, b] for a, b in g.edges), "dot": dot}, sort_keys=True))
        return 0
    rows = [[i + 1, n, g.nodes[n]["kind"], ", ".join(sorted(g.predecessors(n))) or "-"] for i, n in enumerate(order)]
    print(table(rows, ["#", "name", "kind", "built on"]))
    print(f"\n{len(order)} nodes, {g.number_of_edges()} edges; DOT written to {dot}")
    return 0


def cmd_fetch(args) -> int:
    tree = treemod.load_tree(args.tree)
    cache = fetchmod.SourceCache()
    sink = event_sink(args)
    n = 0
    try:
        for s in tree.seeds.values():
            if s.locked:
                n += len(seedmod.fetch_debs(s, cache, emit=sink))
        for p in tree.packages.values():
            for src in p.sources:
                # verify: 'quorum fetch' is how a user checks the cache, so
                # every cached file is re-hashed, and a corrupt one replaced.
                cache.fetch(src, emit=sink, where=str(p.definition_file), all_origins=args.all_origins,
                            verify=True)
                n += 1
    finally:
        sink.close()
    print(f"{n} files in the cache at {cache.dir}, each checked against its sha256")
    return 0


def cmd_seed_lock(args) -> int:
    tree = treemod.load_tree(args.tree)
    names = args.seeds or sorted(tree.seeds)
    cache = fetchmod.SourceCache()
    for name in names:
        if name not in tree.seeds:
            raise QuorumError(f"no seed named {name!r} (known: {', '.join(sorted(tree.seeds)) or 'none'})")
        s = tree.seeds[name]
        debs = seedmod.lock(s, cache)
        old = {d.name: d.version for d in s.debs}
        seedmod.write_lock(s, debs)
        changed = [d for d in debs if old.get(d.name) != d.version]
        total = sum(d.size or 0 for d in debs)
        print(f"{name}: {len(debs)} packages, {total / 1e6:.1f} MB of .debs; "
              f"{len(changed)} new or changed pins" + (f" ({', '.join(d.name for d in changed[:6])}"
                                                       f"{', …' if len(changed) > 6 else ''})" if changed else ""))
    return 0
