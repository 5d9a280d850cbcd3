"""`quorum report`, rendered by a real browser (Debian's headless Chromium).

The inputs are made without the engine, with the writers the code itself
uses: the fixture tree's definitions, one-file OCI artifacts published
through Store, a manifest from manifest.updated, real GnuPG signatures
through sign.sign, a reproduce report from reproduce.ReproResult with one
MISMATCH (and its file-level diff from diff.compare), and one challenge
manifest that disagrees on one package.  Screenshots are kept under
out/test-report/ (CI keeps out/ as artifacts).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import ROOT, require_tool, run_quorum  # noqa: E402
from trust_keys import COMMIT, add_artifact, keyring, write_policy  # noqa: E402,F401
from treeutil import make_fixture_tree  # noqa: E402

from quorum import diff as diffmod, manifest as manifest_mod, reproduce, trustroot  # noqa: E402
from quorum import report as reportmod, sign as signlib  # noqa: E402
from quorum.store import Store  # noqa: E402

SHOTS = ROOT / "out" / "test-report"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'
ORDER = ["busybox", "base", "left", "right", "solo", "top"]


# --- the tree in the state the issue describes ------------------------------------------

def make_state(root: Path, kr, *, reviewers_signing: tuple[str, ...] = ("carol",)) -> Path:
    """Fixture tree: every node built, signed by alice (maintainer, 1 of 1)
    and the given reviewers (reviewer role: 2 of bob, carol, dave)."""
    make_fixture_tree(root)
    # A description and a log line are the tree's to choose: hostile ones.
    top = root / "packages" / "top" / "package.yaml"
    top.write_text(top.read_text().replace('version: "0.3"\n', f'version: "0.3"\ndescription: {json.dumps(HOSTILE)}\n'))
    entries = {}
    for n in ORDER:
        kind = "seed" if n == "busybox" else "package"
        entries[n] = add_artifact(root, n, content=f"{n} contents\n".encode(), kind=kind)
    man = manifest_mod.updated(None, "fixture", entries)
    manifest_mod.write(root / "manifests" / "manifest.json", man)
    logs = root / "out" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "top.log").write_bytes(b"compiling top\n" + HOSTILE.encode() + b"\x1b[31m red\n" + b"done\n")
    write_policy(root, {"maintainer": (1, [kr["alice"]]),
                        "reviewer": (2, [kr["bob"], kr["carol"], kr["dave"]])})
    signlib.sign(root, user=kr.home, key=kr["alice"].fpr, images=False, release=True, commit=COMMIT)
    for who in reviewers_signing:
        signlib.sign(root, user=kr.home, key=kr[who].fpr, images=False)
    return root


def add_reproduce_report(root: Path) -> None:
    """Every package REPRODUCED except solo, whose rebuild made other bytes."""
    man = manifest_mod.load(root / "manifests" / "manifest.json")
    out = root / "out" / "reproduce"
    other = root.parent / "rebuilder"
    rebuilt = add_artifact(other, "solo", content=b"solo contents, built at 12:34\n")
    d = out / "solo"
    d.mkdir(parents=True)
    shutil.copytree(Store(root / "out").layout("solo"), d / "original")
    shutil.copytree(Store(other / "out").layout("solo"), d / "rebuilt")
    diffmod.save(diffmod.compare(d / "original", d / "rebuilt", labels=("original", "rebuilt")), d)
    (d / "diffoscope.html").write_text("<!DOCTYPE html><title>diffoscope</title><p>solo differs</p>\n")
    verdicts = []
    for n in ORDER[1:]:
        e = man.entries[n]
        if n == "solo":
            verdicts.append(reproduce.Verdict(name=n, kind="package", verdict=reproduce.MISMATCH, expected=e.digest,
                                              rebuilt=rebuilt.digest, reason="digests differ", diff_dir=str(d)))
        else:
            verdicts.append(reproduce.Verdict(name=n, kind="package", verdict=reproduce.REPRODUCED,
                                              expected=e.digest, rebuilt=e.digest))
    res = reproduce.ReproResult(verdicts=verdicts, applied={"umask": "umask 002",
                                                            "timezone": "TZ=Pacific/Kiritimati"},
                                not_applied={}, out=out)
    (out / "report.json").write_bytes(manifest_mod.canon.dumps_pretty(res.to_json()))


def write_challenge(root: Path, dest: Path) -> Path:
    """A rebuilder's manifest: left differs (same inputs), right not built."""
    man = manifest_mod.load(root / "manifests" / "manifest.json")
    entries = dict(man.entries)
    entries["left"] = manifest_mod.Entry(kind="package", version="1.0", digest="sha256:" + "e" * 64,
                                         input_hash=entries["left"].input_hash, size=1)
    del entries["right"]
    dest.write_bytes(manifest_mod.Manifest(tree="fixture", entries=entries).to_bytes())
    return dest


# --- reading the browser's DOM ------------------------------------------------------------

VOID = {"meta", "link", "input", "br", "img", "hr", "wbr", "source", "col", "area", "base", "embed"}


class Dom(HTMLParser):
    """The parts of a dumped DOM the assertions need."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}     # package -> rebuilder -> verdict text
        self.links: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.ids: dict[str, str] = {}                 # element id -> its text, white space folded
        self._row = self._cell = None
        self._text: list[str] = []
        self._depth = 0
        self._open: list[tuple[str, int, list[str]]] = []   # elements with an id, still open
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        for k in ("href", "src", "data"):
            if a.get(k):
                self.links.append(a[k])
        if tag == "tr" and "data-package" in a:
            self._row = a["data-package"]
            self.rows[self._row] = {}
        if tag == "td" and self._row and "data-rebuilder" in a:
            self._cell, self._text = a["data-rebuilder"], []
        for _, _, text in self._open:
            text.append(" ")      # cells are separate words, as a reader sees them
        if tag in VOID:
            return
        self._depth += 1
        if "id" in a:
            self._open.append((a["id"], self._depth, []))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if tag == "td" and self._cell:
            self.rows[self._row][self._cell] = " ".join("".join(self._text).split())
            self._cell = None
        if tag == "tr":
            self._row = None
        while self._open and self._open[-1][1] >= self._depth:
            i, _, text = self._open.pop()
            self.ids[i] = " ".join("".join(text).split())
        self._depth -= 1

    def handle_data(self, data):
        if self._cell:
            self._text.append(data)
        for _, _, text in self._open:
            text.append(data)


def chromium(url: str, *, shot: Path | None = None, netlog: Path | None = None) -> str:
    exe = require_tool("chromium")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-features=NetworkTimeServiceQuerying",
            "--window-size=1400,1600"]
    if netlog:
        args.append(f"--log-net-log={netlog}")
    if shot:
        args += [f"--screenshot={shot}", url]
    else:
        args += ["--dump-dom", "--virtual-time-budget=2000", url]
    # A profile of its own per run: two test runs on one machine must not
    # meet on Chromium's profile lock.
    with tempfile.TemporaryDirectory(prefix="quorum-chromium-") as profile:
        args.insert(1, f"--user-data-dir={profile}")
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def page_requests(netlog: Path) -> set[str]:
    """URLs that pages loaded from file:// asked the network for.  The
    browser's own housekeeping (update checks and the like) runs under
    other isolation keys and is not the report's doing."""
    doc = json.loads(netlog.read_text(errors="replace"))
    out = set()
    for e in doc.get("events", []):
        p = e.get("params") or {}
        if "url" in p and str(p.get("network_isolation_key", "")).startswith("file://"):
            out.add(p["url"])
    return out


# --- the test the issue asks for ------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory, keyring):
    require_tool("dot")
    base = tmp_path_factory.mktemp("report")
    root = make_state(base / "tree", keyring)
    add_reproduce_report(root)
    ch = write_challenge(root, base / "ci-manifest.json")
    state = Path(os.environ["XDG_STATE_HOME"])
    before = _snapshot(state)
    p = run_quorum("report", "--tree", str(root), "--challenge", f"ci={ch}")
    assert p.returncode == 0, p.stderr
    assert _snapshot(state) == before, "quorum report changed this machine's trust state"
    return root, root / "out" / "report"


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()} if d.exists() else {}


def test_browser_renders_verdicts_trust_and_links(site, tmp_path):
    root, out = site
    SHOTS.mkdir(parents=True, exist_ok=True)
    netlog = tmp_path / "net.json"
    dom = Dom(chromium((out / "index.html").as_uri(), netlog=netlog))

    # Every node has a row, with the right verdict per rebuilder.
    assert sorted(dom.rows) == sorted(ORDER)
    assert dom.rows["solo"] == {"reproduce": "MISMATCH", "ci": "REPRODUCED"}
    assert dom.rows["left"] == {"reproduce": "REPRODUCED", "ci": "MISMATCH"}
    assert dom.rows["right"] == {"reproduce": "REPRODUCED", "ci": "not yet"}
    assert dom.rows["top"] == {"reproduce": "REPRODUCED", "ci": "REPRODUCED"}
    assert dom.rows["busybox"] == {"reproduce": "not yet", "ci": "REPRODUCED"}

    # The trust summary: reviewer needs 2, has 1, and names Carol.
    assert dom.ids["trust-verdict"] == "NOT ACCEPTED"
    roles = dom.ids["roles"]
    assert "reviewer 1 2 of 3 NOT MET (1 of the 2 needed) Carol Reviewer <carol@example.org>" in roles, roles
    assert "maintainer 1 1 of 1 met Alice Maintainer <alice@example.org>" in roles, roles
    assert dom.ids["serial"] == "1"

    # Hostile strings arrive as text, never as markup: the only script is
    # the report's own, the only image-like element the graph's object.
    scripts = [a for t, a in dom.tags if t == "script"]
    assert scripts == [{"src": "report.js"}]
    assert not [t for t, a in dom.tags if t == "img"]

    # No request leaves file://; the same check sees a page that does
    # make one (so it cannot pass by seeing nothing).
    assert page_requests(netlog) == set()
    control = tmp_path / "control.html"
    control.write_text('<img src="http://192.0.2.1/x.png">')
    chromium(control.as_uri(), netlog=tmp_path / "control.json")
    assert page_requests(tmp_path / "control.json") == {"http://192.0.2.1/x.png"}

    # Every page's links resolve to a file of the site.
    pages = sorted(out.rglob("*.html"))
    assert len(pages) == 1 + len(ORDER) + 1      # index, one per node, solo's diffoscope copy
    for page in pages:
        for link in Dom(page.read_text()).links:
            u = urlparse(link)
            assert not u.scheme and not u.netloc, f"{page.name}: remote link {link}"
            target = (page.parent / unquote(u.path)).resolve()
            assert target.is_file(), f"{page.name}: {link} does not resolve"

    # The script ran, and a #filter= link keeps only the rows that match.
    assert dom.ids["shown"] == f"{len(ORDER)} of {len(ORDER)} shown"
    filtered = Dom(chromium((out / "index.html").as_uri() + "#filter=mismatch"))
    visible = {t_a[1]["data-package"] for t_a in filtered.tags
               if t_a[0] == "tr" and "data-package" in t_a[1] and "hidden" not in t_a[1].get("class", "")}
    assert visible == {"solo", "left"} and filtered.ids["shown"] == f"2 of {len(ORDER)} shown"

    chromium((out / "index.html").as_uri(), shot=SHOTS / "index.png")
    chromium((out / "packages" / "solo.html").as_uri(), shot=SHOTS / "solo.png")
    assert (SHOTS / "index.png").stat().st_size > 10_000


def test_package_page_shows_diff_sources_dependents_and_escaped_log(site):
    root, out = site
    solo = Dom(chromium((out / "packages" / "solo.html").as_uri()))
    html = (out / "packages" / "solo.html").read_text()
    assert "solo.diffoscope.html" in solo.links
    assert "usr/share/solo/README" in html          # the file-level diff names the file
    assert "umask" in html and "timezone" in html  # the variations of the rebuild
    top = (out / "packages" / "top.html").read_text()
    # Escaped, in the description and in the log tail (ESC shown as \x1b).
    assert HOSTILE not in top and "&lt;script&gt;document.title" in top and "\\x1b[31m" in top
    base = Dom((out / "packages" / "base.html").read_text())
    assert {"left.html", "right.html", "busybox.html"} <= set(base.links)
    assert "greeting-1.0.txt" in (out / "packages" / "base.html").read_text()


def test_graph_is_reduced_grouped_and_shows_the_gate(tmp_path):
    root = make_fixture_tree(tmp_path / "tree")
    # base -> top is implied by base -> left -> top: it must not be drawn.
    top = root / "packages" / "top" / "package.yaml"
    top.write_text(top.read_text().replace("deps: [left, right]", "deps: [left, right, base]"))
    (root / "quorum.yaml").write_text((root / "quorum.yaml").read_text()
                                      + "gates:\n  same:\n    identical: [left, right]\n")
    site = reportmod.collect(root, audit=False)
    assert '"base" -> "top"' not in site.dot
    assert '"left" -> "gate:same"' in site.dot and '"gate:same" -> "top"' in site.dot
    assert '"left" -> "top"' not in site.dot       # drawn through the gate
    assert "subgraph cluster_seed" in site.dot and "subgraph cluster_package" in site.dot
    svg = reportmod.render_svg(site.dot).decode()
    assert "not built" in svg and "legend" in svg
    reportmod.write(site, tmp_path / "site")
    top_page = (tmp_path / "site" / "packages" / "top.html").read_text()
    assert "Waits for gate <strong>same</strong>: left = right must be identical (not yet known)" in top_page


def test_same_inputs_same_bytes_and_trust_state_untouched(tmp_path, keyring):
    """Run twice: identical bytes.  With every threshold met and the root
    pinned, a verify that recorded would move the accepted serial; the
    report must leave the pin file as it was."""
    root = make_state(tmp_path / "tree", keyring, reviewers_signing=("carol", "bob"))
    state = tmp_path / "state"
    from quorum.policy import TrustFiles
    pol = TrustFiles(root).policy.read_bytes()
    pinfile, _ = trustroot.pin(state, manifest_mod.canon.sha256_bytes(pol))
    pinned = pinfile.read_bytes()
    site = reportmod.collect(root, state_dir=state, audit=True)
    assert site.trust.ok and site.trust.root_source == "pinned on this machine"
    reportmod.write(site, tmp_path / "a")
    reportmod.write(reportmod.collect(root, state_dir=state, audit=True), tmp_path / "b")
    assert pinfile.read_bytes() == pinned
    a, b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    assert [Path(p).relative_to(tmp_path / "a") for p in a] == [Path(p).relative_to(tmp_path / "b") for p in b]
    assert list(a.values()) == list(b.values())
    assert site.nodes["base"].audit == "clean"


def test_unmeasured_is_unknown_and_bad_challenge_is_one_line(tmp_path):
    root = make_fixture_tree(tmp_path / "tree")
    site = reportmod.collect(root, audit=False)
    assert all(n.digest is None and n.status == "missing" for n in site.nodes.values())
    assert not site.trust.checked and "no trust policy" in site.trust.error
    reportmod.write(site, tmp_path / "site")
    assert "unknown" in (tmp_path / "site" / "packages" / "top.html").read_text()
    # A reproduce report of odd shape is a note, never a traceback; a
    # verdict word this quorum does not know is no verdict.
    rj = root / "out" / "reproduce" / "report.json"
    rj.parent.mkdir(parents=True)
    for doc in ([1], {"verdicts": 3}, {"verdicts": [], "notes": 5}):
        rj.write_text(json.dumps(doc))
        site = reportmod.collect(root, audit=False)
        assert "unreadable, ignored" in site.reproduce_notes[0] and site.rebuilders == []
    rj.write_text(json.dumps({"verdicts": [{"name": ["x"]}, {"name": "top", "verdict": "<b>FINE</b>",
                                                             "engine": {"name": "<i>e</i>"}}]}))
    site = reportmod.collect(root, audit=False)
    assert site.nodes["top"].rebuilds[0].verdict == "not yet" and site.nodes["top"].status == "missing"
    reportmod.write(site, tmp_path / "site")
    top = (tmp_path / "site" / "packages" / "top.html").read_text()
    assert "&lt;b&gt;FINE&lt;/b&gt;" in top and "&lt;i&gt;e&lt;/i&gt;" in top and "<b>FINE" not in top
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    p = run_quorum("report", "--tree", str(root), "--challenge", str(bad))
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "bad.json" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_history_shows_when_a_digest_changed(tmp_path):
    root = make_fixture_tree(tmp_path / "tree")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    for i, content in enumerate((b"one\n", b"two\n")):
        entries = {n: add_artifact(root, n, content=content if n == "left" else b"same\n") for n in ("base", "left")}
        manifest_mod.write(root / "manifests" / "manifest.json",
                           manifest_mod.updated(manifest_mod.load(root / "manifests" / "manifest.json"),
                                                "fixture", entries))
        subprocess.run(git + ["add", "manifests"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", f"build {i} <b>"], check=True,
                       env=dict(os.environ, GIT_COMMITTER_DATE="2026-01-0%dT00:00:00Z" % (i + 1)))
    rows = reportmod.read_history(root, "HEAD", ["base", "left"])
    assert [r.serial for r in rows] == [1, 2]
    assert rows[1].changed == ["left"]
    p = run_quorum("report", "--tree", str(root), "--no-audit", "--history", "HEAD")
    assert p.returncode == 0, p.stderr
    hist = (root / "out" / "report" / "history.html").read_text()
    assert "changed: <code>" in hist and "build 1 &lt;b&gt;" in hist
    p = run_quorum("report", "--tree", str(root), "--history", "--nope")
    assert p.returncode == 3 and "--history" in p.stderr


def test_five_hundred_nodes_lay_out_quickly():
    """A tree of 500 nodes: graphviz lays it out in seconds, and the
    reduction drops the edges a longer path implies."""
    import random
    import time

    import networkx as nx
    rnd = random.Random(1)
    g = nx.DiGraph()
    g.add_node("seed", kind="seed")
    for i in range(20):
        g.add_node(f"boot{i}", kind="bootstrap")
        g.add_edge(f"boot{i - 1}" if i else "seed", f"boot{i}")
    for i in range(479):
        n = f"pkg{i:03d}"
        g.add_node(n, kind="package")
        g.add_edge("boot19", n)
        g.add_edge("seed", n)              # implied by seed -> boot0 -> ... -> boot19 -> n
        for j in rnd.sample(range(i), min(i, rnd.randint(0, 4))):
            g.add_edge(f"pkg{j:03d}", n)
    nodes = {n: reportmod.Node(name=n, kind=g.nodes[n]["kind"], digest="sha256:" + "0" * 64) for n in g}
    site = reportmod.Site(tree="big", commit=None, serial=1, expires=None, nodes=nodes, order=list(g),
                          trust=reportmod.Trust(), gates=[], rebuilders=[])
    t0 = time.monotonic()
    dot = reportmod.to_dot(g, site)
    svg = reportmod.render_svg(dot)
    assert time.monotonic() - t0 < 30
    # The 479 seed -> package shortcuts are gone (the legend has no edges).
    assert dot.count(" -> ") <= g.number_of_edges() - 479
    assert '"seed" -> "pkg000"' not in dot
    assert svg.count(b'<g id="node') == 500 + 1          # every node, and the legend


def test_audit_findings_are_listed_on_the_package(monkeypatch):
    """A built package with audit findings gets them as "check: path:
    detail" lines.  (Found by mypy: the report read Finding.kind, which
    audit's Finding never had, so any finding crashed the report.)"""
    from quorum import audit as auditmod
    found = auditmod.Finding(package="top", path="usr/bin/x", check="dynamic-elf", detail="needs libc.so.6")
    monkeypatch.setattr(auditmod, "audit", lambda tree, store=None: auditmod.AuditResult(
        checked=["top", "base"], findings=[found]))
    nodes = {n: reportmod.Node(name=n, kind="package", store="built") for n in ("top", "base")}
    site = reportmod.Site(tree="t", commit=None, serial=None, expires=None, nodes=nodes, order=list(nodes),
                          trust=reportmod.Trust(), gates=[], rebuilders=[])
    reportmod._audit(None, None, nodes, site)
    assert site.notes == []
    assert nodes["top"].audit == "findings"
    assert nodes["top"].audit_findings == ["dynamic-elf: usr/bin/x: needs libc.so.6"]
    assert nodes["base"].audit == "clean" and nodes["base"].audit_findings == []
