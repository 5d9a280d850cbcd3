from __future__ import annotations

import json

import pytest

from quorum import manifest
from quorum.manifest import Entry, ManifestError


def entries(d="sha256:" + "a" * 64):
    return {"b": Entry("package", "1", d, "sha256:" + "1" * 64, 10),
            "a": Entry("seed", "2 debs", "sha256:" + "b" * 64, "sha256:" + "2" * 64, 20)}


def test_canonical_bytes_sorted_with_newline():
    m = manifest.updated(None, "t", entries())
    b = m.to_bytes()
    assert b.endswith(b"}\n") and not b.endswith(b"\n\n")
    doc = json.loads(b)
    assert list(doc["artifacts"]) == ["a", "b"]
    assert b == json.dumps(doc, sort_keys=True, indent=2, separators=(",", ": ")).encode() + b"\n"
    assert manifest.parse(b).to_bytes() == b


def test_serial_only_moves_with_digests():
    m1 = manifest.updated(None, "t", entries())
    m1.expires, m1.commit = "2027-01-01T00:00:00Z", "c" * 40
    same = manifest.updated(m1, "t", entries())
    assert same.to_bytes() == m1.to_bytes()
    changed = manifest.updated(m1, "t", entries("sha256:" + "f" * 64))
    assert changed.serial == 2 and changed.expires is None and changed.commit is None


def test_write_is_atomic_and_reports_change(tmp_path):
    p = tmp_path / "manifests" / "manifest.json"
    m = manifest.updated(None, "t", entries())
    assert manifest.write(p, m) is True
    assert manifest.write(p, m) is False
    assert not [x for x in p.parent.iterdir() if x.name != "manifest.json"]


@pytest.mark.parametrize("data,msg", [
    (b"{", "not valid JSON"),
    (b'{"format": "other/9"}', "unknown format"),
    (b'{"format": "quorum.manifest/1", "tree": {"name": "t"}, "serial": 0}', "serial"),
    (b'{"format": "quorum.manifest/1"}', "malformed"),
])
def test_parse_errors(data, msg):
    with pytest.raises(ManifestError, match=msg):
        manifest.parse(data, "m.json")
