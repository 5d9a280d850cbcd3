"""The fixture tree over two real engines: the machine's and a private
dockerd reached over TCP with TLS inside a network namespace of its own
(tests/enginehost.py), so it is a separate host to quorum.

* byte-identical manifest to a one-engine build, both engines used, each
  dependency transferred at most once per engine;
* the second engine killed mid-build: the build finishes on the first,
  exit 0, same manifest, and the event stream shows the requeue;
* reproduce --elsewhere: every rebuild on the other engine, REPRODUCED.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, run_quorum
from treeutil import add_package

pytestmark = pytest.mark.engine

LOCAL = "unix:///var/run/docker.sock,name=local"


def engine_flag(host, tmp: Path, *, slots: int = 1) -> str:
    """--engine for the private engine: its client TLS files in Docker's
    folder layout (ca.pem, cert.pem, key.pem), as a user would keep them."""
    d = tmp / "tls-second"
    if not d.exists():
        d.mkdir()
        for part in ("ca", "cert", "key"):
            shutil.copyfile(getattr(host.tls, part), d / f"{part}.pem")
        os.chmod(d / "key.pem", 0o600)
    return f"{host.url},name=second,slots={slots},tls={d}"


def events(stdout: str) -> list[dict]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{") and '"event"' in x]


def one_engine_manifest(fixture_tree: Path, tmp: Path) -> bytes:
    one = tmp / "one"
    shutil.copytree(fixture_tree, one, symlinks=True)
    p = run_quorum("build", "--tree", str(one), "--engine", LOCAL)
    assert p.returncode == 0, p.stderr
    return (one / "manifests" / "manifest.json").read_bytes()


def test_two_engines_build_the_one_engine_manifest_and_reproduce_elsewhere(fixture_tree, second_engine, tmp_path):
    expected = one_engine_manifest(fixture_tree, tmp_path)
    second = engine_flag(second_engine, tmp_path)
    p = run_quorum("build", "--tree", str(fixture_tree), "--json", "--engine", LOCAL, "--engine", second)
    assert p.returncode == 0, p.stderr
    assert (fixture_tree / "manifests" / "manifest.json").read_bytes() == expected
    evs = events(p.stdout)
    starts = [e for e in evs if e["event"] == "start"]
    # packages on both engines; the seed is the coordinator's own (no engine)
    assert {e["engine"] for e in starts if e["kind"] != "seed"} == {"local", "second"}, starts
    assert {e["engine"] for e in starts if e["kind"] == "seed"} == {None}
    loads = Counter((e["name"], e["engine"]) for e in evs if e["event"] == "load")
    assert loads and max(loads.values()) == 1, loads
    # every event about a node names its engine (None: it ran on none)
    assert all("engine" in e for e in evs if e.get("name") in {s["name"] for s in starts})
    summary = json.loads(p.stdout.splitlines()[-1])
    assert {n["engine"] for n in summary["nodes"] if n["status"] == "built" and n["kind"] != "seed"} == \
        {"local", "second"}

    # Rebuild every package on the engine that did not build it: with the
    # pool {local, second}, each goes to the other one.
    p = run_quorum("reproduce", "--tree", str(fixture_tree), "--all", "--json", "--no-diffoscope", "-j", "2",
                   "--engine", LOCAL, "--engine", second, "--elsewhere", timeout=900)
    assert p.returncode == 0, p.stderr + p.stdout[-2000:]
    report = json.loads((fixture_tree / "out" / "reproduce" / "report.json").read_text())
    pkgs = [v for v in report["verdicts"] if v["kind"] != "seed"]
    assert pkgs and all(v["verdict"] == "REPRODUCED" for v in report["verdicts"]), report["verdicts"]
    for v in pkgs:
        assert v["built_on"] in ("local", "second") and v["rebuilt_on"] in ("local", "second")
        assert v["rebuilt_on"] != v["built_on"], v

    # a pool that holds only the engine that built something: refused, naming the remedy
    p = run_quorum("reproduce", "--tree", str(fixture_tree), "--all", "--no-diffoscope", "--engine", LOCAL,
                   "--elsewhere")
    assert p.returncode == 3, p.stderr
    assert "--elsewhere" in p.stderr and "add another with --engine" in p.stderr and "Traceback" not in p.stderr


def test_second_engine_killed_mid_build_requeues_on_the_first(fixture_tree, second_engine, tmp_path):
    # A slow package that lands on the second engine: the local engine's
    # only slot is taken by "hold", which starts first (it is listed first
    # in build order) and lasts longer.
    add_package(fixture_tree, "hold", "name: hold\nversion: '1'\nbuild: |\n  sleep 6\n  mkdir -p $DESTDIR/h\n"
                "  chmod -R u=rwX,go=rX $DESTDIR\n")
    add_package(fixture_tree, "slow", "name: slow\nversion: '1'\nbuild: |\n  sleep 30\n  mkdir -p $DESTDIR/s\n"
                "  chmod -R u=rwX,go=rX $DESTDIR\n")
    expected = one_engine_manifest(fixture_tree, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    proc = subprocess.Popen([sys.executable, "-m", "quorum", "build", "--tree", str(fixture_tree), "--json",
                             "--engine", LOCAL, "--engine", engine_flag(second_engine, tmp_path)],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[dict] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("{") and '"event"' in line:
                ev = json.loads(line)
                seen.append(ev)
                if ev["event"] == "start" and ev["engine"] == "second" and ev["kind"] != "seed":
                    break
        else:
            pytest.fail(f"nothing started on the second engine: {seen}")
        # Wait until its step runs (a container is up on the second engine), then pull the plug.
        deadline = time.monotonic() + 120
        while subprocess.run(["docker", "-H", second_engine.admin_url, "ps", "-q"], capture_output=True,
                             text=True).stdout == "":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        second_engine.kill()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    evs = seen + events(out)
    requeues = [e for e in evs if e["event"] == "requeue"]
    # whatever ran on the second engine when it died moved to the first
    assert requeues and all(e["engine"] == "second" for e in requeues), requeues
    assert any(e["event"] == "engine" and e["engine"] == "second" and e["health"] == "unhealthy" for e in evs)
    assert not any(e["event"] == "failed" for e in evs)
    after = evs[evs.index(requeues[0]):]
    assert {e["engine"] for e in after if e["event"] == "start"} == {"local"}
    assert (fixture_tree / "manifests" / "manifest.json").read_bytes() == expected
