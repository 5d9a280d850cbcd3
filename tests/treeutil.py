"""Helpers for tests that need a tree on disk: copy the fixture tree to a
temporary folder, make its pinned source, and lock its seed at test time
(Debian's archive drops superseded versions, so a pin committed today can
vanish; the tests therefore never rely on a committed lock)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "tree"
GREETING = b"hello, reproducible world\n"


def make_fixture_tree(dest: Path, *, srcdir: Path | None = None, seed_lock: str | None = None) -> Path:
    """A copy of tests/fixtures/tree at ``dest`` with its source file created
    in ``srcdir`` and the @SRCDIR@/@GREETING_SHA256@ tokens filled in.
    ``seed_lock`` is the text of a locked seed file to use instead of the
    unlocked one (so that a session locks once, not once per test)."""
    shutil.copytree(FIXTURE, dest, symlinks=True)
    srcdir = srcdir or dest.parent / (dest.name + "-src")
    srcdir.mkdir(parents=True, exist_ok=True)
    (srcdir / "greeting-1.0.txt").write_bytes(GREETING)
    sha = hashlib.sha256(GREETING).hexdigest()
    base = dest / "packages" / "base" / "package.yaml"
    base.write_text(base.read_text().replace("@SRCDIR@", str(srcdir)).replace("@GREETING_SHA256@", sha))
    if seed_lock is not None:
        (dest / "bootstrap" / "seeds" / "busybox.yaml").write_text(seed_lock)
    return dest


def add_package(tree: Path, name: str, text: str, files: dict[str, str] | None = None) -> Path:
    d = tree / "packages" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "package.yaml").write_text(text)
    for rel, content in (files or {}).items():
        (d / rel).write_text(content)
    return d


# An artifact holding the fixture seed's busybox and its applet links: the
# stuff of a build environment made of the tree's own outputs
# (docs/spec/environment.md).  POISON is a line of shell a test may put
# there (":" for none).
TOOLBOX = """name: toolbox
version: '1'
description: the seed's busybox and its applet links, as an artifact of the tree
build: |
  mkdir -p "$DESTDIR/bin"
  cp /bin/busybox "$DESTDIR/bin/busybox"
  # /bin/sh comes from the environment's symlinks
  for a in $(/bin/busybox --list); do
    [ "$a" = sh ] || [ "$a" = busybox ] || ln -s busybox "$DESTDIR/bin/$a"
  done
  POISON
  chmod -R u=rwX,go=rX "$DESTDIR"
"""
