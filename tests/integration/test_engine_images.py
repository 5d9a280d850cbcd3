"""Which engine images quorum removes: only those its own build made (the
instruction that made them carries the build's owner token), never the
shared layer cache under them; `quorum prune` finds what dead builds left."""
from __future__ import annotations

import io
import json
import socket
import tarfile
import uuid

import pytest

from conftest import run_quorum
from quorum.engine import OWNER_LABEL, Engine
from quorum import prune as prunemod

pytestmark = pytest.mark.engine


def context(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def build_owned(engine: Engine, owner: str, nonce: str) -> str:
    cf = b"FROM scratch\nCOPY a /a\n"
    return engine.build(context({"Containerfile": cf, "a": nonce.encode()}), owner=owner)


def parent(engine: Engine, image: str) -> str:
    return engine.api.inspect_image(image)["Parent"]


def test_release_removes_the_builds_own_image_and_keeps_the_cache_under_it(engine):
    nonce = uuid.uuid4().hex
    owner = f"quorum:{socket.gethostname()}:{1}:{nonce}/build/x"
    image = build_owned(engine, owner, nonce)
    assert engine.api.inspect_image(image)["Config"]["Labels"][OWNER_LABEL] == owner
    cache = parent(engine, image)            # the COPY step: layer cache, anyone's
    # The same steps by another owner resolve to the same cache image, and
    # end on an image of their own.
    other = build_owned(engine, owner + "-other", nonce)
    assert other != image and parent(engine, other) == cache
    assert engine.release(image, owner) == 1
    assert not engine.has_image(image)
    assert engine.has_image(cache) and engine.has_image(other)
    assert engine.release(other, owner) == 0          # not made by this owner: untouched
    assert engine.release(other, owner + "-other") == 1
    engine.api.remove_image(cache, noprune=True)


def test_prune_removes_dead_builds_leftovers_and_keeps_live_ones(engine):
    nonce = uuid.uuid4().hex
    host = socket.gethostname()
    dead = f"quorum:{host}:{2 ** 22 + 7}:{nonce}/test/x"       # beyond pid_max: provably not running
    live = f"quorum:{host}:{__import__('os').getpid()}:{nonce}/build/x"
    dead_img, live_img = build_owned(engine, dead, nonce), build_owned(engine, live, nonce)
    cache = parent(engine, dead_img)

    dry = run_quorum("prune", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert dead_img in [x["image"] for x in doc["removed"]] and engine.has_image(dead_img)

    res = prunemod.prune(engine)
    assert dead_img in [x.image for x in res.removed]
    assert live_img in [x.image for x in res.kept]
    assert not engine.has_image(dead_img)
    assert engine.has_image(live_img) and engine.has_image(cache)
    engine.release(live_img, live)
    engine.api.remove_image(cache, noprune=True)
