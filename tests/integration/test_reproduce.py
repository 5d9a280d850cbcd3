"""reproduce on the real engine: honest verdicts under variations."""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from conftest import run_quorum
from quorum import build as buildlib
from quorum import reproduce as repro
from quorum.engine import Engine
from quorum.store import Store
from quorum.tree import load_tree
from treeutil import add_package

pytestmark = pytest.mark.engine

LEAKY = """\
name: leaky
version: "1"
description: >-
  leaks the host name, the wall clock, the CPU count, the umask and the
  build user
build: |
  mkdir -p "$DESTDIR/leak"
  hostname > "$DESTDIR/leak/hostname"
  date +%s > "$DESTDIR/leak/clock"
  nproc > "$DESTDIR/leak/cpus"
  echo stable > "$DESTDIR/leak/umask-file"
  id -u > "$DESTDIR/leak/uid"
  chmod 0644 "$DESTDIR/leak/hostname" "$DESTDIR/leak/clock" "$DESTDIR/leak/cpus" "$DESTDIR/leak/uid"
"""


def test_fixture_tree_reproduces_under_every_variation(fixture_tree, engine):
    res = buildlib.build(load_tree(fixture_tree), engine=engine, options=buildlib.Options(jobs=2))
    assert res.ok, res.failed()
    r = repro.reproduce(load_tree(fixture_tree), all_=True, jobs=2, engine=engine)
    assert {v.name: v.verdict for v in r.verdicts} == {n: "REPRODUCED" for n in res.order}
    assert r.exit_code == 0
    assert set(r.applied) >= {"build_path", "timezone", "umask", "cpus", "environment", "hostname", "user"}
    # never claimed when they could not act: the fixture seed (busybox) has
    # no locale data, and the fixture tree no seed with GCC to compile the
    # preload shim of the clock and file-order variations in (those act in
    # test_variations_act.py)
    assert "no locale data" in r.not_applied["locale"]
    assert {"clock", "file_order"} <= set(r.not_applied)
    assert "GCC" in r.not_applied["clock"]
    assert json.loads((fixture_tree / "out/reproduce/report.json").read_text())["exit_code"] == 0
    # A second reproduce while one runs stops before touching out/reproduce/.
    marker = fixture_tree / "out/reproduce/.store/still-here"
    marker.write_text("x")
    with Store(fixture_tree / "out/reproduce").lock():
        p = run_quorum("reproduce", "--tree", str(fixture_tree), "base")
    assert p.returncode == 3, p.stderr
    assert str(fixture_tree / "out/reproduce/.quorum/lock") in p.stderr and marker.exists()


def test_leaky_package_is_a_mismatch_and_the_diff_names_files_and_lines(fixture_tree, engine):
    add_package(fixture_tree, "leaky", LEAKY)
    res = buildlib.build(load_tree(fixture_tree), engine=engine, options=buildlib.Options(jobs=2))
    assert res.ok, res.failed()
    p = run_quorum("reproduce", "--tree", str(fixture_tree), "leaky")
    assert p.returncode == 1, p.stdout + p.stderr
    out = p.stdout
    assert "MISMATCH" in out
    d = fixture_tree / "out" / "reproduce" / "leaky"
    for f in ("leak/hostname", "leak/clock", "leak/cpus", "leak/umask-file", "leak/uid"):
        assert f in out, f
    # the differing lines themselves: the CPU count went from 2 to 1, the
    # build user from root to 4242
    assert "-2" in out and "+1" in out
    assert "-0" in out and "+4242" in out
    assert "mode: 0644 -> 0664" in out        # umask 022 -> 002 on the unchmodded file
    # the leak/ folder was made by mkdir -p under umask 002: the prelude
    # gives folders fixed modes, so it is not among the differences
    assert "~ leak\n" not in out
    # the note is under the table, whole, with the reports and the command
    # that looks deeper at the two kept layer blobs
    assert "[1] leaky: digests differ" in out and str(d / "diff.txt") in out
    assert "diffoscope on the two kept layers: diffoscope --html" in out and "/rebuilt/blobs/sha256/" in out
    report = json.loads((fixture_tree / "out/reproduce/report.json").read_text())
    assert {"clock", "file_order"} <= set(report["not_applied"]) and "user" in report["applied"]
    # --json: the last event says the reproduction did not succeed
    p = run_quorum("reproduce", "--tree", str(fixture_tree), "--json", "--no-diffoscope", "leaky")
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    finish = [e for e in events if e.get("event") == "finish"]
    assert len(finish) == 1 and finish[0]["ok"] is False and finish[0]["verdicts"]["MISMATCH"] == 1, p.stdout
    assert (d / "original").is_dir() and (d / "rebuilt").is_dir() and (d / "diff.txt").exists()
    assert json.loads((d / "diff.json").read_text())


class _VanishingEngine:
    """A unix-socket proxy in front of the real engine that can be cut, so
    the engine 'disappears' in the middle of a rebuild."""

    def __init__(self, path: Path, target: str | None = None):
        host = os.environ.get("DOCKER_HOST", "")
        target = target or (host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock")
        self.path, self.target = str(path), target
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(self.path)
        self.srv.listen(16)
        self.conns: list[socket.socket] = []
        self.cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if self.cut:
                c.close()
                continue
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def disappear(self):
        self.cut = True
        self.srv.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_engine_vanishing_mid_rebuild_is_failed_not_mismatch(fixture_tree, engine, tmp_path):
    add_package(fixture_tree, "slowish", "name: slowish\nversion: '1'\nbuild: |\n  sleep 4\n  mkdir -p $DESTDIR/s\n"
                "  chmod 0755 $DESTDIR/s\n")
    res = buildlib.build(load_tree(fixture_tree), engine=engine, options=buildlib.Options(jobs=2))
    assert res.ok, res.failed()
    # docker-py wants a short socket path
    sock = Path("/tmp") / f"qv-{os.getpid()}.sock"
    sock.unlink(missing_ok=True)
    proxy = _VanishingEngine(sock)
    try:
        def emit(ev):
            if ev.get("event") == "start" and ev.get("name") == "slowish":
                threading.Timer(1.5, proxy.disappear).start()
        r = repro.reproduce(load_tree(fixture_tree), packages=["slowish"], engine=Engine(f"unix://{sock}"),
                            emit=emit)
    finally:
        proxy.disappear()
        sock.unlink(missing_ok=True)
    (v,) = r.verdicts
    assert v.verdict == "FAILED" and "engine" in v.reason, v
    assert r.exit_code == 2


def test_vary_parsing():
    assert repro.parse_vary("-all,+timezone") == {"timezone"}
    assert {"file_order", "user", "clock", "locale"} <= repro.parse_vary(None)
    assert "umask" not in repro.parse_vary("+all,-umask")
    with pytest.raises(Exception, match="unknown variation"):
        repro.parse_vary("+nope")
