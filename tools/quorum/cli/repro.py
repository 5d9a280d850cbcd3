"""Verbs about reproducibility: reproduce, diff, challenge.

Exit codes shared by these verbs: 0 the same, 1 different, 2 could not
compare (unreadable input), 3 (challenge only) nothing differs but packages
are missing from some manifests.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .lazy import lazy

challenge = lazy("quorum.challenge")
diff = lazy("quorum.diff")
oci = lazy("quorum.oci")

DIFF_EPILOG = """\
A and B are OCI image layout folders (e.g. out/hello and a rebuilder's
out/hello), or bare package names, which mean out/NAME of the tree.

Output: one block per differing path: '+' added in B, '-' removed from A,
'~' changed, with the fields that changed (type, size, mode, owner, link,
sha256, mtime) and where the contents differ: a unified diff for text, the
differing ELF sections for executables, the first differing byte with a
hexdump otherwise.  Differences in the image config and annotations are
listed first.

Exit status: 0 identical, 1 different, 2 an input could not be read.
"""

CHALLENGE_EPILOG = """\
Each MANIFEST is a manifests/manifest.json from some rebuilder, labelled by
its path or, with LABEL=PATH, by LABEL.  The table shows, for every package,
the digest prefix each manifest records and a status:

  identical   all manifests list it, with the same digest
  differing   at least two manifests list different digests
              ('*' marks the cells that disagree with the majority)
  missing     the manifests that list it agree, but some do not list it

Exit status: 0 all identical, 1 some package differs, 3 a manifest could
not be read, 4 nothing differs but some packages are missing.
"""


REPRODUCE_EPILOG = """\
Which packages: the ones named; else with --all every seed and package;
else with --since REV those whose manifest entry differs from the manifest
at REV; else those changed since the newest manifest that the transparency
log (manifests/log.jsonl) shows was signed, or every package when there is
none.  A dependency whose local artifact does not match the manifest is
rebuilt (and judged) too.

Variations (reprotest's names): build_path, file_order, hostname, domain,
timezone, locale, umask, cpus, environment, clock, user.  hostname and domain
vary in every rebuild (the engine names each container anew).  A variation
that cannot act is reported as not applied, with the reason: locale when a
seed has no locale data, clock and file_order always (a container cannot
set the wall clock; the engine has no exec-able tmpfs), user for packages
with needs-root.

Verdicts: REPRODUCED (same digest), MISMATCH (built, other bytes: both
artifacts and a file-level diff are kept in out/reproduce/NAME/), FAILED
(the build, a fetch or the engine failed: never called a mismatch).

Exit status: 0 every package reproduced, 1 some mismatched, 2 some failed.
"""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    r = sub.add_parser(
        "reproduce", parents=[parent], epilog=REPRODUCE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="rebuild packages independently, with variations, and compare with the manifest",
        description="Rebuild packages with every cache bypassed (no engine layer cache, no artifact from out/) "
                    "into out/reproduce/, under varied conditions, and compare each digest with "
                    "manifests/manifest.json.")
    r.add_argument("packages", nargs="*", metavar="PKG", help="packages to rebuild (default: what changed)")
    r.add_argument("--all", action="store_true",
                   help="rebuild every seed and package from nothing (what `make clean reproduce` runs)")
    r.add_argument("--since", metavar="REV",
                   help="rebuild the packages whose manifest entries differ from the manifest at git REV")
    r.add_argument("--vary", metavar="SPEC", default=None,
                   help="variations in reprotest's syntax, e.g. '+all,-umask' or '-all,+timezone' "
                        "(default: all that apply)")
    r.add_argument("-j", "--jobs", type=int, default=1, help="packages rebuilt at once (default 1)")
    r.add_argument("--no-diffoscope", action="store_true", help="do not run diffoscope on mismatches")
    from .engines import add_pool_flags
    add_pool_flags(r, what="rebuild")
    r.add_argument("--elsewhere", action="store_true",
                   help="rebuild each package on an engine other than the one that built it (by the engine "
                        "identity recorded with each artifact); an error when the pool has no other engine")
    r.set_defaults(func=cmd_reproduce)

    p = sub.add_parser(
        "diff", parents=[parent], epilog=DIFF_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show which files of two artifacts differ, and how",
        description="Compare two artifacts file by file, without extracting anything to disk.")
    p.add_argument("a", metavar="A", help="the first artifact (layout folder or package name)")
    p.add_argument("b", metavar="B", help="the second artifact (layout folder or package name)")
    # 40 == diff.Limits.diff_lines (not read here: --help must not import diff)
    p.add_argument("--lines", type=int, default=40, metavar="N",
                   help="lines of unified diff shown per text file (default: %(default)s)")
    p.add_argument("--max-files", type=int, default=None, metavar="N",
                   help="show at most N differing paths in the text output (default: all)")
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="also write the report to DIR/diff.txt and DIR/diff.json")
    p.add_argument("--diffoscope", action="store_true",
                   help="with --save: also run diffoscope, when installed, on the two layers "
                        "(DIR/diffoscope.txt and DIR/diffoscope.html)")
    p.set_defaults(func=cmd_diff)

    c = sub.add_parser(
        "challenge", parents=[parent], epilog=CHALLENGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="compare the hash manifests of several rebuilders",
        description="Compare hash manifests from several rebuilders package by package.")
    c.add_argument("manifests", nargs="+", metavar="[LABEL=]MANIFEST",
                   help="two or more manifest.json files")
    c.add_argument("--problems-only", action="store_true",
                   help="leave identical packages out of the table (the totals still count them)")
    c.set_defaults(func=cmd_challenge)


def resolve_artifact(arg: str, tree: Path | None) -> Path:
    """A layout folder as given, else out/<arg> of the tree for a bare name."""
    p = Path(arg)
    if (p / "index.json").is_file():
        return p
    if tree is not None and "/" not in arg and (tree / "out" / arg / "index.json").is_file():
        return tree / "out" / arg
    raise diff.UnreadableError("not an OCI layout folder (no index.json)"
                          + (f", and the tree has no out/{arg}" if "/" not in arg else ""), file=arg)


def _engine_line(f: dict) -> str:
    from ..engines import EngineFacts
    from ..text import printable
    facts = EngineFacts.from_json(f)
    return printable(facts.describe()) if facts is not None else "(unreadable record)"


def cmd_reproduce(args) -> int:
    from .. import reproduce as repro
    from ..text import printable
    from ..tree import load_tree
    from .ui import event_sink, short, table
    tree = load_tree(args.tree)
    vary = repro.parse_vary(args.vary)
    sink = event_sink(args)
    try:
        from .engines import pool_from_args
        pool = pool_from_args(args, tree.config.path, jobs=max(1, args.jobs))
        res = repro.reproduce(tree, packages=args.packages or None, all_=args.all, since=args.since, vary=vary,
                              jobs=max(1, args.jobs), emit=sink, diffoscope=not args.no_diffoscope, pool=pool,
                              elsewhere=args.elsewhere)
    finally:
        sink.close()
    if args.json:
        print(json.dumps(res.to_json(), sort_keys=True))
        return res.exit_code
    for v in res.verdicts:
        if v.verdict == "MISMATCH" and v.diff_text:
            print(f"=== {v.name}: MISMATCH — what differs (saved in {v.diff_dir}) ===")
            print(v.diff_text)
    # Notes go under the table, whole: a path or an error cut at a column
    # width is a path nobody can open.
    notes: list[str] = []
    rows = []
    for v in res.verdicts:
        mark = ""
        if v.reason or v.reports or v.diffoscope_command:
            notes.append(_verdict_note(v, len(notes) + 1))
            mark = f"[{len(notes)}]"
        rows.append([v.name, short(v.expected), short(v.rebuilt), v.verdict, f"{v.seconds:.1f}",
                     printable(v.built_on or "-"), printable(v.rebuilt_on or "-"), mark])
    print(table(rows, ["package", "expected", "rebuilt", "verdict", "seconds", "built on", "rebuilt on", "note"]))
    if notes:
        print()
        print("\n".join(notes))
    print("\nvariations applied: " + ", ".join(sorted(res.applied)))
    if res.not_applied:
        print("not applied: " + "; ".join(f"{k} ({v})" for k, v in sorted(res.not_applied.items())))
    for label, facts in (("built on", res.build_engine), ("rebuilt on", res.rebuild_engine)):
        print(f"{label:10}  " + (_engine_line(facts) if facts else "(not recorded)"))
    counts = {k: sum(1 for v in res.verdicts if v.verdict == k) for k in ("REPRODUCED", "MISMATCH", "FAILED")}
    notes = "; ".join(res.notes)
    print(f"{counts['REPRODUCED']} reproduced, {counts['MISMATCH']} mismatched, {counts['FAILED']} failed "
          f"in {res.seconds:.1f}s ({notes}); report: {res.out / 'report.json'}")
    return res.exit_code


def _verdict_note(v, number: int) -> str:
    lines = [f"[{number}] {v.name}: {v.reason or v.verdict}"]
    if v.reports:
        lines.append("    reports: " + ", ".join(v.reports))
    if v.diffoscope_command:
        lines.append("    diffoscope on the two kept layers: " + v.diffoscope_command)
    return "\n".join(lines)


def cmd_diff(args: argparse.Namespace) -> int:
    if args.diffoscope and args.save is None:
        raise diff.UnreadableError("--diffoscope needs --save DIR: its reports are files")
    a = resolve_artifact(args.a, args.tree)
    b = resolve_artifact(args.b, args.tree)
    limits = diff.Limits(diff_lines=max(0, args.lines))
    result = diff.compare(a, b, limits=limits, labels=(args.a, args.b))
    if args.json:
        print(json.dumps(diff.to_json(result), sort_keys=True))
    else:
        sys.stdout.write(diff.render_text(result, max_files=args.max_files))
    if args.save is not None:
        written = diff.save(result, args.save)
        if args.diffoscope and not result.identical:
            la, lb = oci.read_layout(a)["layer_path"], oci.read_layout(b)["layer_path"]
            reports = diff.run_diffoscope(la, lb, args.save)
            if not reports:
                print("quorum: diffoscope is not installed or failed (see diffoscope.log if present)",
                      file=sys.stderr)
            written += reports
        if not args.json:
            print("saved: " + ", ".join(str(x) for x in written), file=sys.stderr)
    return 0 if result.identical else 1


def cmd_challenge(args: argparse.Namespace) -> int:
    if len(args.manifests) < 2:
        raise diff.UnreadableError("challenge needs at least two manifests to compare")
    result = challenge.challenge(challenge.load(args.manifests))
    if args.json:
        print(json.dumps(challenge.to_json(result), sort_keys=True))
    else:
        sys.stdout.write(challenge.render_table(result, problems_only=args.problems_only))
    return result.exit_code
