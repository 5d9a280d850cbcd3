"""An engine that cannot be reached gets a message that says how to start
one, never a docker-py traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from quorum.engine import Engine
from quorum.errors import EngineError


def test_unreachable_engine_says_how_to_start_one(tmp_path):
    with pytest.raises(EngineError) as ei:
        Engine(f"unix://{tmp_path}/no-such.sock").client
    msg = str(ei.value)
    assert "cannot reach a Docker engine" in msg and "systemctl start docker" in msg and "dockerd" in msg


def test_cli_build_without_engine_is_a_clear_error(tmp_path, locked_seed_text):
    from treeutil import make_fixture_tree
    t = make_fixture_tree(tmp_path / "tree", seed_lock=locked_seed_text)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    p = subprocess.run([sys.executable, "-m", "quorum", "build", "--tree", str(t), "busybox", "base"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert "cannot reach a Docker engine" in p.stderr and "start the Docker engine" in p.stderr
