"""tools/setup-test-deps, asked only to check, on a machine that has none
of the tools: one line naming every Debian package, exit 1."""
from __future__ import annotations

import os
import shutil
import subprocess

from conftest import ROOT, TOOL_PACKAGES


def test_check_names_every_missing_package_on_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "id", "python3"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    p = subprocess.run([str(ROOT / "tools" / "setup-test-deps"), "--check"], capture_output=True, text=True,
                       env={"PATH": str(bin_dir)}, timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.count("\n") == 1, p.stderr
    # The tests' own list of tools (conftest.require_tool) is covered.
    for package in TOOL_PACKAGES.values():
        assert f" {package} " in p.stderr or f" {package})" in p.stderr, package
