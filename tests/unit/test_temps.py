"""Temporaries of killed runs are collected; a live run's are left alone."""
from __future__ import annotations

import os
import subprocess
import sys

from quorum import canon, temps


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_write_collects_dead_runs_temps_only(tmp_path):
    dead, live = dead_pid(), os.getppid()
    stale = tmp_path / f".manifest.json.{dead}.abc123.tmp"
    busy = tmp_path / f".manifest.json.{live}.def456.tmp"
    other = tmp_path / ".not-ours.tmp"
    for p in (stale, busy, other):
        p.write_text("x")
    canon.atomic_write(tmp_path / "manifest.json", b"{}\n")
    assert not stale.exists() and busy.exists() and other.exists()
    assert (tmp_path / "manifest.json").read_bytes() == b"{}\n"
    # And our own temp is gone after a successful write.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, other.name, "manifest.json"])


def test_sweep_removes_dead_owners_folders(tmp_path):
    dead = dead_pid()
    (tmp_path / f"qg-{dead}.x1y2").mkdir()
    (tmp_path / f"qg-{dead}.x1y2" / "pubring.kbx").write_text("k")
    mine = temps.mkdtemp(tmp_path, "qg-")
    removed = temps.sweep(tmp_path, "qg-")
    assert [p.name for p in removed] == [f"qg-{dead}.x1y2"]
    assert mine.exists()
