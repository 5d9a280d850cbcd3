"""The type ratchet: the modules listed in pyproject.toml's [tool.mypy]
``files`` are mypy-clean, and stay so.

The style rule is "type hints that mypy accepts"; this test is what holds
the modules already clean to it.  To move a module in, make
``mypy tools/quorum/<module>.py`` report nothing and add it to ``files``;
once every function in it has hints, add it to the override with
``disallow_untyped_defs`` as well.
mypy's incremental cache (.mypy_cache/ at the top of the checkout) makes a
run after a small change take a few seconds.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mypy"]


def _module(path: str) -> str:
    """tools/quorum/cli/trust.py -> quorum.cli.trust"""
    parts = list(Path(path).relative_to("tools").with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_ratchet_lists_name_existing_clean_modules():
    files = _config()["files"]
    assert files == sorted(files), "keep [tool.mypy] files sorted"
    missing = [f for f in files if not (ROOT / f).is_file()]
    assert not missing, f"[tool.mypy] files names modules that do not exist: {missing}"
    # The fully annotated modules (disallow_untyped_defs) are a subset of
    # the checked ones: a module only there would never be checked.
    strict = [m for o in _config().get("overrides", []) if o.get("disallow_untyped_defs")
              for m in o["module"]]
    unchecked = sorted(set(strict) - {_module(f) for f in files})
    assert not unchecked, f"fully annotated but not in [tool.mypy] files: {unchecked}"


def test_listed_modules_are_mypy_clean():
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed: pip install -e '.[test]' (it is in the test extra)")
    # No paths on the command line: mypy checks exactly the configured files.
    p = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                        "--cache-dir", str(ROOT / ".mypy_cache"), "--no-color-output", "--no-error-summary"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and not out, (
        f"mypy found type errors in modules that were clean (exit {p.returncode}):\n{out}")
