"""Who is to blame when a build step fails: the package, or the engine's
state.  A scripted stand-in for docker-py's API feeds Engine.build the
build streams the real engine sends; the scheduler's retry is checked with
a stand-in job.  (The real-engine proof is tests/integration/
test_engine_sharing.py and test_engine_lost.py.)"""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from quorum.engine import Engine
from quorum.errors import BuildError, EngineError


class ScriptedAPI:
    def __init__(self, chunks: list[dict], answers: bool = True):
        self.chunks, self._answers = chunks, answers

    def build(self, **kw):
        yield from self.chunks

    def _url(self, path: str) -> str:
        return path

    def get(self, url, timeout):
        if not self._answers:
            raise ConnectionError("refused")
        return SimpleNamespace(ok=True)


def engine_with(chunks: list[dict], answers: bool = True) -> Engine:
    e = Engine("unix:///run/test-engine.sock")
    e._client = SimpleNamespace(api=ScriptedAPI(chunks, answers))
    return e


def build(e: Engine):
    return e.build(io.BytesIO(b""), owner="quorum:h:1:x/build/p")


@pytest.mark.parametrize("error", [
    "failed to export image: failed to set parent sha256:e2: unknown parent image ID sha256:e2",
    'unable to find image "sha256:099e"',
    "No such image: sha256:099e",
])
def test_a_lost_image_is_the_engines_failure(error):
    with pytest.raises(EngineError) as ei:
        build(engine_with([{"stream": "Step 1/3 : FROM scratch\n"}, {"error": error}]))
    assert "unix:///run/test-engine.sock" in str(ei.value) and "docker info" in str(ei.value)


def test_a_failing_step_is_the_packages_while_the_engine_answers():
    err = {"error": "The command '/bin/sh -eu /build/.quorum/build.sh' returned a non-zero code: 1"}
    with pytest.raises(BuildError):
        build(engine_with([err]))
    with pytest.raises(EngineError):           # the engine went away with the step
        build(engine_with([err], answers=False))


# Retrying an engine's failure (once while it answers; requeued elsewhere when
# it does not) is the scheduler's: tests/unit/test_scheduler.py.
