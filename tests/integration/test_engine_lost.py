"""An engine that dies mid-build (a private dockerd, killed by PID): quorum
says which engine stopped answering and what to do, in one line, exits 2,
and a rerun on the restarted engine succeeds."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from treeutil import add_package

pytestmark = pytest.mark.engine


class PrivateEngine:
    """A dockerd of our own (own data root, exec root, socket; no network
    set-up; vfs storage), so killing it disturbs nobody."""

    def __init__(self, root: Path):
        self.root = root
        (root / "daemon.json").write_text("{}")      # ignore the machine's daemon.json
        self.url = f"unix://{root}/sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--config-file", str(self.root / "daemon.json"), "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "pid"), "-H", self.url,
             "--bridge=none", "--iptables=false", "--storage-driver=vfs"], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while subprocess.run(["docker", "-H", self.url, "info"], capture_output=True).returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < deadline, (self.root / "dockerd.log").read_text()
            time.sleep(0.3)

    def kill(self) -> None:
        """The engine dies at once (SIGKILL); then what it leaves running
        (its containerd, the step container's shim) is stopped too, as a
        machine's engine restart would, so the next start is clean."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reap()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()          # dockerd stops its containerd with it
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reap()

    def _reap(self) -> None:
        """Processes whose command line names our root are ours alone."""
        pids = subprocess.run(["pgrep", "-f", str(self.root) + "/"], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.3)
        # A killed containerd may linger as a zombie (nothing reaps orphans
        # here) that dockerd would take for running: forget its PID.
        (self.root / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root) + "/")]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)


def quorum(engine: PrivateEngine, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"), DOCKER_HOST=engine.url)
    return subprocess.Popen([sys.executable, "-m", "quorum", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_engine_killed_mid_build_is_one_line_naming_it_and_a_rerun_succeeds(fixture_tree, tmp_path):
    add_package(fixture_tree, "slow", "name: slow\nversion: '1'\nbuild: |\n  sleep 4\n  mkdir -p $DESTDIR/s\n"
                "  chmod -R u=rwX,go=rX $DESTDIR\n")
    root = Path(f"/tmp/qe-{os.getpid()}")        # a short path: the socket's must fit 108 bytes
    root.mkdir()
    engine = PrivateEngine(root)
    try:
        engine.start()
        proc = quorum(engine, "build", "--tree", str(fixture_tree), "--json", "slow")
        for line in proc.stdout:
            ev = json.loads(line)
            if ev.get("event") == "start" and ev.get("name") == "slow":
                break
        # Wait until the slow step runs (its container is up), then pull the plug.
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", engine.url, "ps", "-q"], capture_output=True, text=True).stdout == "":
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        t0 = time.monotonic()
        engine.kill()
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == 2, err
        failed = [json.loads(x) for x in out.splitlines() if '"failed"' in x and '"event"' in x]
        assert [f["failure"] for f in failed] == ["engine"]
        msg = failed[0]["error"]
        assert engine.url in msg and "stopped answering" in msg and "docker info" in msg
        assert "\n" not in msg and "Traceback" not in err

        engine.start()
        again = quorum(engine, "build", "--tree", str(fixture_tree), "slow")
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)
