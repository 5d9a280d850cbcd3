"""quorum.challenge and `quorum challenge`: manifests from several
rebuilders laid side by side."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from quorum import challenge, manifest
from quorum.cli import main
from quorum.diff import UnreadableError


def digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("/".join(parts).encode()).hexdigest()


def entry(name: str, variant: str = "", *, inputs: str = "", version: str = "1.0") -> manifest.Entry:
    return manifest.Entry(kind="package", version=version, digest=digest(name, variant),
                          input_hash=digest("in", name, inputs), size=1000)


def write(path: Path, entries: dict[str, manifest.Entry], tree: str = "distro") -> Path:
    path.write_bytes(manifest.Manifest(tree=tree, entries=entries).to_bytes())
    return path


@pytest.fixture
def three(tmp_path):
    """alice and bob agree; carol differs on zlib and lacks make."""
    common = {"hello": entry("hello"), "make": entry("make"), "zlib": entry("zlib")}
    a = write(tmp_path / "alice.json", common)
    b = write(tmp_path / "bob.json", dict(common))
    c = write(tmp_path / "carol.json", {"hello": entry("hello"), "zlib": entry("zlib", "evil")})
    return a, b, c


def test_three_manifests_table_and_totals(three):
    a, b, c = three
    r = challenge.challenge(challenge.load([f"alice={a}", f"bob={b}", f"carol={c}"]))
    assert r.labels == ["alice", "bob", "carol"]
    rows = {x.name: x for x in r.rows}
    assert [x.name for x in r.rows] == ["hello", "make", "zlib"]
    assert rows["hello"].status == challenge.IDENTICAL
    assert rows["make"].status == challenge.MISSING
    assert rows["make"].digests[2] is None
    assert rows["zlib"].status == challenge.DIFFERING
    assert rows["zlib"].minority == (False, False, True)
    assert not rows["zlib"].inputs_differ
    assert r.totals() == {"packages": 3, "identical": 1, "differing": 1, "missing": 1}
    assert r.per_manifest() == {"alice": {"missing": 0, "disagrees": 0},
                                "bob": {"missing": 0, "disagrees": 0},
                                "carol": {"missing": 1, "disagrees": 1}}
    assert r.exit_code == challenge.EXIT_DIFFERING == 1

    text = challenge.render_table(r)
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.split()}
    zlib_good, zlib_bad = entry("zlib").digest[7:19], entry("zlib", "evil").digest[7:19]
    assert lines["zlib"].split() == ["zlib", "1.0", zlib_good, zlib_good, zlib_bad, "*", "differing"]
    assert lines["make"].split()[-2:] == ["-", "missing"]
    assert lines["hello"].split()[-1] == "identical"
    assert "3 packages in 3 manifests: 1 identical, 1 differing, 1 missing" in text
    assert "carol: lacks 1, disagrees on 1" in text
    assert "alice:" not in text

    only = challenge.render_table(r, problems_only=True)
    assert "hello" not in only and "zlib" in only


def test_cli_challenge_text_json_and_exit_code(three, capsys):
    a, b, c = three
    assert main(["challenge", str(a), str(b), str(c)]) == 1
    out = capsys.readouterr().out
    assert str(c) in out.splitlines()[0]  # labelled by path when no LABEL= is given
    assert main(["challenge", "--json", f"alice={a}", f"bob={b}", f"carol={c}"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {"packages": 3, "identical": 1, "differing": 1, "missing": 1}
    zlib = next(p for p in doc["packages"] if p["name"] == "zlib")
    assert zlib["minority"] == ["carol"]
    assert zlib["digests"]["carol"] == digest("zlib", "evil")
    assert doc["exit_code"] == 1


def test_exit_codes_identical_and_only_missing(tmp_path, capsys):
    x = write(tmp_path / "x.json", {"a": entry("a"), "b": entry("b")})
    y = write(tmp_path / "y.json", {"a": entry("a"), "b": entry("b")})
    z = write(tmp_path / "z.json", {"a": entry("a")})
    assert main(["challenge", str(x), str(y)]) == challenge.EXIT_IDENTICAL == 0
    assert main(["challenge", str(x), str(z)]) == challenge.EXIT_MISSING == 4
    capsys.readouterr()


def test_two_disagreeing_have_no_majority(tmp_path):
    x = write(tmp_path / "x.json", {"a": entry("a", "1")})
    y = write(tmp_path / "y.json", {"a": entry("a", "2")})
    r = challenge.challenge(challenge.load([str(x), str(y)]))
    assert r.rows[0].minority == (True, True)
    assert r.rows[0].digests[0] and r.rows[0].digests[0] != r.rows[0].digests[1]


def test_differing_inputs_are_flagged(tmp_path):
    x = write(tmp_path / "x.json", {"app": entry("app", "1", inputs="dep-a")})
    y = write(tmp_path / "y.json", {"app": entry("app", "2", inputs="dep-b")})
    r = challenge.challenge(challenge.load([str(x), str(y)]))
    assert r.rows[0].inputs_differ
    assert "differing (inputs differ)" in challenge.render_table(r)


def test_prefix_grows_until_digests_are_told_apart():
    shared = "ab" * 7  # 14 equal hex digits
    d1, d2 = "sha256:" + shared + "0" * 50, "sha256:" + shared + "1" * 50
    m = lambda d: manifest.Manifest(tree="t", entries={"p": manifest.Entry("package", "1", d, digest("i"), 1)})
    r = challenge.challenge({"x": m(d1), "y": m(d2)})
    assert challenge.prefix_length(r) == 15
    text = challenge.render_table(r)
    assert shared + "0" in text and shared + "1" in text


def test_different_trees_get_a_note(tmp_path):
    x = write(tmp_path / "x.json", {"a": entry("a")}, tree="one")
    y = write(tmp_path / "y.json", {"a": entry("a")}, tree="two")
    r = challenge.challenge(challenge.load([str(x), str(y)]))
    assert any("different trees" in n for n in r.notes)


def test_parse_spec(tmp_path, monkeypatch):
    assert challenge.parse_spec("alice=/srv/m.json") == ("alice", Path("/srv/m.json"))
    assert challenge.parse_spec("out/m.json") == ("out/m.json", Path("out/m.json"))
    assert challenge.parse_spec("dir/a=b.json") == ("dir/a=b.json", Path("dir/a=b.json"))
    odd = tmp_path / "x=y.json"
    odd.write_text("{}")
    assert challenge.parse_spec(str(odd))[1] == odd
    # a relative path that exists is taken whole, too
    monkeypatch.chdir(tmp_path)
    assert challenge.parse_spec("x=y.json") == ("x=y.json", Path("x=y.json"))


def test_unreadable_inputs_exit_3(tmp_path, capsys):
    good = write(tmp_path / "g.json", {"a": entry("a")})
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something/else"}')
    assert main(["challenge", str(good), str(bad)]) == 3
    assert "bad.json" in capsys.readouterr().err
    assert main(["challenge", str(good), str(tmp_path / "missing.json")]) == 3
    assert main(["challenge", str(good)]) == 3
    assert "at least two" in capsys.readouterr().err
    with pytest.raises(UnreadableError, match="used twice"):
        challenge.load([f"x={good}", f"x={good}"])


def test_hostile_names_are_escaped_in_the_table(tmp_path):
    x = write(tmp_path / "x.json", {"a\x1b[2J": entry("a")})
    y = write(tmp_path / "y.json", {"a\x1b[2J": entry("a", "2")})
    text = challenge.render_table(challenge.challenge(challenge.load([str(x), str(y)])))
    assert "\x1b" not in text and "a\\x1b[2J" in text
