"""The exported layer must hold as many entries as the build made."""
from __future__ import annotations

import io
import tarfile

import pytest

from quorum import layercheck
from quorum.errors import EngineError


def layer(tmp_path, names):
    p = tmp_path / "layer.tar"
    with tarfile.open(p, "w") as tf:
        for n in names:
            ti = tarfile.TarInfo(n)
            if n.endswith("/"):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                tf.addfile(ti, io.BytesIO(b""))
    return p


def test_counter_takes_the_last_marker_line():
    c = layercheck.Counter()
    for line in ["make: ok", "quorum-layer-entries: 3", "quorum-layer-entries: 5\n", "quorum-layer-entries: x"]:
        c.line(line)
    assert c.expected == 5


def test_matching_count_passes_and_a_lost_file_is_an_engine_error(tmp_path):
    p = layer(tmp_path, ["./", "usr/", "usr/bin/", "usr/bin/x"])
    layercheck.check(p, 3, package="x")
    layercheck.check(p, None, package="x")          # step was cached: nothing to compare
    with pytest.raises(EngineError, match="exported 3 entries for x, but the build made 4"):
        layercheck.check(p, 4, package="x")
