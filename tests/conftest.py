"""Session-wide set-up for the tests.

* The source cache and apt's private configuration live in a temporary
  XDG_CACHE_HOME, so the tests never touch (or trust) the user's cache.
* The fixture seed is locked once per session, at test time, against the
  machine's Debian archive: a lock committed to the repository could name a
  version the archive has since dropped.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="quorum-tests-"))
os.environ["XDG_CACHE_HOME"] = str(_SESSION_TMP / "cache")
os.environ["XDG_STATE_HOME"] = str(_SESSION_TMP / "state")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


@pytest.fixture(scope="session")
def engine():
    """The real engine.  Engine tests fail (not skip) without one: CI's
    .ci/run starts dockerd, and a silent skip would let a broken build
    loop land."""
    from quorum.engine import Engine
    e = Engine()
    e.client  # raises EngineError with how to start it
    return e


@pytest.fixture(scope="session")
def locked_seed_text(session_tmp) -> str:
    """The fixture's busybox seed, locked now through the machine's apt."""
    from treeutil import make_fixture_tree
    from quorum import seed as seedmod
    from quorum.fetch import SourceCache
    from quorum.tree import load_tree
    t = make_fixture_tree(session_tmp / "lock-tree")
    tree = load_tree(t)
    s = tree.seeds["busybox"]
    seedmod.write_lock(s, seedmod.lock(s, SourceCache()))
    return s.definition_file.read_text()


@pytest.fixture
def fixture_tree(tmp_path, locked_seed_text) -> Path:
    from treeutil import make_fixture_tree
    return make_fixture_tree(tmp_path / "tree", seed_lock=locked_seed_text)


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory):
    """A second, empty engine on a "separate host": a private dockerd in a
    network namespace of its own, reached over TCP with TLS
    (tests/enginehost.py); stopped and removed after the module.  Skips,
    naming the reason, only where dockerd cannot be started here (not root,
    no namespaces); anything else fails."""
    from enginehost import CannotStart, private_engine
    with contextlib.ExitStack() as stack:
        try:
            host = stack.enter_context(private_engine(tmp_path_factory.mktemp("engine2")))
        except CannotStart as e:
            pytest.skip(f"no second engine on this machine: {e}")
        yield host


# The tools the tests use for real, and the Debian package of each: what
# tools/setup-test-deps installs.  A missing tool fails its test with the
# remedy; it never skips, or CI would go green without testing anything.
TOOL_PACKAGES = {
    "skopeo": "skopeo", "umoci": "umoci", "podman": "podman", "gpg": "gnupg", "gpg-agent": "gpg-agent",
    "docker-registry": "docker-registry", "docker": "docker.io", "runc": "runc",
    "dot": "graphviz", "chromium": "chromium",
    # the second engine (tests/enginehost.py) and the ssh:// checks
    "openssl": "openssl", "ip": "iproute2", "nsenter": "util-linux", "ssh": "openssh-client",
}


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a service a test started (by its PID, never by name): TERM,
    then KILL if it does not go within ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def require_tool(tool: str) -> str:
    """The tool's path, or fail the test saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run tools/setup-test-deps (as root), "
                    f"or apt-get install {TOOL_PACKAGES[tool]}", pytrace=False)
    return path


def run_quorum(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """The CLI as a user runs it (a separate process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    return subprocess.run([sys.executable, "-m", "quorum", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def refused(p: subprocess.CompletedProcess, *needles: str) -> str:
    """One line on stderr, exit 3, no traceback; the line contains needles."""
    assert p.returncode == 3, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
