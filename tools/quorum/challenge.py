"""Compare hash manifests from several rebuilders (``quorum challenge``).

Each rebuilder publishes the manifest of what it built.  Laid side by side,
they answer the question that matters before anyone signs: does every
package come out bit for bit the same wherever it is built?  For each package
the digests of all manifests that list it are compared:

identical   every manifest that lists it agrees (and all list it)
differing   at least two manifests disagree: somebody's build is not
            reproducible, or somebody's machine is compromised
missing     all that list it agree, but some manifests do not list it

A differing package whose input hashes differ too was built from different
inputs (usually a dependency that itself differs): the place to look is the
first package in build order that differs with *equal* inputs.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from tabulate import tabulate

from . import manifest as manifest_mod
from .diff import UnreadableError, printable
from .manifest import Manifest
from .safeio import JSON_LIMIT, read_regular

IDENTICAL, DIFFERING, MISSING = "identical", "differing", "missing"

# Exit codes of `quorum challenge` (documented in its --help and in
# docs/reproduce.md).  Missing packages get their own code because they are
# a gap in coverage, not evidence of a non-reproducible build.
EXIT_IDENTICAL = 0
EXIT_DIFFERING = 1
EXIT_UNREADABLE = 3      # = diff.UnreadableError.exit_code: an input error
EXIT_MISSING = 4

PREFIX = 12  # hex digits shown per digest; grown if two digests share them


@dataclass(frozen=True)
class Row:
    name: str
    status: str                       # IDENTICAL | DIFFERING | MISSING
    digests: tuple[str | None, ...]   # one per manifest, in label order; None: not listed
    minority: tuple[bool, ...]        # cells that disagree with the majority (all, if there is none)
    versions: tuple[str | None, ...]
    inputs_differ: bool               # input hashes of the listing manifests are not all equal


@dataclass
class ChallengeResult:
    labels: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        c = Counter(r.status for r in self.rows)
        return {"packages": len(self.rows), IDENTICAL: c[IDENTICAL], DIFFERING: c[DIFFERING],
                MISSING: c[MISSING]}

    def per_manifest(self) -> dict[str, dict[str, int]]:
        """Per rebuilder: packages it lacks, and cells where it disagrees
        with the majority; a rebuilder that disagrees everywhere is the one
        to look at first."""
        out = {}
        for i, label in enumerate(self.labels):
            out[label] = {"missing": sum(1 for r in self.rows if r.digests[i] is None),
                          "disagrees": sum(1 for r in self.rows if r.minority[i])}
        return out

    @property
    def exit_code(self) -> int:
        t = self.totals()
        if t[DIFFERING]:
            return EXIT_DIFFERING
        if t[MISSING]:
            return EXIT_MISSING
        return EXIT_IDENTICAL


# --- input ------------------------------------------------------------------

def parse_spec(spec: str) -> tuple[str, Path]:
    """``LABEL=PATH`` or ``PATH`` (labelled by itself).  A path that exists
    is taken whole even if it contains '=', and a label may not contain '/',
    so ``out/a=b.json`` stays a path."""
    label, sep, path = spec.partition("=")
    if sep and label and path and "/" not in label and not Path(spec).exists():
        return label, Path(path)
    return spec, Path(spec)


def load(specs: list[str]) -> dict[str, Manifest]:
    """label -> Manifest, in the order given.  Raises UnreadableError (exit
    code 2) for a missing or malformed file or a label used twice."""
    out: dict[str, Manifest] = {}
    for spec in specs:
        label, path = parse_spec(spec)
        if label in out:
            raise UnreadableError(f"label {label!r} is used twice; name the manifests with LABEL=PATH")
        data = read_regular(path, limit=JSON_LIMIT, error=UnreadableError, what="manifest")
        try:
            out[label] = manifest_mod.parse(data, str(path))
        except manifest_mod.ManifestError as e:
            raise UnreadableError(e.message, file=e.file, field=e.field) from None
    return out


# --- comparing ----------------------------------------------------------------

def _minority(digests: tuple[str | None, ...]) -> tuple[bool, ...]:
    """Cells outside the unique largest group of equal digests.  With a tie
    (two rebuilders, two answers) nobody is the majority, so every present
    cell is marked: the table must not suggest who is right."""
    groups = Counter(d for d in digests if d is not None)
    if len(groups) < 2:
        return tuple(False for _ in digests)
    (top, n), *rest = groups.most_common()
    if rest and rest[0][1] == n:
        return tuple(d is not None for d in digests)
    return tuple(d is not None and d != top for d in digests)


def _row(name: str, manifests: list[Manifest]) -> Row:
    entries = [m.entries.get(name) for m in manifests]
    digests = tuple(e.digest if e else None for e in entries)
    present = {d for d in digests if d is not None}
    if len(present) > 1:
        status = DIFFERING
    elif None in digests:
        status = MISSING
    else:
        status = IDENTICAL
    inputs = {e.input_hash for e in entries if e}
    return Row(name=name, status=status, digests=digests, minority=_minority(digests),
               versions=tuple(e.version if e else None for e in entries),
               inputs_differ=len(inputs) > 1)


def challenge(manifests: Mapping[str, Manifest]) -> ChallengeResult:
    """Compare the manifests (label -> Manifest, in display order) package
    by package.  Needs at least two to say anything."""
    labels = list(manifests)
    ms = [manifests[x] for x in labels]
    names = sorted({n for m in ms for n in m.entries})
    result = ChallengeResult(labels=labels, rows=[_row(n, ms) for n in names])
    trees = {m.tree for m in ms}
    if len(trees) > 1:
        result.notes.append("the manifests are of different trees (" + ", ".join(sorted(trees)) +
                            "): differences may be expected")
    return result


# --- output ------------------------------------------------------------------

def _hex(digest: str) -> str:
    return digest.split(":", 1)[1] if digest.startswith("sha256:") else digest


def prefix_length(result: ChallengeResult, start: int = PREFIX) -> int:
    """The shortest prefix (at least ``start``) that tells every pair of
    distinct digests in the table apart, so a cell never looks equal to a
    cell it differs from."""
    digests = sorted({_hex(d) for r in result.rows for d in r.digests if d})
    n = start
    for x, y in zip(digests, digests[1:]):
        common = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
        n = max(n, common + 1)
    return n


def _status_text(r: Row) -> str:
    if r.status == DIFFERING and r.inputs_differ:
        return "differing (inputs differ)"
    return r.status


def render_table(result: ChallengeResult, *, problems_only: bool = False) -> str:
    """The packages x manifests table, a legend and the totals."""
    n = prefix_length(result)
    headers = ["package", "version"] + [printable(x) for x in result.labels] + ["status"]
    rows = []
    for r in result.rows:
        if problems_only and r.status == IDENTICAL:
            continue
        cells = []
        for d, minor in zip(r.digests, r.minority):
            cells.append("-" if d is None else _hex(d)[:n] + (" *" if minor else ""))
        versions = sorted({v for v in r.versions if v is not None})
        rows.append([printable(r.name), printable(" / ".join(versions))] + cells + [_status_text(r)])
    out = []
    if rows:
        out.append(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))
    else:
        out.append("(no packages to show)")
    legend = ["-  not in this manifest",
              "*  disagrees with the majority (every differing cell is marked when there is none)"]
    if any(r.inputs_differ and r.status == DIFFERING for r in result.rows):
        legend.append("(inputs differ): built from different inputs; look first at packages that "
                      "differ with equal inputs")
    out += [""] + legend
    for note in result.notes:
        out.append(f"note: {printable(note)}")
    t = result.totals()
    out += ["", f"{t['packages']} packages in {len(result.labels)} manifests: {t[IDENTICAL]} identical, "
                f"{t[DIFFERING]} differing, {t[MISSING]} missing"]
    for label, c in result.per_manifest().items():
        if c["missing"] or c["disagrees"]:
            out.append(f"  {printable(label)}: lacks {c['missing']}, disagrees on {c['disagrees']}")
    return "\n".join(out) + "\n"


def to_json(result: ChallengeResult) -> dict:
    pkgs = []
    for r in result.rows:
        pkgs.append({
            "name": r.name,
            "status": r.status,
            "inputs_differ": r.inputs_differ,
            "digests": dict(zip(result.labels, r.digests)),
            "versions": dict(zip(result.labels, r.versions)),
            "minority": [lab for lab, m in zip(result.labels, r.minority) if m],
        })
    return {"labels": result.labels, "packages": pkgs, "totals": result.totals(),
            "per_manifest": result.per_manifest(), "notes": result.notes,
            "exit_code": result.exit_code}
