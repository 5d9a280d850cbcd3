"""The pool on the command line, without an engine: `quorum engines` on an
endpoint that does not answer, label selection, --elsewhere's refusal and
the flags build and reproduce share."""
from __future__ import annotations

import json

from conftest import run_quorum


def write_tree(root):
    (root / "packages" / "a").mkdir(parents=True)
    (root / "bootstrap").mkdir()
    (root / "quorum.yaml").write_text("name: ft\nnamespace: quorum-ft\nsource_date_epoch: 1700000000\n")
    (root / "packages" / "a" / "package.yaml").write_text("name: a\nversion: '1'\nbuild: |\n  true\n")
    return root


def test_engines_lists_an_engine_that_does_not_answer_and_exits_2(tmp_path):
    tree = write_tree(tmp_path / "t")
    sock = f"unix://{tmp_path}/none.sock"
    p = run_quorum("engines", "--tree", str(tree), "--json", "--engine", f"{sock},name=gone,slots=3,label=cpu=x")
    assert p.returncode == 2, p.stderr
    doc = json.loads(p.stdout)
    assert [(e["name"], e["health"], e["slots"], e["free"], e["labels"]) for e in doc["engines"]] == \
        [("gone", "unhealthy", 3, 0, {"cpu": "x"})]
    p = run_quorum("engines", "--tree", str(tree), "--engine", f"{sock},name=gone")
    assert p.returncode == 2 and "gone" in p.stdout and "unhealthy" in p.stdout


def test_engine_label_keeps_only_matching_engines_or_says_which_exist(tmp_path):
    tree = write_tree(tmp_path / "t")
    a, b = f"unix://{tmp_path}/a.sock,name=a,label=cpu=amd", f"unix://{tmp_path}/b.sock,name=b,label=cpu=intel"
    p = run_quorum("engines", "--tree", str(tree), "--json", "--engine", a, "--engine", b, "--engine-label", "cpu=intel")
    assert [e["name"] for e in json.loads(p.stdout)["engines"]] == ["b"]
    p = run_quorum("build", "--tree", str(tree), "--engine", a, "--engine-label", "cpu=arm")
    assert p.returncode == 3
    assert "--engine-label" in p.stderr and "a: cpu=amd" in p.stderr and "Traceback" not in p.stderr
    p = run_quorum("build", "--tree", str(tree), "--engine", a, "--engine-label", "cpu")
    assert p.returncode == 3 and "key=value" in p.stderr


def test_a_build_on_an_engine_that_does_not_answer_is_the_engines_failure(tmp_path):
    tree = write_tree(tmp_path / "t")
    p = run_quorum("build", "--tree", str(tree), "--json", "--engine", f"unix://{tmp_path}/none.sock,name=gone")
    assert p.returncode == 2, p.stderr
    failed = [json.loads(x) for x in p.stdout.splitlines() if '"failed"' in x and '"event"' in x]
    assert [(f["name"], f["failure"], f["engine"]) for f in failed] == [("a", "engine", "gone")]
    assert "none.sock" in failed[0]["error"]
