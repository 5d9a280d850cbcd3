"""The core loop on the real engine, with the fixture tree (busybox seed,
a diamond base -> left, right -> top, and solo with its own Containerfile)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, require_tool, run_quorum
from quorum import build as buildlib
from quorum import oci
from quorum.fetch import SourceCache
from quorum.store import Store
from quorum.tree import load_tree
from treeutil import add_package, make_fixture_tree

pytestmark = pytest.mark.engine


def build(tree_dir: Path, engine, **opts) -> tuple[buildlib.Result, list[dict]]:
    events: list[dict] = []
    res = buildlib.build(load_tree(tree_dir), engine=engine, options=buildlib.Options(**opts), emit=events.append)
    return res, events


def statuses(res: buildlib.Result) -> dict[str, str]:
    return {n: r.status for n, r in res.nodes.items()}


def tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built_pair(tmp_path_factory, locked_seed_text, engine):
    """The fixture tree built twice, from two checkout paths; the second
    without the engine's layer cache so it really rebuilds."""
    a = make_fixture_tree(tmp_path_factory.mktemp("checkout-a") / "tree", seed_lock=locked_seed_text)
    b = make_fixture_tree(tmp_path_factory.mktemp("elsewhere") / "deeper" / "tree", seed_lock=locked_seed_text)
    ra, _ = build(a, engine, jobs=2)
    rb, _ = build(b, engine, jobs=2, nocache=True)
    return a, b, ra, rb


def test_two_checkouts_give_identical_manifests_and_artifacts(built_pair):
    a, b, ra, rb = built_pair
    assert ra.ok and rb.ok, (ra.failed(), rb.failed())
    assert statuses(ra) == {n: "built" for n in ra.order}
    ma, mb = (a / "manifests/manifest.json").read_bytes(), (b / "manifests/manifest.json").read_bytes()
    assert ma == mb
    assert str(a) not in ma.decode() and str(b) not in mb.decode()
    for name in ra.order:
        assert tree_files(a / "out" / name) == tree_files(b / "out" / name), name


def test_artifacts_are_single_layer_oci_layouts_skopeo_accepts(built_pair):
    a, _, ra, _ = built_pair
    skopeo = require_tool("skopeo")
    for name in ra.order:
        info = oci.verify_layout(a / "out" / name, ra.nodes[name].digest, deep=True)
        assert len(info["manifest"]["layers"]) == 1
        p = subprocess.run([skopeo, "inspect", f"oci:{a / 'out' / name}"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["Layers"] == [info["layer_digest"]]


def test_artifact_contents_are_the_package_files_only(built_pair):
    a, _, ra, _ = built_pair
    ents = oci.layer_entries(oci.read_layout(a / "out" / "top")["layer_path"])
    assert sorted(ents) == ["usr", "usr/share", "usr/share/top", "usr/share/top/both.txt",
                            "usr/share/top/hard.txt", "usr/share/top/link.txt"]
    assert ents["usr/share/top/link.txt"].linkname == "both.txt"
    assert ents["usr/share/top/hard.txt"].islnk()
    assert all(m.mtime <= 1700000000 and m.uname == "" for m in ents.values())


def test_second_build_rebuilds_nothing_and_keeps_the_manifest_bytes(built_pair, engine):
    a, _, ra, _ = built_pair
    before = (a / "manifests/manifest.json").read_bytes()
    res, events = build(a, engine, jobs=2)
    assert statuses(res) == {n: "cached" for n in res.order}
    assert not [e for e in events if e["event"] == "start"]
    assert res.manifest_changed is False
    assert (a / "manifests/manifest.json").read_bytes() == before


def test_changing_one_package_rebuilds_it_and_its_dependents_only(built_pair, engine):
    _, b, _, _ = built_pair
    left = b / "packages" / "left" / "package.yaml"
    left.write_text(left.read_text() + '  echo "one more line" >> "$DESTDIR/usr/share/left/shout.txt"\n')
    res, _ = build(b, engine, jobs=2)
    assert res.ok
    rebuilt = {n for n, s in statuses(res).items() if s == "built"}
    assert rebuilt == {"left", "top"}
    m = json.loads((b / "manifests/manifest.json").read_text())
    assert m["serial"] == 2


def test_cli_table_and_json(built_pair):
    a, _, _, _ = built_pair
    p = run_quorum("build", "--tree", str(a))
    assert p.returncode == 0, p.stderr
    assert "digest" in p.stdout and "cached" in p.stdout and "manifest unchanged" in p.stdout
    p = run_quorum("build", "--tree", str(a), "--json")
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines[-1]["ok"] is True and {n["status"] for n in lines[-1]["nodes"]} == {"cached"}
    assert any(x.get("event") == "cached" for x in lines[:-1])


def test_archive_target_writes_a_loadable_oci_archive(built_pair):
    a, _, ra, _ = built_pair
    p = run_quorum("build", "--tree", str(a), "--archive", "top")
    assert p.returncode == 0, p.stderr
    tgz = a / "out" / "top.tgz"
    assert tgz.exists()
    q = subprocess.run([require_tool("skopeo"), "inspect", f"oci-archive:{tgz}"], capture_output=True, text=True)
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout)["Digest"] == ra.nodes["top"].digest


def test_tampered_source_is_refused_and_not_cached(fixture_tree, engine, tmp_path):
    import hashlib
    genuine = f"genuine {tmp_path}\n".encode()   # unique: not in the session's cache
    sha = hashlib.sha256(genuine).hexdigest()
    (tmp_path / "t.txt").write_bytes(b"tampered\n")
    add_package(fixture_tree, "victim", f"name: victim\nversion: '1'\nsources:\n  - url: file://{tmp_path}/t.txt\n"
                f"    sha256: '{sha}'\nbuild: |\n  mkdir -p $DESTDIR/v\n  cp t.txt $DESTDIR/v/\n")
    res, events = build(fixture_tree, engine, targets=("victim",))
    r = res.nodes["victim"]
    assert r.status == "failed" and r.failure == "fetch"
    assert "t.txt" in r.error and "mismatch" in r.error and f"expected sha256 {sha}" in r.error
    assert hashlib.sha256(b"tampered\n").hexdigest() not in r.error and "other bytes" in r.error
    assert not SourceCache().has(sha)
    assert not (fixture_tree / "out" / "victim").exists()
    assert [e for e in events if e["event"] == "fetch"][0]["origin"].startswith("file://")


def test_cycle_and_missing_dependency_are_one_line_errors(fixture_tree):
    yml = fixture_tree / "packages" / "base" / "package.yaml"
    yml.write_text(yml.read_text().replace("name: base\n", "name: base\ndeps: [top]\n"))
    p = run_quorum("build", "--tree", str(fixture_tree))
    assert p.returncode == 3 and "Traceback" not in p.stderr
    assert "dependency cycle:" in p.stderr and "top" in p.stderr and "base" in p.stderr
    yml.write_text(yml.read_text().replace("deps: [top]", "deps: [nope]"))
    p = run_quorum("graph", "--tree", str(fixture_tree))
    assert p.returncode == 3 and "Traceback" not in p.stderr
    assert "packages/base/package.yaml: deps[0]: dependency 'nope' does not exist" in p.stderr


def test_failing_smoke_test_fails_the_build_and_publishes_nothing(fixture_tree, engine):
    add_package(fixture_tree, "broken", "name: broken\nversion: '1'\nbuild: |\n  mkdir -p $DESTDIR/x\n"
                "test: |\n  echo 'smoke says no'\n  exit 3\n")
    res, _ = build(fixture_tree, engine, targets=("broken",))
    r = res.nodes["broken"]
    assert r.status == "failed" and r.failure == "build" and "smoke test failed" in r.error
    assert any("smoke says no" in line for line in r.log_tail)
    assert Path(r.log_path).exists()
    assert Store(fixture_tree / "out").record("broken") is None


def test_a_device_node_in_the_output_is_refused(fixture_tree, engine):
    add_package(fixture_tree, "devnode", "name: devnode\nversion: '1'\nbuild: |\n"
                "  mkdir -p $DESTDIR/dev\n  mknod $DESTDIR/dev/evil c 1 3 || busybox mknod $DESTDIR/dev/evil c 1 3\n")
    res, _ = build(fixture_tree, engine, targets=("devnode",))
    r = res.nodes["devnode"]
    assert r.status == "failed" and "device node" in r.error
    assert not (fixture_tree / "out" / "devnode").exists()


def test_build_has_no_network(fixture_tree, engine):
    add_package(fixture_tree, "net", "name: net\nversion: '1'\nbuild: |\n"
                "  mkdir -p $DESTDIR/n\n  ls /sys/class/net > $DESTDIR/n/ifaces\n  chmod 644 $DESTDIR/n/ifaces\n")
    res, _ = build(fixture_tree, engine, targets=("net",))
    assert res.ok, res.failed()

    import tarfile
    with tarfile.open(oci.read_layout(fixture_tree / "out" / "net")["layer_path"]) as tf:
        ifaces = tf.extractfile("n/ifaces").read().decode().split()
    assert ifaces == ["lo"]


def test_interrupted_build_leaves_nothing_taken_as_done(fixture_tree, engine, tmp_path):
    # The path makes the script unique, so the engine's layer cache cannot
    # finish the build before the kill.
    add_package(fixture_tree, "slow", f"name: slow\nversion: '1'\nbuild: |\n  # {tmp_path}\n  sleep 8\n"
                "  mkdir -p $DESTDIR/s\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    proc = subprocess.Popen([sys.executable, "-m", "quorum", "build", "--tree", str(fixture_tree), "--json", "slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        ev = json.loads(line)
        if ev.get("event") == "start" and ev.get("name") == "slow":
            break
        assert time.monotonic() < deadline
    time.sleep(1.5)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(fixture_tree / "out")
    assert store.record("slow") is None
    assert not (fixture_tree / "out" / "slow").exists()
    res, _ = build(fixture_tree, engine, targets=("slow",))
    assert res.nodes["slow"].status == "built"
    assert not list((fixture_tree / "out" / ".tmp").iterdir())


def test_gate_passes_on_identical_artifacts_and_stops_everything_downstream_otherwise(fixture_tree, engine):
    same = "mkdir -p $DESTDIR/cc\n  echo compiler > $DESTDIR/cc/bin\n  chmod -R u=rwX,go=rX $DESTDIR\n"
    add_package(fixture_tree, "g1", f"name: g1\nversion: '1'\nbuild: |\n  {same}")
    add_package(fixture_tree, "g2", f"name: g2\nversion: '1'\nbuild: |\n  # another route, same bytes\n  {same}")
    add_package(fixture_tree, "g3", "name: g3\nversion: '1'\nbuild: |\n  mkdir -p $DESTDIR/cc\n"
                "  echo poisoned > $DESTDIR/cc/bin\n  chmod -R u=rwX,go=rX $DESTDIR\n")
    add_package(fixture_tree, "after", "name: after\nversion: '1'\ndeps: [g1]\nbuild: |\n  mkdir -p $DESTDIR/a\n"
                "  chmod -R u=rwX,go=rX $DESTDIR\n")
    cfg = fixture_tree / "quorum.yaml"
    base_cfg = cfg.read_text()
    cfg.write_text(base_cfg + "gates:\n  ddc:\n    identical: [g1, g2]\n")
    res, events = build(fixture_tree, engine, jobs=2)
    assert res.ok and res.gates["ddc"]["result"] == "pass"
    assert res.nodes["after"].status == "built"
    m = json.loads((fixture_tree / "manifests/manifest.json").read_text())
    assert m["checks"]["ddc"]["result"] == "pass"
    assert set(m["checks"]["ddc"]["digests"]) == {"g1", "g2"}

    cfg.write_text(base_cfg + "gates:\n  ddc:\n    identical: [g1, g3]\n")
    touch = fixture_tree / "packages" / "after" / "package.yaml"
    touch.write_text(touch.read_text().replace("mkdir -p $DESTDIR/a", "mkdir -p $DESTDIR/b"))
    before = (fixture_tree / "manifests/manifest.json").read_bytes()
    p = run_quorum("build", "--tree", str(fixture_tree))
    assert p.returncode == 1
    assert "gate ddc: FAIL" in p.stderr and "cc/bin" in p.stderr
    assert (fixture_tree / "manifests/manifest.json").read_bytes() == before   # nothing written
    res2, _ = build(fixture_tree, engine)
    assert res2.nodes["after"].status == "skipped" and "gate ddc" in res2.nodes["after"].error


def test_audit_finds_a_seed_file_shipped_in_a_package(fixture_tree, engine):
    add_package(fixture_tree, "smuggler", "name: smuggler\nversion: '1'\nbuild: |\n  mkdir -p $DESTDIR/bin\n"
                "  cp /bin/busybox $DESTDIR/bin/not-busybox\n  chmod -R u=rwX,go=rX $DESTDIR\n")
    res, _ = build(fixture_tree, engine, jobs=2)
    assert res.ok, res.failed()
    p = run_quorum("audit", "--tree", str(fixture_tree), "--json")
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert [(f["package"], f["path"], f["check"]) for f in doc["findings"]] == \
        [("smuggler", "bin/not-busybox", "seed-file")]
    assert doc["elf_files"] >= 1      # busybox is a static ELF: no dynamic-elf finding
    p = run_quorum("audit", "--tree", str(fixture_tree), "base", "top")
    assert p.returncode == 0 and "clean" in p.stdout
    # An allowance never covers a binary: declaring the copied busybox as
    # "same as seed" still fails the audit.
    yml = fixture_tree / "packages" / "smuggler" / "package.yaml"
    yml.write_text(yml.read_text() + "audit:\n  same-as-seed:\n    bin/not-busybox: 'it is only a copy, honestly'\n")
    p = run_quorum("audit", "--tree", str(fixture_tree), "smuggler", "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["findings"][0]["path"] == "bin/not-busybox"


def test_new_digest_from_unchanged_inputs_is_reported_and_not_written(fixture_tree):
    """#9 item 6: a --no-cache rebuild that gets another digest for the same
    input hash is nondeterminism: said loudly, manifest kept, exit 1."""
    # /proc/sys/kernel/random/uuid differs on every run: a package that is
    # not reproducible, as a real one might be by accident.
    add_package(fixture_tree, "noisy", "name: noisy\nversion: '1'\nbuild: |\n  mkdir -p $DESTDIR/n\n"
                "  cat /proc/sys/kernel/random/uuid > $DESTDIR/n/id\n")
    p = run_quorum("build", "--tree", str(fixture_tree), "-j", "2")
    assert p.returncode == 0, p.stderr
    man = fixture_tree / "manifests" / "manifest.json"
    before = man.read_bytes()
    p = run_quorum("build", "--tree", str(fixture_tree), "--no-cache", "noisy")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "NONDETERMINISTIC" in p.stderr and "noisy" in p.stderr and "Traceback" not in p.stderr
    assert man.read_bytes() == before
    p = run_quorum("build", "--tree", str(fixture_tree), "--no-cache", "--accept-new-digests", "--json")
    assert p.returncode == 0, p.stderr
    assert man.read_bytes() != before


def test_the_exported_layer_is_counted_against_the_build(fixture_tree, engine):
    """#9 item 5: the prelude counts /rootfs in the container and the
    exported layer must match (the mismatch itself is unit-tested: no
    engine here drops files on demand)."""
    add_package(fixture_tree, "counted", "name: counted\nversion: '1'\nbuild: |\n"
                f"  mkdir -p $DESTDIR/a/b\n  echo {time.time_ns()} > $DESTDIR/a/b/f\n")
    res, _ = build(fixture_tree, engine, targets=("counted",))
    assert res.ok, res.failed()
    log = (fixture_tree / "out" / "logs" / "counted.log").read_text()
    assert "quorum-layer-entries: 3" in log
