"""The default tree's figures for `make bench` (issue #8): rebuilding is
measured against building, and Podman against Docker, on the tree we ship.

  R2  `quorum reproduce --all -j 2` of the default tree against its cold
      `quorum build -j 2`, in the same run: a copy of the tree with this
      run's own SOURCE_DATE_EPOCH (so the engine's layer cache holds nothing
      for it: the build is cold; the source cache is warm, fetching is not
      what is measured), an empty out/.
  R3  the same `reproduce --all -j 2` with the rebuild on a private Podman
      service (`podman system service`, vfs storage, runc; own socket and
      storage, stopped by PID) against the Docker rebuild of R2.

Both take the default tree's real time (several minutes each on 2 cores),
so they run only when asked: `make bench BENCH_ARGS=--only=R2,R3`.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_TREE_PARTS = ("quorum.yaml", "bootstrap", "packages")


def copy_default_tree(dest: Path, epoch: int) -> Path:
    """The repository's tree (definitions only, no out/ and no manifest)
    with ``epoch`` as its SOURCE_DATE_EPOCH."""
    dest.mkdir(parents=True)
    for part in _TREE_PARTS:
        src = REPO / part
        if not src.exists():
            raise RuntimeError(f"{src} is missing: run the bench from a checkout of quorum")
        if src.is_dir():
            shutil.copytree(src, dest / part, symlinks=True)
        else:
            shutil.copy(src, dest / part)
    (dest / "manifests").mkdir()
    cfg = dest / "quorum.yaml"
    cfg.write_text(re.sub(r"source_date_epoch: \d+", f"source_date_epoch: {epoch}", cfg.read_text()))
    return dest


# What Podman needs in this container, and why:
# - vfs: it needs no mounts, so a test that dies leaves nothing mounted,
#   and it works whatever file system the temporary folder is on (the
#   price is a full copy of every layer, which R3 measures).
# - runc: the container's cgroups are v1 with a v2 "unified" mount
#   (hybrid), which crun (Debian podman's default runtime) refuses for every
#   RUN step: "cgroups in hybrid mode not supported".  runc works on any.
# Nothing else (no rlimits, no cgroup manager, no network set-up: quorum's
# builds run with the network off).
_CONTAINERS_CONF = '[engine]\nruntime = "runc"\n'


@contextlib.contextmanager
def podman_service(workdir: Path) -> Iterator[str]:
    """A private `podman system service` (own configuration, vfs storage,
    runc: this container's cgroups defeat crun); yields its URL, stops it by
    PID and removes its storage."""
    from .engine import Engine
    from .errors import EngineError
    exe = shutil.which("podman")
    if exe is None:
        raise RuntimeError("podman is not installed (tools/setup-test-deps installs it)")
    d = workdir / "podman"
    d.mkdir(parents=True)
    (d / "containers.conf").write_text(_CONTAINERS_CONF)
    (d / "storage.conf").write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{d / "root"}"\n'
                                    f'runroot = "{d / "run"}"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(d / "containers.conf"),
               CONTAINERS_STORAGE_CONF=str(d / "storage.conf"))
    url = f"unix://{d / 'podman.sock'}"
    with open(d / "service.log", "wb") as log:
        proc = subprocess.Popen([exe, "system", "service", "--time=0", url], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    Engine(url).client
                    break
                except EngineError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("podman system service did not come up: "
                                           + (d / "service.log").read_text()[-500:]) from None
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            # vfs layers are plain folders; podman may leave mounts of its
            # run folder behind
            subprocess.run(["podman", "--root", str(d / "root"), "--runroot", str(d / "run"), "system", "reset",
                            "--force"], env=env, capture_output=True, timeout=300)
            shutil.rmtree(d, ignore_errors=True)
