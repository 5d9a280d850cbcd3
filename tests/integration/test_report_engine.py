"""`quorum report` on what a real build and reproduce leave behind: the
report reads the files the engine run wrote (records, logs, the reproduce
report, the kept diff), not copies made for the test."""
from __future__ import annotations

import pytest

import subprocess

from conftest import ROOT, require_tool, run_quorum
from treeutil import add_package

pytestmark = pytest.mark.engine

# Deliberately not reproducible: the wall clock ends up in the artifact.
CLOCK = """\
name: clock
version: "1"
description: writes the wall-clock time into its artifact
build: |
  mkdir -p "$DESTDIR/clock"
  date +%s%N > "$DESTDIR/clock/now"
  chmod 0644 "$DESTDIR/clock/now"
  chmod 0755 "$DESTDIR/clock"
"""


def test_report_of_a_real_build_and_mismatch(fixture_tree, engine):
    require_tool("dot")
    add_package(fixture_tree, "clock", CLOCK)
    p = run_quorum("build", "--tree", str(fixture_tree), "-j", "2")
    assert p.returncode == 0, p.stdout + p.stderr
    p = run_quorum("reproduce", "--tree", str(fixture_tree), "clock", "base")
    assert p.returncode == 1, p.stdout + p.stderr
    p = run_quorum("report", "--tree", str(fixture_tree), "--json")
    assert p.returncode == 0, p.stderr
    out = fixture_tree / "out" / "report"
    index = (out / "index.html").read_text()
    clock = (out / "packages" / "clock.html").read_text()
    assert 'data-package="clock" data-status="mismatch"' in index
    assert 'data-package="base" data-status="reproduced"' in index
    assert 'data-package="top" data-status="built"' in index      # never rebuilt: not yet
    assert "clock/now" in clock                                    # the file-level diff
    assert "Build log (last lines)" in clock and "No build log" not in clock
    assert "unknown — no trust policy" in index
    # Kept for people (CI keeps out/): what the page of a real mismatch looks like.
    shots = ROOT / "out" / "test-report"
    shots.mkdir(parents=True, exist_ok=True)
    for page, name in ((out / "index.html", "engine-index.png"), (out / "packages" / "clock.html", "engine-clock.png")):
        subprocess.run([require_tool("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1400", f"--user-data-dir={fixture_tree / '.chromium'}",
                        f"--screenshot={shots / name}", page.as_uri()], capture_output=True, timeout=120, check=True)
