"""Ctrl-C during a real build: quorum stops within 2 s, the engine build is
cancelled (its container stops), and the lock on out/ is free only after
that; a second process meanwhile is refused with exit 3."""
from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, run_quorum
from quorum.store import Store
from treeutil import add_package

pytestmark = pytest.mark.engine


def running(pattern: str) -> bool:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0


def test_sigint_stops_the_build_and_its_container_promptly(fixture_tree):
    # A sleep no other process runs: it identifies the build's container
    # process on this machine's process table, and misses the layer cache.
    secs = random.randrange(100000, 999999)
    add_package(fixture_tree, "slow", f"name: slow\nversion: '1'\nbuild: |\n  sleep {secs}\n  mkdir -p $DESTDIR/s\n")
    # faulthandler: if quorum ever hangs on the interrupt, SIGABRT makes it
    # print every thread's stack, and the failure shows where it hung.
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), PYTHONFAULTHANDLER="1")
    # SIGINT back to its default in the child: a test run started in the
    # background (`make test &`, a CI runner without job control) inherits
    # SIGINT *ignored*, Python then installs no KeyboardInterrupt handler,
    # and Ctrl-C rightly does nothing, which is not what this test is about.
    proc = subprocess.Popen([sys.executable, "-m", "quorum", "build", "--tree", str(fixture_tree), "--json", "slow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        interrupt_and_check(proc, secs, fixture_tree)
    finally:
        if proc.poll() is None:
            proc.kill()


def interrupt_and_check(proc: subprocess.Popen, secs: int, fixture_tree) -> None:
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        if json.loads(line).get("name") == "slow":
            break
    # Keep reading: a child whose stdout pipe fills up blocks on its next
    # event, and that would be the test's hang, not quorum's.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    while not running(f"sleep {secs}"):
        assert time.monotonic() < deadline and proc.poll() is None, "the slow step never started"
        time.sleep(0.2)

    other = run_quorum("build", "--tree", str(fixture_tree), "slow")
    lock = fixture_tree / "out" / ".quorum" / "lock"
    assert other.returncode == 3, other.stderr
    assert str(lock) in other.stderr and f"PID {proc.pid}" in other.stderr

    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=10)
        raise AssertionError("quorum did not stop within 10 s of SIGINT; its threads:\n"
                             + proc.stderr.read()[-6000:]) from None
    took = time.monotonic() - t0
    assert took < 2.0, f"took {took:.1f}s to stop"
    assert proc.returncode == 130
    assert "interrupted" in proc.stderr.read()
    # The engine kills the cancelled build's container; give it a moment.
    for _ in range(50):
        if not running(f"sleep {secs}"):
            break
        time.sleep(0.1)
    assert not running(f"sleep {secs}"), "the build's container kept running"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # free
    finally:
        os.close(fd)
    assert Store(fixture_tree / "out").record("slow") is None
