"""containers-signature(5) payloads and the lookaside layout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from quorum import simplesign

D = "sha256:" + "ab" * 32


def test_payload_has_exactly_the_critical_fields():
    doc = json.loads(simplesign.payload("quorum/hello:1.0", D))
    assert doc["critical"] == {"type": "atomic container signature",
                               "image": {"docker-manifest-digest": D},
                               "identity": {"docker-reference": "quorum/hello:1.0"}}
    assert set(doc["optional"]) == {"creator"}          # no timestamp: a pure function of the image
    assert simplesign.parse_payload(simplesign.payload("quorum/hello:1.0", D)) == ("quorum/hello:1.0", D)


@pytest.mark.parametrize("doc", [
    {"critical": {"type": "other", "image": {"docker-manifest-digest": D}, "identity": {"docker-reference": "a/b"}}},
    {"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": "md5:x"},
                  "identity": {"docker-reference": "a/b"}}},
    {"critical": {"type": "atomic container signature", "image": {"docker-manifest-digest": D},
                  "identity": {"docker-reference": "a/b"}, "extra": 1}},
    {"critical": {}, "surprise": 1}, [],
])
def test_parse_payload_is_strict(doc):
    with pytest.raises(simplesign.SimpleSignError):
        simplesign.parse_payload(json.dumps(doc).encode())


def test_references_tags_and_lookaside_paths():
    assert simplesign.reference("quorum", "hello", "2.12") == "quorum/hello:2.12"
    assert simplesign.reference("registry.example.org/dist", "zlib", "1.3") == "registry.example.org/dist/zlib:1.3"
    # The lookaside layout is keyed by the repository path without its host.
    assert simplesign.repository_path("registry.example.org/dist", "zlib") == "dist/zlib"
    d = simplesign.lookaside_dir(Path("/s"), "quorum", "hello", D)
    assert d == Path("/s/quorum/hello@sha256=" + "ab" * 32)
    # The reference is the artifact's one name (imageref), not a second mapping.
    assert simplesign.reference("quorum", "tcc-musl", "0.9.27+git1") == "quorum/tcc-musl:0.9.27_git1"
    with pytest.raises(simplesign.SimpleSignError):
        simplesign.lookaside_dir(Path("/s"), "quorum", "hello", "sha256:../../x")


def test_signature_numbering_has_no_gaps(tmp_path):
    assert simplesign.write(tmp_path, b"one").name == "signature-1"
    assert simplesign.write(tmp_path, b"two").name == "signature-2"
    assert simplesign.write(tmp_path, b"ONE", index=1).name == "signature-1"
    assert [p.read_bytes() for p in simplesign.signature_files(tmp_path)] == [b"ONE", b"two"]
