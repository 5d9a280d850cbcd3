"""`quorum report`: the static dashboard (docs/report.md)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .lazy import lazy

reportmod = lazy("quorum.report")

EPILOG = """\
Reads, never changes: the tree, manifests/manifest.json, out/ (records,
logs, out/reproduce/report.json, out/attest/NAME/), challenge manifests,
the policy, signatures and log (verify with nothing recorded: this
machine's accepted serial stays as it was) and the audit.  What was never
measured is shown as "unknown" or "not yet".

Challenge manifests: each FILE given with --challenge (LABEL=PATH or PATH),
else every manifests/rebuilders/*.json (labelled by its file name).

Examples:
  quorum report                          write out/report/ (open index.html)
  quorum report --challenge ci=ci.json   add a rebuilder's manifest as a column
  quorum report --history v1..HEAD      also history.html: digests per commit
  quorum report --graph-only             only out/graph.dot and out/graph.svg

Exit status: 0 written; 2 graphviz failed; 3 an input (a challenge
manifest, the tree, the git range) cannot be used.
"""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", parents=[parent], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="write a static HTML dashboard of the tree to out/report/",
                       description="Write a static site (index.html, one page per package, the graph as SVG) "
                                   "saying for each package whether it is built, reproduced, by whom, and who "
                                   "signed the manifest.")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="where to write the site (default out/report)")
    p.add_argument("--challenge", nargs="+", default=None, metavar="FILE",
                   help="rebuilders' manifests to compare, as LABEL=PATH or PATH "
                        "(default: manifests/rebuilders/*.json)")
    p.add_argument("--history", default=None, metavar="RANGE",
                   help="a git revision range (e.g. HEAD~20..HEAD): also write history.html")
    p.add_argument("--root", default=None, metavar="DIGEST",
                   help="the trust root to judge signatures from (default: the one pinned on this "
                        "machine, else the policy as found, which the report says)")
    p.add_argument("--no-audit", action="store_true", help="do not read the artifacts to audit them")
    p.add_argument("--graph-only", action="store_true",
                   help="only write out/graph.dot and out/graph.svg (what `make graph` draws)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    root = Path(args.tree)
    if args.graph_only:
        site = reportmod.collect(root, challenges=args.challenge, pinned_root=args.root, audit=False)
        svg = reportmod.write_graph(site, root / "out")
        if args.json:
            print(json.dumps({"ok": True, "dot": str(root / "out" / "graph.dot"),
                              "svg": str(svg) if svg else None}, sort_keys=True))
        else:
            print(f"graph written to {svg or root / 'out' / 'graph.dot'}"
                  + ("" if svg else " (graphviz is not installed: DOT only)"))
        return 0
    site = reportmod.collect(root, challenges=args.challenge, pinned_root=args.root, history=args.history,
                             audit=not args.no_audit)
    dest = args.out or root / "out" / "report"
    files = reportmod.write(site, dest)
    counts: dict[str, int] = {}
    for n in site.nodes.values():
        counts[n.status] = counts.get(n.status, 0) + 1
    if args.json:
        print(json.dumps({"ok": True, "out": str(dest), "files": len(files), "status": counts,
                          "trust_ok": site.trust.ok if site.trust.checked else None}, sort_keys=True))
    else:
        summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        print(f"report written to {dest}/index.html: {len(site.nodes)} nodes ({summary})")
    return 0
