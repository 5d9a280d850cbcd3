"""Image names: one function, valid under both the Docker reference and the
OCI ref.name grammars whatever the version holds."""
from __future__ import annotations

import pytest

from quorum import imageref
from quorum.errors import QuorumError
from quorum.model import NAME_RE, VERSION_RE


@pytest.mark.parametrize("version,tag", [
    ("5.4.4", "5.4.4"),
    ("0.9.27+git20200814.62c30a4a", "0.9.27_git20200814.62c30a4a"),
    ("1:2.3+dfsg~rc1", "1_2.3_dfsg_rc1"),
    ("28 debs", "28_debs"),                 # what seeds were once called
    ("1.0~~rc", "1.0_rc"),                  # no doubled separators (OCI allows only "--")
    ("2.0-", "2.0"),                        # no separator at the end
    ("1.0RC1", "1.0RC1"),                   # a tag may keep its case
    ("9" * 200, "9" * 128),                 # Docker's tag limit
])
def test_tags(version, tag):
    assert imageref.tag_for(version) == tag


@pytest.mark.parametrize("namespace,name,version,expect", [
    ("quorum", "tcc-musl", "0.9.27+git20200814.62c30a4a", "quorum/tcc-musl:0.9.27_git20200814.62c30a4a"),
    ("quorum", "tools", "28debs-0123456789ab", "quorum/tools:28debs-0123456789ab"),
    ("quorum", "lua", "5.4.4", "quorum/lua:5.4.4"),
    ("registry.example.org/dist", "zlib", "1.3", "registry.example.org/dist/zlib:1.3"),
    ("quorum", "g++", "12", "quorum/gpp:12"),
    ("quorum", "libstdc++6", "12", "quorum/libstdcpp6:12"),
])
def test_references_satisfy_both_grammars(namespace, name, version, expect):
    ref = imageref.reference(namespace, name, version)
    assert str(ref) == expect
    assert imageref.is_docker_reference(str(ref))
    assert imageref.is_oci_ref_name(str(ref))
    assert " " not in str(ref) and "+" not in str(ref)


def test_every_name_and_version_the_tree_accepts_gives_a_valid_reference():
    # Worst cases of the tree's own grammars (model.NAME_RE, VERSION_RE).
    names = ["a", "a.b", "a_b", "a-b", "a+b", "a++", "a..b", "a-.b", "a+.+b", "0" * 64, "a" + "+" * 63]
    versions = ["0", "1:0", "1~", "1+-~:_.x", "A" * 128, "1.+~:_-.2", "9" + ":" * 127]
    for n in names:
        assert NAME_RE.match(n), n
        for v in versions:
            assert VERSION_RE.match(v), v
            ref = str(imageref.reference("quorum", n, v))
            assert imageref.is_docker_reference(ref) and imageref.is_oci_ref_name(ref), ref


def test_the_grammar_checks_themselves():
    assert not imageref.is_oci_ref_name("43 debs")
    assert not imageref.is_oci_ref_name("a__b")
    assert not imageref.is_docker_reference("quorum/tcc-musl:0.9.27+git")
    assert not imageref.is_docker_reference("quorum/tools:28 debs")
    assert not imageref.is_docker_reference("Quorum/tools:1")
    assert imageref.is_docker_reference("localhost:5000/q/x:1")


@pytest.mark.parametrize("namespace", ["Quorum", "a//b", "a..b/c", "-a", "a/b-", "bad_host:x/y"])
def test_bad_namespaces_are_one_line_errors_naming_the_field(namespace):
    with pytest.raises(QuorumError) as e:
        imageref.reference(namespace, "x", "1")
    assert e.value.field == "namespace" and "\n" not in str(e.value)


def test_length_limit():
    with pytest.raises(QuorumError, match="longer than 255"):
        imageref.reference("/".join(["n" * 60] * 4), "x" * 64, "1")


def test_repository_path_drops_the_registry_host():
    assert imageref.reference("registry.example.org/dist", "zlib", "1").path == "dist/zlib"
    assert imageref.reference("quorum", "zlib", "1").path == "quorum/zlib"
