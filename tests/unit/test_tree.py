"""Validation of the tree's formats: every error names file and field."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from quorum.errors import DefinitionError, GraphError
from quorum.graph import build_graph
from quorum.tree import expand, load_tree


def write_tree(root: Path, packages: dict[str, str], seeds: dict[str, str] | None = None,
               config: str = "name: t\ndefaults:\n  seed: s\n") -> Path:
    (root / "quorum.yaml").write_text(config)
    sd = root / "bootstrap" / "seeds"
    sd.mkdir(parents=True)
    for name, text in (seeds if seeds is not None else {"s": "name: s\nrequest: [busybox-static]\n"}).items():
        (sd / f"{name}.yaml").write_text(text)
    for name, text in packages.items():
        d = root / "packages" / name
        d.mkdir(parents=True)
        (d / "package.yaml").write_text(textwrap.dedent(text))
    return root


def ok_pkg(name: str, deps: str = "[]") -> str:
    return f"name: {name}\nversion: '1'\ndeps: {deps}\nbuild: 'true'\n"


def err(tmp_path, packages, **kw) -> str:
    with pytest.raises((DefinitionError, GraphError)) as ei:
        tree = load_tree(write_tree(tmp_path, packages, **kw))
        build_graph(tree)
    return str(ei.value)


def test_valid_tree_loads(tmp_path):
    tree = load_tree(write_tree(tmp_path, {"a": ok_pkg("a"), "b": ok_pkg("b", "[a]")}))
    assert sorted(tree.packages) == ["a", "b"]
    assert tree.packages["b"].deps == ("a",)
    assert tree.config.default_seed == "s"


def test_unknown_field_names_file_and_field_and_suggests(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1'\nbuild: 'true'\ndepends: [x]\n"})
    assert "packages/a/package.yaml: depends: unknown field" in msg
    assert "did you mean 'deps'" in msg


def test_wrong_type(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1'\nbuild: 'true'\ndeps: b\n"})
    assert "package.yaml: deps: expected a list of a package names, got a string" in msg


def test_bad_name_and_folder_mismatch(tmp_path):
    assert "name: 'A B' is not a package name" in err(tmp_path, {"a": "name: A B\nversion: '1'\nbuild: x\n"})


def test_name_must_match_folder(tmp_path):
    assert "must match the folder name ('a')" in err(tmp_path, {"a": "name: b\nversion: '1'\nbuild: x\n"})


def test_missing_dependency_names_the_field(tmp_path):
    msg = err(tmp_path, {"a": ok_pkg("a", "[nothere]")})
    assert "packages/a/package.yaml: deps[0]: dependency 'nothere' does not exist" in msg


def test_cycle_is_reported_with_its_full_path(tmp_path):
    msg = err(tmp_path, {"a": ok_pkg("a", "[c]"), "b": ok_pkg("b", "[a]"), "c": ok_pkg("c", "[b]")})
    assert "dependency cycle:" in msg
    path = msg.split("dependency cycle: ")[1].split(" (")[0].split(" -> ")
    assert set(path) == {"a", "b", "c"} and path[0] == path[-1] and len(path) == 4


def test_duplicate_yaml_keys_are_refused(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1'\nbuild: 'true'\nbuild: 'rm -rf /'\n"})
    assert "duplicate key 'build'" in msg


def test_reserved_env_and_control_characters(tmp_path):
    assert "env.SOURCE_DATE_EPOCH: is set by quorum" in err(
        tmp_path, {"a": "name: a\nversion: '1'\nbuild: x\nenv: {SOURCE_DATE_EPOCH: '5'}\n"})


def test_env_newline_refused(tmp_path):
    assert "control characters" in err(
        tmp_path, {"a": 'name: a\nversion: "1"\nbuild: x\nenv: {X: "a\\nRUN evil"}\n'})


def test_source_file_name_cannot_escape(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1'\nbuild: x\nsources:\n  - url: http://h/x\n"
                              "    sha256: '" + "0" * 64 + "'\n    file: ../../etc/passwd\n"})
    assert "sources[0].file: '../../etc/passwd' is not a plain file name" in msg


def test_source_sha_must_be_hex(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1'\nbuild: x\nsources:\n  - url: http://h/x\n    sha256: abc\n"})
    assert "sources[0].sha256:" in msg and "sha256 (64 lower-case hex digits)" in msg


def test_build_or_containerfile_required(tmp_path):
    assert "build: required: a build script, or a Containerfile" in err(tmp_path, {"a": "name: a\nversion: '1'\n"})


def test_symlink_in_package_folder_refused(tmp_path):
    root = write_tree(tmp_path, {"a": ok_pkg("a")})
    (root / "packages" / "a" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(DefinitionError, match="symlinks are not allowed"):
        load_tree(root)


def test_missing_seed(tmp_path):
    msg = err(tmp_path, {"a": ok_pkg("a")}, seeds={})
    assert "seed 's' (the default from quorum.yaml) does not exist" in msg


def test_placeholders_do_not_evaluate_python():
    assert expand("x-{version}-{name}.tgz", "n", "1.0") == "x-1.0-n.tgz"
    # str.format would reach attributes here; expand leaves it alone.
    assert expand("{version.__class__}", "n", "1") == "{version.__class__}"


def test_invalid_yaml_reports_line(tmp_path):
    msg = err(tmp_path, {"a": "name: a\nversion: '1\n"})
    assert "invalid YAML" in msg and "line" in msg


def test_parse_cache_serves_unchanged_files_and_misses_on_edit(tmp_path):
    root = write_tree(tmp_path, {"a": ok_pkg("a")})
    (root / "out").mkdir()
    assert load_tree(root).packages["a"].version == "1"
    cache = root / "out" / ".quorum" / "parsed.json"
    assert cache.exists()
    yml = root / "packages" / "a" / "package.yaml"
    yml.write_text(yml.read_text().replace("version: '1'", "version: '2'"))
    assert load_tree(root).packages["a"].version == "2"        # the edit is seen
    # a cached parse is still validated: a planted bad entry is an error
    import json
    doc = json.loads(cache.read_text())
    doc["entries"][str(yml)][1]["deps"] = "not-a-list"
    cache.write_text(json.dumps(doc))
    with pytest.raises(DefinitionError, match="deps: expected a list"):
        load_tree(root)


def test_seed_omit_cannot_drop_a_requested_package(tmp_path):
    msg = err(tmp_path, {"a": ok_pkg("a")},
              seeds={"s": "name: s\nrequest: [gcc-12, make]\nomit: [make]\n"})
    assert "omit[0]: 'make' is requested and omitted at once" in msg


def test_two_names_for_one_image_name_are_refused(tmp_path):
    # "c++" and "cpp" would share quorum's image name t/cpp (imageref).
    msg = err(tmp_path, {"c++": ok_pkg("c++"), "cpp": ok_pkg("cpp")})
    assert "would share the image name t/cpp" in msg and "package.yaml: name:" in msg


def test_a_namespace_no_image_name_can_start_with_is_refused(tmp_path):
    msg = err(tmp_path, {"a": ok_pkg("a")}, config="name: t\nnamespace: a..b\ndefaults:\n  seed: s\n")
    assert "quorum.yaml: namespace: 'a..b' cannot be part of an image name" in msg
