"""The audit verb: what the distribution's artifacts may not contain."""
from __future__ import annotations

import argparse
import json

from .lazy import lazy
from .ui import table
from ..text import printable

auditmod = lazy("quorum.audit")
treemod = lazy("quorum.tree")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit", parents=[parent], help="check artifacts: no seed files, only static ELF",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check the built artifacts of packages/ (not the bootstrap stages): no regular file may be "
                    "byte-identical to a file of any seed (seeds build the distribution, they are never "
                    "shipped in it), and every ELF file must be statically linked (no PT_INTERP, no PT_DYNAMIC).  "
                    "Environments get the seed-file check; for each environment gate, every package built in a "
                    "seed must have an identical twin built in the environment (exemptions are listed).",
        epilog="exit status: 0 clean, 1 findings, or an artifact or seed that is not built")
    p.add_argument("packages", nargs="*", metavar="NAME", help="packages to audit (default: all of packages/)")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    res = auditmod.audit(treemod.load_tree(args.tree), packages=args.packages or None)
    if args.json:
        print(json.dumps(res.to_json(), sort_keys=True))
        return 0 if res.ok else 1
    if res.findings:
        print(table([[f.package, printable(f.path), f.check, printable(f.detail)] for f in res.findings],
                    ["package", "file", "check", "detail"]))
    if res.allowed:
        print(f"{len(res.allowed)} files equal a seed file and are allowed by their package "
              "(audit.same-as-seed; text only):")
        for f in res.allowed:
            print(f"  {f.package}: {printable(f.path)} ({printable(f.detail)})")
    for m in res.missing:
        print(f"not audited: {m}")
    for g in res.seed_free:
        print(f"gate {g.gate}: {len(g.identical)} packages built again in {g.environment}, without any Debian "
              f"seed, to identical files" + (f"; {len(g.in_environment)} built in it directly" if g.in_environment
                                              else ""))
        for pkg, why in sorted(g.exempt.items()):
            print(f"  EXEMPT {pkg}: {printable(why)}")
        for m in g.missing:
            print(f"  not proven: {m}")
    print(f"{len(res.checked)} packages, {res.files} files ({res.elf_files} ELF) checked against "
          f"{res.seed_files} seed files: " + ("clean" if res.ok else f"{len(res.findings)} findings"))
    return 0 if res.ok else 1
