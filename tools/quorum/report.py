"""`quorum report`: a static dashboard of the tree (docs/report.md).

It answers, for every package: is it built, did independent rebuilds get
the same digest, who signed, and where does something disagree.  It only
*reads*: the tree, manifests/manifest.json, the store's records and logs,
out/reproduce/report.json, challenge manifests, the policy and signatures
(through ``verify`` with ``record=False``, so this machine's memory of
accepted serials is never touched), the transparency log and the audit.
Whatever was never measured is shown as "unknown" or "not yet", never
guessed.

The site is a handful of files: index.html, one page per node under
packages/, history.html when asked, graph.svg, and local CSS and JS.  No
asset is fetched from anywhere, so it works from file:// and from any
static host.  Every string from the tree or an artifact is escaped by
jinja2's autoescape; the report's bytes depend on what it read, not on the
clock.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from . import challenge as challengemod
from . import graph as graphmod
from . import manifest as manifestmod
from .errors import InputError, QuorumError
from .safeio import JSON_LIMIT, loads_json, read_regular
from .store import Store
from .text import printable

if TYPE_CHECKING:
    import jinja2      # imported where it is used: only writing needs it

    from .model import Tree

REPRODUCED, MISMATCH, FAILED, NOT_YET = "REPRODUCED", "MISMATCH", "FAILED", "not yet"
# Where challenge manifests are found when none are named with --challenge:
# one rebuilder's manifest.json per file, labelled by the file's stem.
CHALLENGE_DIR = Path("manifests") / "rebuilders"
# Where rebuild and provenance attestations of a package are looked for.
ATTEST_DIR = Path("out") / "attest"
LOG_TAIL = 40
# Each status has a colour *and* a word: the picture must read without colour.
STATUS_STYLE = {
    "reproduced": ("#b7e4b0", "REPRODUCED"),
    "mismatch": ("#f4a6a6", "MISMATCH"),
    "failed": ("#f7d08a", "FAILED"),
    "built": ("#dbe7f6", "built, not reproduced"),
    "missing": ("#e4e4e4", "not built"),
    "seed": ("#f2e6c9", "seed (trusted binaries)"),
}


class ReportError(QuorumError):
    exit_code = 2


# --- what is read ---------------------------------------------------------------------------

@dataclass
class Rebuild:
    """One independent answer about a package's digest."""
    by: str                 # "reproduce" or a challenge manifest's label
    verdict: str            # REPRODUCED | MISMATCH | FAILED | NOT_YET
    engine: str = "unknown"
    digest: str | None = None
    reason: str = ""
    variations: list[str] = field(default_factory=list)
    diff_text: str | None = None     # diff.txt, shown on the package page
    diffoscope: str | None = None    # file name of the copied diffoscope report, relative to the page


@dataclass
class SourceInfo:
    file: str
    sha256: str
    origins: list[str]


@dataclass
class Node:
    name: str
    kind: str
    version: str = "unknown"
    digest: str | None = None
    input_hash: str | None = None
    size: int | None = None
    store: str = "not built"          # "built" | "not built" | "other digest in out/"
    rebuilds: list[Rebuild] = field(default_factory=list)
    audit: str = "unknown"
    audit_findings: list[str] = field(default_factory=list)
    sources: list[SourceInfo] = field(default_factory=list)
    deps: list[str] = field(default_factory=list)
    dependents: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    attestations: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def status(self) -> str:
        """One word for the graph and the table's colour."""
        verdicts = {r.verdict for r in self.rebuilds}
        if MISMATCH in verdicts:
            return "mismatch"
        if FAILED in verdicts:
            return "failed"
        if REPRODUCED in verdicts:
            return "reproduced"
        if self.kind == "seed" and self.digest:
            return "seed"
        return "built" if self.digest else "missing"

    def verdict_of(self, by: str) -> Rebuild | None:
        return next((r for r in self.rebuilds if r.by == by), None)


@dataclass
class Role:
    name: str
    threshold: int
    count: int
    met: bool
    signers: list[str]          # "Name <mail> (FPR)"
    anchors: int


@dataclass
class Trust:
    checked: bool = False
    error: str | None = None
    ok: bool = False
    roles: list[Role] = field(default_factory=list)
    signatures: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    root: str = "unknown"
    root_source: str = "unknown"
    policy_version: int | None = None
    manifest_sha256: str | None = None
    log_entries: int | None = None

    @property
    def counted(self) -> int:
        """Distinct signatures that count (a signer in two roles is one)."""
        return len({s.get("fingerprint") for s in self.signatures if s.get("counted")})


@dataclass
class Gate:
    name: str
    members: list[str]
    digests: dict[str, str | None]
    status: str                 # "identical" | "differ" | "unknown"
    recorded: dict[str, Any] = field(default_factory=dict)   # what the manifest's checks say


@dataclass
class HistoryRow:
    commit: str
    date: str
    subject: str
    serial: int | None
    manifest_sha256: str
    signatures: int
    digests: dict[str, str | None]
    changed: list[str]
    gates: dict[str, str] = field(default_factory=dict)   # gate -> "pass" | "fail", as the build recorded


@dataclass
class Site:
    tree: str
    commit: str | None
    serial: int | None
    expires: str | None
    nodes: dict[str, Node]
    order: list[str]
    trust: Trust
    gates: list[Gate]
    rebuilders: list[str]        # column labels of the table, in order
    reproduce_notes: list[str] = field(default_factory=list)
    challenge_notes: list[str] = field(default_factory=list)
    history: list[HistoryRow] | None = None
    history_range: str | None = None
    dot: str = ""
    notes: list[str] = field(default_factory=list)


# --- collecting -------------------------------------------------------------------------------


def _engine_text(facts: dict) -> str:
    """EngineFacts as reproduce recorded them, in EngineFacts' own words."""
    from .engines import EngineFacts
    f = EngineFacts.from_json(facts)
    return f.describe() if f is not None else json.dumps(facts, sort_keys=True)

def collect(root: Path, *, challenges: list[str] | None = None, state_dir: Path | None = None,
            pinned_root: str | None = None, history: str | None = None, audit: bool = True) -> Site:
    from .tree import load_tree
    root = Path(root)
    tree = load_tree(root)
    g = graphmod.build_graph(tree)
    man = manifestmod.load(tree.manifest_path)
    store = Store(tree.out)
    order = graphmod.order(g)
    nodes: dict[str, Node] = {}
    for n in order:
        node = Node(name=n, kind=g.nodes[n].get("kind", "package"))
        node.deps = sorted(g.predecessors(n))
        node.dependents = sorted(g.successors(n))
        if n in tree.packages:
            p = tree.packages[n]
            node.version, node.description = p.version, p.description
            for s in p.sources:
                origins = list(s.urls)
                if s.debian is not None:
                    origins.append(f"Debian source package {s.debian.package}"
                                   + (f" {s.debian.version}" if s.debian.version else ""))
                node.sources.append(SourceInfo(file=s.file, sha256=s.sha256, origins=origins))
        elif n in tree.seeds:
            node.description = tree.seeds[n].description
            node.sources = [SourceInfo(file=f"{d.name}_{d.version}_{d.arch}.deb", sha256=d.sha256,
                                       origins=[f"Debian binary package {d.name} {d.version}"])
                            for d in tree.seeds[n].debs]
        entry = man.entries.get(n) if man else None
        if entry is not None:
            node.version, node.digest, node.input_hash, node.size = (entry.version, entry.digest,
                                                                     entry.input_hash, entry.size)
        rec = store.record(n)
        if rec is not None:
            node.store = "built" if entry is None or rec.digest == entry.digest else "other digest in out/"
            if node.digest is None:
                node.version, node.input_hash, node.size = rec.version, rec.input_hash, rec.size
        node.log_tail = _log_tail(store.log_path(n))
        adir = root / ATTEST_DIR / n
        if adir.is_dir() and not adir.is_symlink():
            node.attestations = sorted(p.name for p in adir.iterdir() if p.is_file() and not p.is_symlink())
        nodes[n] = node
    site = Site(tree=tree.config.name, commit=man.commit if man else None, serial=man.serial if man else None,
                expires=man.expires if man else None, nodes=nodes, order=order, trust=Trust(), gates=[],
                rebuilders=[])
    if man is None:
        site.notes.append("no manifests/manifest.json: nothing was built yet, so every digest is unknown")
    site.reproduce_notes = _read_reproduce(tree.out / "reproduce", nodes, site)
    _read_challenges(root, challenges, man, nodes, site)
    site.gates = _gates(tree, man, store)
    site.trust = _trust(root, state_dir, pinned_root)
    if audit:
        _audit(tree, store, nodes, site)
    if history:
        site.history, site.history_range = read_history(root, history, list(nodes)), history
    site.dot = to_dot(g, site)
    return site


def _log_tail(path: Path) -> list[str]:
    if not path.is_file() or path.is_symlink():
        return []
    with open(path, "rb") as f:
        # Only the end matters; a log of gigabytes costs one seek.
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        data = f.read()
    lines = data.decode("utf-8", errors="replace").splitlines()[-LOG_TAIL:]
    return [printable(line) for line in lines]


def _load_json_file(path: Path) -> Any:
    return loads_json(read_regular(path, limit=JSON_LIMIT, error=InputError, what="JSON file").decode(
        "utf-8", errors="replace"), file=path, error=InputError)


def _read_reproduce(out: Path, nodes: dict[str, Node], site: Site) -> list[str]:
    """Verdicts of out/reproduce/report.json that are about the digests the
    manifest names now; a verdict about an older digest is stale and shown
    as such, not as a verdict on the current artifact."""
    path = out / "report.json"
    if not path.exists():
        return ["no reproduce report (out/reproduce/report.json): run 'quorum reproduce'"]
    try:
        doc = _load_json_file(path)
        verdicts = doc["verdicts"]
        if not isinstance(verdicts, list):
            raise TypeError("verdicts is not a list")
        variations = sorted(str(v) for v in (doc.get("applied") or {}))
        notes = [printable(str(n)) for n in (doc.get("notes") or [])]
    except (QuorumError, KeyError, TypeError, AttributeError) as e:
        return [f"{path}: unreadable, ignored ({printable(str(e))})"]
    site.rebuilders.append("reproduce")
    for v in verdicts:
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or v["name"] not in nodes:
            continue
        node = nodes[v["name"]]
        engine = v.get("engine") or doc.get("rebuild_engine") or "local engine (not recorded)"
        if isinstance(engine, dict):
            engine = _engine_text(engine)
        verdict, reason = str(v.get("verdict")), str(v.get("reason") or "")
        if verdict not in (REPRODUCED, MISMATCH, FAILED):
            # A word this quorum does not know is not evidence either way.
            verdict, reason = NOT_YET, f"unknown verdict {verdict!r} in {path.name}"
        rebuilt = v.get("rebuilt")
        r = Rebuild(by="reproduce", verdict=verdict, engine=printable(str(engine)),
                    digest=str(rebuilt) if rebuilt else None, reason=printable(reason), variations=variations)
        if node.digest and v.get("expected") and v.get("expected") != node.digest:
            r.verdict, r.reason = NOT_YET, "the last reproduce judged an older digest of this package"
        diff_dir = out / node.name
        if r.verdict == MISMATCH and diff_dir.is_dir():
            txt = diff_dir / "diff.txt"
            if txt.is_file() and not txt.is_symlink():
                # Shown escaped in a <pre>; capped so a huge diff cannot
                # swell the page.
                r.diff_text = txt.read_bytes()[:256 * 1024].decode("utf-8", "replace")
            html = diff_dir / "diffoscope.html"
            if html.is_file() and not html.is_symlink():
                r.diffoscope = str(html)
        node.rebuilds.append(r)
    return notes


def _read_challenges(root: Path, specs: list[str] | None, man: manifestmod.Manifest | None,
                     nodes: dict[str, Node], site: Site) -> None:
    if specs is None:
        d = root / CHALLENGE_DIR
        specs = [f"{p.stem}={p}" for p in sorted(d.glob("*.json"))] if d.is_dir() else []
    if not specs:
        return
    try:
        others = challengemod.load(specs)
    except QuorumError as e:
        raise InputError(e.message, file=e.file, field=e.field or "--challenge") from None
    for label, m in others.items():
        if label in site.rebuilders:
            raise InputError(f"label {label!r} is used twice", field="--challenge")
        site.rebuilders.append(label)
        if man is not None and m.tree != man.tree:
            site.challenge_notes.append(f"{label} is a manifest of tree {m.tree!r}, not {man.tree!r}")
        for n, node in nodes.items():
            theirs = m.entries.get(n)
            if theirs is None:
                continue     # the rebuilder did not build it: "not yet"
            if node.digest is None:
                verdict, reason = FAILED, "nothing to compare with: not in this tree's manifest"
            elif theirs.digest == node.digest:
                verdict, reason = REPRODUCED, ""
            else:
                verdict = MISMATCH
                reason = ("other digest, built from other inputs (look at its dependencies first)"
                          if theirs.input_hash != node.input_hash else "other digest from the same inputs")
            node.rebuilds.append(Rebuild(by=label, verdict=verdict, engine=f"rebuilder {label}",
                                         digest=theirs.digest, reason=reason))


def _gates(tree: Tree, man: manifestmod.Manifest | None, store: Store) -> list[Gate]:
    """A gate compares the members' layers (their files; the artifacts'
    own digests differ anyway, since each names its package).  The verdict
    the build recorded in the manifest is the one shown; without one, the
    layer digests of the records in out/ are compared here."""
    out = []
    checks = man.checks if man else {}
    for name, members in tree.config.gates:
        got = checks.get(name)
        rec: dict[str, Any] = got if isinstance(got, dict) else {}
        got = rec.get("digests")
        recorded: dict[str, Any] = got if isinstance(got, dict) else {}
        digests: dict[str, str | None] = {}
        for m in members:
            r = store.record(m)
            digests[m] = str(recorded[m]) if m in recorded else (r.layer_digest if r else None)
        if rec.get("result") in ("pass", "fail"):
            status = "identical" if rec["result"] == "pass" else "differ"
        elif all(digests.values()):
            status = "identical" if len(set(digests.values())) == 1 else "differ"
        else:
            status = "unknown"
        out.append(Gate(name=name, members=list(members), digests=digests, status=status,
                        recorded={str(k): v for k, v in sorted(rec.items()) if k not in ("digests", "members")}))
    return out


def _trust(root: Path, state_dir: Path | None, pinned_root: str | None) -> Trust:
    """verify, read-only: record=False, so the accepted serial, policy and
    log head on this machine stay as they were.  Without a pinned root the
    policy is read as found (and said so): the report shows, it does not
    accept."""
    from . import policy as policymod, translog
    from . import verify as verifymod
    t = Trust()
    files = policymod.TrustFiles(root)
    if not files.policy.exists():
        t.error = "no trust policy (manifests/policy.yaml): nobody is required to sign"
        return t
    try:
        rep = verifymod.verify(root, state_dir=state_dir, record=False, pinned_root=pinned_root,
                               trust_on_first_use=True)
    except QuorumError as e:
        t.error = printable(str(e))
        return t
    try:
        pol = policymod.load(files.policy)
        anchors = {r.name: len(r.keys) for r in pol.roles.values()}
    except QuorumError:
        anchors = {}
    t.checked, t.ok = True, rep.ok
    t.roles = [Role(name=r.name, threshold=r.threshold, count=len(r.signers), met=r.ok,
                    signers=[f"{uid} ({fpr})" if uid else fpr for fpr, uid in r.signers],
                    anchors=anchors.get(r.name, 0)) for r in rep.roles]
    t.signatures = [c.to_json() for c in rep.signatures]
    t.problems, t.notes = list(rep.problems), list(rep.notes)
    if rep.root is not None:
        t.root = f"sha256:{rep.root.digest}"
        t.root_source = {"first use": "not pinned on this machine: the policy is shown as found",
                         "pinned": "pinned on this machine", "remembered": "accepted before on this machine"
                         }.get(rep.root.source, rep.root.source)
    t.policy_version, t.manifest_sha256 = rep.policy_version, rep.manifest_sha256
    try:
        t.log_entries = len(translog.read(files.log))
    except QuorumError:
        t.log_entries = None
    return t


def _audit(tree: Tree, store: Store, nodes: dict[str, Node], site: Site) -> None:
    from . import audit as auditmod
    try:
        res = auditmod.audit(tree, store=store)
    except (QuorumError, OSError, KeyError, ValueError) as e:
        site.notes.append(f"audit could not run: {printable(str(e))}")
        return
    for n in res.checked:
        if n not in nodes or nodes[n].store != "built":
            continue
        found = [f for f in res.findings if f.package == n]
        nodes[n].audit = "findings" if found else "clean"
        nodes[n].audit_findings = [f"{f.check}: {f.path}: {f.detail}" for f in found]
    for n, node in nodes.items():
        if node.kind == "package" and node.audit == "unknown":
            node.audit = "unknown (not built in out/ here)"
        if node.kind != "package" and node.audit == "unknown":
            node.audit = "not audited (built from the seeds by design)" if node.kind == "bootstrap" else "—"


# --- history ------------------------------------------------------------------------------------

def read_history(root: Path, rng: str, names: list[str]) -> list[HistoryRow]:
    """The manifest at every commit of ``rng`` that changed it, oldest
    first, with the signatures the log records for each manifest."""
    import hashlib
    rel = "manifests/manifest.json"
    if rng.startswith("-"):
        raise InputError(f"{rng!r} is not a git revision range", field="--history")
    p = _git(root, "log", "--reverse", "--format=%H%x09%cI%x09%s", rng, "--", rel)
    signed: dict[str, int] = {}
    try:
        from . import translog
        for e in translog.read(root / "manifests" / "log.jsonl"):
            if e.get("signer") and e.get("manifest_sha256"):
                signed[e["manifest_sha256"]] = signed.get(e["manifest_sha256"], 0) + 1
    except QuorumError:
        pass
    rows: list[HistoryRow] = []
    prev: dict[str, str | None] = {}
    for line in p.splitlines():
        commit, date, subject = (line.split("\t", 2) + ["", ""])[:3]
        blob = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{rel}"], capture_output=True, timeout=60)
        if blob.returncode != 0:
            continue     # the commit deleted the manifest
        sha = hashlib.sha256(blob.stdout).hexdigest()
        try:
            m = manifestmod.parse(blob.stdout, f"{commit[:12]}:{rel}")
            digests = {n: (m.entries[n].digest if n in m.entries else None) for n in names}
            for n in sorted(set(m.entries) - set(names)):
                digests[n] = m.entries[n].digest
            serial = m.serial
            gates = {g: str(c.get("result")) for g, c in sorted(m.checks.items()) if isinstance(c, dict)}
        except QuorumError:
            digests, serial, gates = {}, None, {}
        changed = sorted(n for n in digests if prev.get(n) != digests[n]) if rows else []
        rows.append(HistoryRow(commit=commit, date=date, subject=printable(subject), serial=serial,
                               manifest_sha256=sha, signatures=signed.get(sha, 0), digests=digests,
                               changed=changed, gates=gates))
        prev = digests
    return rows


def _git(root: Path, *args: str) -> str:
    try:
        p = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InputError("git is not installed; --history needs it", field="--history") from None
    if p.returncode != 0:
        msg = p.stderr.strip().splitlines()
        raise InputError(f"git log failed: {printable(msg[-1]) if msg else 'no message'}", field="--history")
    return p.stdout


# --- the picture -----------------------------------------------------------------------------------

def _q(s: str) -> str:
    """A DOT string literal: names are restricted, but a description or
    version is the tree's to choose."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


STAGES = (("seed", "seeds"), ("bootstrap", "bootstrap"), ("package", "packages"))


def to_dot(g: nx.DiGraph, site: Site, *, link_prefix: str = "packages/") -> str:
    """The graph as DOT: one cluster per stage, edges transitively reduced
    (an edge implied by a longer path adds lines, not information), and
    each gate drawn as a node of its own that its members feed and that
    their dependents wait for.  Sorted throughout, so the file diffs."""
    red = nx.transitive_reduction(g)
    edges = set(red.edges)
    gate_of: dict[str, str] = {}
    for gate in site.gates:
        for m in gate.members:
            gate_of[m] = gate.name
    lines = ["digraph quorum {", "  rankdir=LR;", "  newrank=true;", "  nodesep=0.15;", "  ranksep=0.5;",
             '  node [shape=box, style="rounded,filled", fontname="DejaVu Sans", fontsize=10];',
             '  edge [color="#555555", arrowsize=0.6];']
    for kind, title in STAGES:
        members = sorted(n for n in g.nodes if g.nodes[n].get("kind", "package") == kind)
        if not members:
            continue
        lines += [f"  subgraph cluster_{kind} {{", f"    label={_q(title)};", '    style="rounded,dashed";',
                  '    color="#888888";', "    fontname=\"DejaVu Sans\";"]
        for n in members:
            node = site.nodes.get(n)
            status = node.status if node else "missing"
            colour, word = STATUS_STYLE[status]
            lines.append(f"    {_q(n)} [label={_q(n + chr(10) + word)}, fillcolor={_q(colour)}, "
                         f"URL={_q(link_prefix + n + '.html')}, target=\"_top\", tooltip={_q(n)}];")
        lines.append("  }")
    for gate in site.gates:
        gid = f"gate:{gate.name}"
        word = {"identical": "identical: OK", "differ": "DIFFER", "unknown": "not yet known"}[gate.status]
        colour = {"identical": "#b7e4b0", "differ": "#f4a6a6", "unknown": "#e4e4e4"}[gate.status]
        label = f"gate {gate.name}\n" + " = ".join(gate.members) + f"\n{word}"
        lines.append(f"  {_q(gid)} [shape=hexagon, style=filled, fillcolor={_q(colour)}, label={_q(label)}];")
        for m in sorted(gate.members):
            lines.append(f"  {_q(m)} -> {_q(gid)} [style=dashed, arrowhead=none, label=\"=\"];")
        # What is built on a member waits for the gate: draw it so.
        after = sorted({b for a, b in edges if a in gate.members and b not in gate.members})
        for b in after:
            lines.append(f"  {_q(gid)} -> {_q(b)};")
        edges = {(a, b) for a, b in edges if not (a in gate.members and b in after)}
    for a, b in sorted(edges):
        lines.append(f"  {_q(a)} -> {_q(b)};")
    # The legend lives in the picture too, so graph.svg reads on its own:
    # one node holding a small table, so it costs no width in the layout.
    rows = "".join(f'<tr><td bgcolor="{colour}" border="1">{word}</td></tr>'
                   for colour, word in STATUS_STYLE.values())
    rows += '<tr><td border="1">hexagon = gate (must be equal)</td></tr>'
    lines += [f'  legend [shape=plaintext, style=solid, label=<<table border="0" cellspacing="2" cellborder="0" cellpadding="4">'
              f'<tr><td><b>legend</b></td></tr>{rows}</table>>];', "}"]
    return "\n".join(lines) + "\n"


def render_svg(dot: str) -> bytes | None:
    """graphviz's SVG, or None when graphviz is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, "-Tsvg"], input=dot.encode(), capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise ReportError("graphviz took more than 5 minutes to lay out the graph") from None
    if p.returncode != 0:
        raise ReportError(f"graphviz failed: {printable(p.stderr.decode(errors='replace').strip()[-300:])}")
    return p.stdout


# --- writing ----------------------------------------------------------------------------------------

def _env() -> jinja2.Environment:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates" / "report")),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["short"] = lambda d: (d.split(":", 1)[-1][:12] if d else "—")
    env.filters["size"] = _size
    return env


def _size(n: float | None) -> str:   # bytes (an int); divided down as it is shown
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def write(site: Site, dest: Path) -> list[Path]:
    """Write the site into a temporary folder beside ``dest`` and rename it
    into place: a reader sees the old site or the whole new one."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    env = _env()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (tmp / "packages").mkdir()
        svg = render_svg(site.dot)
        (tmp / "graph.dot").write_text(site.dot, encoding="utf-8")
        if svg is not None:
            (tmp / "graph.svg").write_bytes(svg)
        else:
            site.notes.append("graphviz is not installed: only graph.dot was written (tools/setup-test-deps "
                              "installs it)")
        static = Path(__file__).parent / "templates" / "report" / "static"
        for f in sorted(static.iterdir()):
            shutil.copyfile(f, tmp / f.name)
        for node in site.nodes.values():
            for r in node.rebuilds:
                if r.diffoscope:
                    # Copied in, so the site is whole wherever it is hosted.
                    name = f"{node.name}.diffoscope.html"
                    shutil.copyfile(r.diffoscope, tmp / "packages" / name)
                    r.diffoscope = name
        ctx = {"site": site, "styles": STATUS_STYLE, "has_svg": svg is not None}
        (tmp / "index.html").write_text(env.get_template("index.html").render(root="", **ctx), encoding="utf-8")
        for node in site.nodes.values():
            html = env.get_template("package.html").render(root="../", node=node, **ctx)
            (tmp / "packages" / f"{node.name}.html").write_text(html, encoding="utf-8")
        if site.history is not None:
            (tmp / "history.html").write_text(env.get_template("history.html").render(root="", **ctx),
                                              encoding="utf-8")
        os.chmod(tmp, 0o755)
        old = None
        if dest.exists() or dest.is_symlink():
            old = dest.parent / f".{dest.name}.old.{os.getpid()}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(p for p in dest.rglob("*") if p.is_file())


def write_graph(site: Site, out: Path) -> Path | None:
    """graph.dot and graph.svg for `make graph`: the same picture as the
    report's, with links that point into out/report/."""
    from .canon import atomic_write
    dot = site.dot.replace('URL="packages/', 'URL="report/packages/')
    atomic_write(out / "graph.dot", dot.encode())
    svg = render_svg(dot)
    if svg is None:
        return None
    atomic_write(out / "graph.svg", svg)
    return out / "graph.svg"
