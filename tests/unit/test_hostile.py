"""Hostile package definitions and trees: each is refused by `quorum graph`
with one line naming the file (and field or line), exit 3, no traceback, no
hang, and nothing executed on the host.

Each case runs the CLI as a separate process under a time limit, the way a
maintainer meets a pull request: a hang or a crash of the parser fails the
test instead of the test run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, refused

TIME_LIMIT = 30


def write_tree(root: Path, pkgs: dict[str, str], files: dict[str, dict[str, bytes | str]] | None = None,
               config: str = "name: t\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "quorum.yaml").write_text(config)
    for name, text in pkgs.items():
        d = root / "packages" / name
        d.mkdir(parents=True)
        (d / "package.yaml").write_text(text)
        for rel, content in (files or {}).get(name, {}).items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def graph(tree: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    env.pop("QUORUM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "quorum", "graph", "--tree", str(tree), *extra],
                          env=env, capture_output=True, text=True, timeout=TIME_LIMIT,
                          stdin=subprocess.DEVNULL)


CF_OK = """FROM {{ seed or "scratch" }} AS build
COPY . {{ build_dir }}/
RUN ["/bin/sh", "-eu", "{{ build_dir }}/.quorum/build.sh"]
FROM scratch
COPY --from=build /rootfs/ /
"""


def cf_tree(tmp_path: Path, containerfile: str | bytes) -> Path:
    return write_tree(tmp_path / "t", {"p": "name: p\nversion: '1'\n"}, {"p": {"Containerfile": containerfile}})


# --- Containerfile templates: nothing runs on the host -------------------------

def test_a_good_package_containerfile_is_accepted(tmp_path):
    p = graph(cf_tree(tmp_path, CF_OK))
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("payload", [
    "# {{ lipsum.__globals__['os'].system('touch MARKER') }}",
    "# {{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "# {{ name.__class__.__mro__[1].__subclasses__() }}",
    "# {{ name['__class__'] }}",
    "# {{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "# {{ name|attr('__class__') }}",
    "# {{ name.ljust(999999999) }}",
    "# {{ name * 999999999 }}",
    "# {% for i in range(999999999) %}x{% endfor %}",
    "# {% include '/etc/passwd' %}",
    "# {% import 'x' as y %}",
    "# {% set x = 1 %}",
    "# {% macro m() %}{% endmacro %}",
    "# {% for a in env %}{% for b in env %}{% for c in env %}x{% endfor %}{% endfor %}{% endfor %}",
], ids=lambda s: s[:40])
def test_template_payloads_are_refused_and_run_nothing(tmp_path, payload):
    marker = tmp_path / "MARKER"
    tree = cf_tree(tmp_path, payload.replace("MARKER", str(marker)) + "\n" + CF_OK)
    p = graph(tree)
    refused(p, "packages/p/Containerfile", "not allowed")
    assert not marker.exists()


@pytest.mark.parametrize("text,needle", [
    ("# {{ nope }}\n" + CF_OK, "'nope' is undefined"),
    ("# {{ 1/0 }}\n" + CF_OK, "not allowed"),
    ("# {{ name \n" + CF_OK, "line"),
    (b"# \xff\xfe\n" + CF_OK.encode(), "not UTF-8"),
])
def test_template_errors_are_definition_errors_at_graph_time(tmp_path, text, needle):
    refused(graph(cf_tree(tmp_path, text)), "packages/p/Containerfile", needle)


def test_sandbox_itself_refuses_attribute_walks():
    """Second wall: even a template that got past the syntax check cannot
    reach Python internals through the sandbox."""
    import jinja2
    from quorum.render import _sandbox
    t = _sandbox().from_string("{{ lipsum }}")
    with pytest.raises(jinja2.UndefinedError):
        t.render()
    t = _sandbox().from_string("{{ x.__class__ }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        t.render(x="")


# --- YAML: bounded ---------------------------------------------------------------

def alias_bomb(levels: int = 9) -> str:
    lines = ["name: p", "version: '1'", "build: 'true'", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"description: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 20) -> str:
    lines = ["name: p", "version: '1'", "build: 'true'", "m0: &m0 {k: v}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: v}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,needle", [
    (alias_bomb(), "YAML anchors"),
    (merge_bomb(), "YAML anchors"),
    ("name: p\nversion: '1'\nbuild: 'true'\ndescription: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested"),
    ("name: p\nversion: '1'\nbuild: 'true'\ndescription: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested"),
    ("name: p\nversion: '1'\nbuild: 'true'\ndescription: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "nested"),
    ("name: p\nversion: '1'\nbuild: 'true'\nenv: {X: " + "9" * 5000 + "}\n", "package.yaml"),
    ("name: p\nversion: '1'\nbuild: 'true'\ndescription: " + "x" * (2 << 20) + "\n", "limit"),
], ids=["aliases", "merge-keys", "depth-10k", "depth-100k", "mapping-depth-5k", "5000-digits", "2MiB"])
def test_yaml_bombs_are_refused_quickly(tmp_path, text, needle):
    refused(graph(write_tree(tmp_path / "t", {"p": text})), "packages/p/package.yaml", needle)


def test_huge_integer_and_far_epoch_are_refused(tmp_path):
    refused(graph(write_tree(tmp_path / "a", {"p": "name: p\nversion: '1'\nbuild: 'true'\n"},
                             config="name: t\nsource_date_epoch: 253402300800\n")),
            "quorum.yaml", "source_date_epoch")
    refused(graph(write_tree(tmp_path / "b", {"p": "name: p\nversion: '1'\nbuild: 'true'\n"},
                             config="name: t\nsource_date_epoch: " + "9" * 30 + "\n")),
            "quorum.yaml", "source_date_epoch")


@pytest.mark.parametrize("field,text", [
    ("version", "name: p\nversion: \"1\\n\"\nbuild: 'true'\n"),
    ("name", "name: \"p\\n\"\nversion: '1'\nbuild: 'true'\n"),
    ("sources[0].sha256", "name: p\nversion: '1'\nbuild: 'true'\nsources:\n"
                          "  - {url: 'https://example.invalid/x.tar', sha256: \"" + "a" * 64 + "\\n\"}\n"),
    ("sources[0].file", "name: p\nversion: '1'\nbuild: 'true'\nsources:\n"
                        "  - {url: 'https://example.invalid/x.tar', file: \"x.tar\\n\", sha256: " + "a" * 64 + "}\n"),
    ("env.", "name: p\nversion: '1'\nbuild: 'true'\nenv: {\"X\\n\": y}\n"),
])
def test_trailing_newline_is_not_a_valid_value(tmp_path, field, text):
    refused(graph(write_tree(tmp_path / "t", {"p": text})), "packages/p/package.yaml", field)


def test_trailing_newline_in_namespace_is_refused(tmp_path):
    refused(graph(write_tree(tmp_path / "t", {}, config="name: t\nnamespace: \"t\\n\"\n")), "namespace")


def test_nulls_mean_absent_for_every_optional_mapping(tmp_path):
    text = ("name: p\nversion: '1'\nbuild: 'true'\naudit: ~\nsources:\n"
            "  - {url: 'https://example.invalid/x.tar', sha256: " + "a" * 64 + ", debian: ~}\n")
    p = graph(write_tree(tmp_path / "t", {"p": text}))
    assert p.returncode == 0, p.stderr


# --- files that are not what they claim ------------------------------------------

def test_fifo_as_quorum_yaml(tmp_path):
    t = write_tree(tmp_path / "t", {})
    (t / "quorum.yaml").unlink()
    os.mkfifo(t / "quorum.yaml")
    refused(graph(t), "quorum.yaml", "named pipe")


def test_symlink_to_dev_zero_as_quorum_yaml(tmp_path):
    t = write_tree(tmp_path / "t", {})
    (t / "quorum.yaml").unlink()
    (t / "quorum.yaml").symlink_to("/dev/zero")
    refused(graph(t), "quorum.yaml", "symbolic link")


def test_fifo_as_seed_file(tmp_path):
    t = write_tree(tmp_path / "t", {})
    (t / "bootstrap" / "seeds").mkdir(parents=True)
    os.mkfifo(t / "bootstrap" / "seeds" / "s.yaml")
    refused(graph(t), "s.yaml", "named pipe")


def test_fifo_in_a_package_folder(tmp_path):
    t = write_tree(tmp_path / "t", {"p": "name: p\nversion: '1'\nbuild: 'true'\n"})
    os.mkfifo(t / "packages" / "p" / "notes.txt")
    refused(graph(t), "packages/p/notes.txt", "regular files")


def test_package_yaml_that_is_a_directory(tmp_path):
    t = write_tree(tmp_path / "t", {})
    (t / "packages" / "p" / "package.yaml").mkdir(parents=True)
    refused(graph(t), "packages/p/package.yaml", "directory")


def test_packages_folder_symlinked_out_of_the_tree(tmp_path):
    outside = write_tree(tmp_path / "elsewhere", {"p": "name: p\nversion: '1'\nbuild: 'true'\n"})
    t = write_tree(tmp_path / "t", {})
    (t / "packages").symlink_to(outside / "packages")
    refused(graph(t), "packages", "symlink")


def test_hard_link_to_a_file_elsewhere(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root:hash\n")
    t = write_tree(tmp_path / "t", {"p": "name: p\nversion: '1'\nbuild: 'true'\n"})
    os.link(secret, t / "packages" / "p" / "shadow")
    refused(graph(t), "packages/p/shadow", "hard-linked")


def test_folder_named_like_a_source_cannot_shadow_it(tmp_path):
    text = ("name: p\nversion: '1'\nbuild: 'true'\nsources:\n"
            "  - {url: 'https://example.invalid/x.tar', sha256: " + "a" * 64 + "}\n")
    t = write_tree(tmp_path / "t", {"p": text}, {"p": {"x.tar/evil": "boo"}})
    refused(graph(t), "packages/p/package.yaml", "same name as a source")


def test_terminal_escapes_in_an_error_are_not_printed_raw(tmp_path):
    t = write_tree(tmp_path / "t", {"p": "name: p\nversion: \"1\\e]0;owned\\a\"\nbuild: 'true'\n"})
    line = refused(graph(t), "packages/p/package.yaml")
    assert "\x1b" not in line and "\\x1b" in line


# --- machine-written files that someone replaced ------------------------------------

def test_json_readers_refuse_deep_nesting_and_fifos(tmp_path):
    from quorum import manifest, oci, translog
    from quorum.errors import QuorumError
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(manifest.ManifestError, match="nested"):
        manifest.load(deep)
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "index.json").write_text('{"manifests": ' + "[" * 10_000 + "]" * 10_000 + "}")
    with pytest.raises(ValueError, match="nested"):
        oci.read_layout(layout)
    fifo = tmp_path / "log.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(QuorumError, match="named pipe"):
        translog.read(fifo)
    os.mkfifo(tmp_path / "manifest.json")
    with pytest.raises(manifest.ManifestError, match="named pipe"):
        manifest.load(tmp_path / "manifest.json")


def test_challenge_of_a_deeply_nested_manifest_is_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": ' + "[" * 10_000 + "]" * 10_000 + "}")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tools"))
    p = subprocess.run([sys.executable, "-m", "quorum", "challenge", str(deep), str(deep)], env=env,
                       capture_output=True, text=True, timeout=TIME_LIMIT)
    assert p.returncode not in (0, 1) and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "nested" in p.stderr


def test_a_gate_whose_members_depend_on_each_other_is_refused(tmp_path):
    t = write_tree(tmp_path / "t", {"a": "name: a\nversion: '1'\nbuild: 'true'\n",
                                    "b": "name: b\nversion: '1'\ndeps: [a]\nbuild: 'true'\n"},
                   config="name: t\ngates:\n  g:\n    identical: [a, b]\n")
    refused(graph(t), "quorum.yaml", "gates.g.identical[1]", "depends on 'a'")
