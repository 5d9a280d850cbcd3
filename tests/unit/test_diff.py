"""quorum.diff and `quorum diff`: artifacts are made here from small tars
(normalised by oci.normalize_layer, written by oci.write_layout), so no
engine is needed."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import pytest

from quorum import diff, oci
from quorum.cli import main

EPOCH = 1_700_000_000


# --- helpers --------------------------------------------------------------------

def f(name, data=b"", mode=0o644, uid=0, gid=0, mtime=EPOCH):
    return {"name": name, "type": tarfile.REGTYPE, "data": data, "mode": mode, "uid": uid, "gid": gid,
            "mtime": mtime}


def sym(name, target, mode=0o777):
    return {"name": name, "type": tarfile.SYMTYPE, "link": target, "mode": mode}


def hardlink(name, target):
    return {"name": name, "type": tarfile.LNKTYPE, "link": target, "mode": 0o644}


def write_tar(path: Path, members: list[dict]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tw:
        for m in members:
            ti = tarfile.TarInfo(m["name"])
            ti.type, ti.mode = m["type"], m["mode"]
            ti.uid, ti.gid, ti.mtime = m.get("uid", 0), m.get("gid", 0), m.get("mtime", EPOCH)
            if "link" in m:
                ti.linkname = m["link"]
            data = m.get("data")
            if data is not None:
                ti.size = len(data)
                tw.addfile(ti, io.BytesIO(data))
            else:
                tw.addfile(ti)


def make_layout(tmp: Path, name: str, members: list[dict], *, env=None, version="1.0") -> Path:
    """The honest path: normalise, then write the layout."""
    raw, layer = tmp / f"{name}.raw.tar", tmp / f"{name}.layer.tar"
    write_tar(raw, members)
    with open(layer, "wb") as dst:
        info = oci.normalize_layer(raw, dst, epoch=EPOCH)
    oci.write_layout(tmp / name, layer, info, epoch=EPOCH, name="pkg", version=version, namespace="ns", env=env)
    return tmp / name


def make_raw_layout(tmp: Path, name: str, members: list[dict]) -> Path:
    """A layout whose layer was NOT normalised: what a hostile rebuilder
    could hand us (normalize_layer would refuse these members)."""
    layer = tmp / f"{name}.layer.tar"
    write_tar(layer, members)
    data = layer.read_bytes()
    info = oci.LayerInfo(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data),
                         entries=len(members))
    oci.write_layout(tmp / name, layer, info, epoch=EPOCH, name="pkg", version="1.0", namespace="ns")
    return tmp / name


def tiny_elf(text: bytes, comment: bytes = b"GCC 1") -> bytes:
    """A minimal little-endian ELF64 with .text, .comment and .shstrtab."""
    shstr = b"\x00.text\x00.comment\x00.shstrtab\x00"
    body = text + comment + shstr
    shoff = 64 + len(body)
    shoff += -shoff % 8
    hdr = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\x00" * 9, 2, 62, 1, 0, 0, shoff,
                      0, 64, 0, 0, 64, 4, 3)
    sh = lambda name, typ, off, size: struct.pack("<IIQQQQIIQQ", name, typ, 0, 0, off, size, 0, 0, 1, 0)
    tables = (sh(0, 0, 0, 0) + sh(1, 1, 64, len(text)) + sh(7, 1, 64 + len(text), len(comment))
              + sh(16, 3, 64 + len(text) + len(comment), len(shstr)))
    out = hdr + body
    return out + b"\x00" * (shoff - len(out)) + tables


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


BASE = [
    f("usr/bin/hello", b"\x7fELF-not-really\x00" + bytes(range(256)), mode=0o755),
    f("usr/share/doc/hello/README", b"line one\nline two\nline three\n"),
    sym("usr/bin/hi", "hello"),
    f("etc/hello.conf", b"greeting=hi\n", mode=0o640),
]


def replace(members, name, **changes):
    return [dict(m, **changes) if m["name"] == name else m for m in members]


# --- comparing layouts ---------------------------------------------------------------

def test_identical_layouts_have_no_differences(tmp_path):
    a = make_layout(tmp_path, "a", BASE)
    b = make_layout(tmp_path, "b", list(reversed(BASE)))  # input order must not matter
    r = diff.compare(a, b)
    assert r.identical
    assert r.a.digest == r.b.digest
    assert (r.added, r.removed, r.changed, r.config) == ([], [], [], [])
    assert "identical" in diff.render_text(r)
    assert diff.to_json(r)["identical"] is True


def test_text_change_names_the_file_and_the_lines(tmp_path):
    a = make_layout(tmp_path, "a", BASE)
    b = make_layout(tmp_path, "b", replace(BASE, "usr/share/doc/hello/README",
                                           data=b"line one\nline 2\nline three\n"))
    r = diff.compare(a, b)
    assert not r.identical
    assert [c.path for c in r.changed] == ["usr/share/doc/hello/README"]
    change = r.changed[0]
    assert {x.field for x in change.fields} == {"sha256", "size"}
    [detail] = change.details
    assert detail.kind == "text"
    assert "-line two" in detail.lines and "+line 2" in detail.lines
    text = diff.render_text(r)
    assert "~ usr/share/doc/hello/README" in text
    assert "-line two" in text and "+line 2" in text
    assert "size: 29 -> 27" in text


def test_long_text_diff_is_capped_with_a_note(tmp_path):
    old = "".join(f"old {i}\n" for i in range(200)).encode()
    new = "".join(f"new {i}\n" for i in range(200)).encode()
    a = make_layout(tmp_path, "a", [f("big.txt", old)])
    b = make_layout(tmp_path, "b", [f("big.txt", new)])
    r = diff.compare(a, b, limits=diff.Limits(diff_lines=10))
    [detail] = r.changed[0].details
    assert len(detail.lines) == 10
    assert detail.truncated == 403 - 10  # 2 file headers + 1 hunk header + 400 lines
    assert "more lines not shown" in diff.render_text(r)


def test_final_newline_and_latin1_are_still_text(tmp_path):
    a = make_layout(tmp_path, "a", [f("x.txt", b"caf\xe9\nend\n")])
    b = make_layout(tmp_path, "b", [f("x.txt", b"caf\xe9\nend")])
    [detail] = diff.compare(a, b).changed[0].details
    assert detail.kind == "text"
    assert "\\ No newline at end of file" in detail.lines
    assert " café" in detail.lines


def test_mode_owner_symlink_and_type_changes(tmp_path):
    a = make_layout(tmp_path, "a", BASE)
    members = replace(BASE, "etc/hello.conf", mode=0o600, uid=1000, gid=1000)
    members = replace(members, "usr/bin/hi", link="/usr/bin/hello")
    b = make_layout(tmp_path, "b", members)
    r = diff.compare(a, b)
    by_path = {c.path: {x.field: (x.old, x.new) for x in c.fields} for c in r.changed}
    assert by_path == {
        "etc/hello.conf": {"mode": (0o640, 0o600), "owner": ("0:0", "1000:1000")},
        "usr/bin/hi": {"link": ("hello", "/usr/bin/hello")},
    }
    text = diff.render_text(r)
    assert "mode: 0640 -> 0600" in text
    assert "owner: 0:0 -> 1000:1000" in text
    assert "link: 'hello' -> '/usr/bin/hello'" in text
    js = diff.to_json(r)
    mode = [x for c in js["changed"] for x in c["fields"] if x["field"] == "mode"]
    assert mode == [{"field": "mode", "old": "0640", "new": "0600"}]


def test_file_replaced_by_symlink_reports_type(tmp_path):
    a = make_layout(tmp_path, "a", [f("x", b"data")])
    b = make_layout(tmp_path, "b", [sym("x", "y")])
    [c] = diff.compare(a, b).changed
    fields = {x.field: (x.old, x.new) for x in c.fields}
    assert fields["type"] == ("file", "symlink")
    assert fields["link"] == (None, "y")
    assert c.details == []  # contents are compared only between two files


def test_mtime_change_is_reported(tmp_path):
    a = make_layout(tmp_path, "a", [f("x", b"same", mtime=100)])
    b = make_layout(tmp_path, "b", [f("x", b"same", mtime=200)])
    [c] = diff.compare(a, b).changed
    assert [(x.field, x.old, x.new) for x in c.fields] == [("mtime", 100, 200)]


def test_binary_change_reports_offset_and_hexdump(tmp_path):
    data = bytes(range(256)) * 4
    changed = bytearray(data)
    changed[700] ^= 0xFF
    a = make_layout(tmp_path, "a", [f("lib/blob.bin", data)])
    b = make_layout(tmp_path, "b", [f("lib/blob.bin", bytes(changed))])
    [c] = diff.compare(a, b).changed
    [detail] = c.details
    assert detail.kind == "binary"
    assert detail.data["offset"] == 700
    assert "0x2bc (700)" in detail.summary
    # The row holding byte 700 is shown for both sides, with a caret under it.
    minus = [x for x in detail.lines if x.startswith("- ")]
    plus = [x for x in detail.lines if x.startswith("+ ")]
    assert minus and plus and minus[0].startswith("- 000002b0")
    caret = [x for x in detail.lines if x.strip() == "^^"]
    assert caret and caret[0].index("^^") == minus[0].index("bc")


def test_binary_prefix_reports_where_the_shorter_ends(tmp_path):
    a = make_layout(tmp_path, "a", [f("b.bin", b"\x00\x01" * 50)])
    b = make_layout(tmp_path, "b", [f("b.bin", b"\x00\x01" * 60)])
    [detail] = diff.compare(a, b).changed[0].details
    assert detail.data["offset"] == 100
    assert "a ends at byte" in detail.summary


def test_elf_reports_differing_sections(tmp_path):
    text_a = b"\x90" * 32
    text_b = bytearray(text_a)
    text_b[5] = 0xC3
    a = make_layout(tmp_path, "a", [f("bin/x", tiny_elf(text_a), mode=0o755)])
    b = make_layout(tmp_path, "b", [f("bin/x", tiny_elf(bytes(text_b)), mode=0o755)])
    details = diff.compare(a, b).changed[0].details
    assert [d.kind for d in details] == ["elf", "binary"]
    assert details[0].lines == [".text: contents differ"]
    assert details[0].summary == "1 of 3 ELF sections differ"
    assert details[1].data["offset"] == 64 + 5


def test_broken_elf_falls_back_to_bytes(tmp_path):
    a = make_layout(tmp_path, "a", [f("bin/x", b"\x7fELF" + b"\xff" * 80)])
    b = make_layout(tmp_path, "b", [f("bin/x", b"\x7fELF" + b"\xfe" * 80)])
    details = diff.compare(a, b).changed[0].details
    assert [d.kind for d in details] == ["elf", "binary"]
    assert "could not read ELF sections" in details[0].summary
    assert details[1].data["offset"] == 4


def test_added_and_removed_files(tmp_path):
    a = make_layout(tmp_path, "a", BASE + [f("usr/share/old.txt", b"old")])
    b = make_layout(tmp_path, "b", BASE + [f("usr/lib/new.so", b"new", mode=0o755)])
    r = diff.compare(a, b)
    # usr/lib is a new parent directory that normalize_layer adds.
    assert [e.path for e in r.added] == ["usr/lib", "usr/lib/new.so"]
    assert [e.path for e in r.removed] == ["usr/share/old.txt"]
    assert r.changed == []
    text = diff.render_text(r)
    assert "+ usr/lib/new.so  (file, 3 bytes, 0755 0:0)" in text
    assert "- usr/share/old.txt  (file, 3 bytes, 0644 0:0)" in text
    assert "files: 2 added, 1 removed, 0 changed" in text


def test_config_and_annotation_differences(tmp_path):
    a = make_layout(tmp_path, "a", BASE, env={"LANG": "C"})
    b = make_layout(tmp_path, "b", BASE, env={"LANG": "C.UTF-8", "EXTRA": "1"}, version="1.1")
    r = diff.compare(a, b)
    assert r.a.layer_digest == r.b.layer_digest
    assert (r.added, r.removed, r.changed) == ([], [], [])
    got = {c.field: (c.old, c.new) for c in r.config}
    assert got == {
        "config.Env[LANG]": ("C", "C.UTF-8"),
        "config.Env[EXTRA]": (None, "1"),
        "annotations.org.opencontainers.image.version": ("1.0", "1.1"),
    }
    assert not r.identical
    assert "config.Env[LANG]: 'C' -> 'C.UTF-8'" in diff.render_text(r)


def test_custom_comparator_is_one_function(tmp_path, monkeypatch):
    monkeypatch.setattr(diff, "COMPARATORS", list(diff.COMPARATORS))

    @diff.comparator("shout", lambda blob, limits: blob.entry.path.endswith(".shout"), first=True)
    def _shout(a, b, limits):
        return [diff.Detail(kind="shout", summary="LOUD")]

    assert [c.name for c in diff.COMPARATORS][0] == "shout"
    assert diff.COMPARATORS[-1].name == "binary"
    a = make_layout(tmp_path, "a", [f("x.shout", b"a")])
    b = make_layout(tmp_path, "b", [f("x.shout", b"b")])
    assert [d.kind for d in diff.compare(a, b).changed[0].details] == ["shout"]


# --- hostile layers ---------------------------------------------------------------

def hostile(tmp_path: Path, variant: bytes) -> list[dict]:
    outside = tmp_path / "outside"
    return [
        f("../escape.txt", b"climb " + variant),
        f("/abs.txt", b"absolute " + variant),
        sym("link", str(outside)),
        f("link/through.txt", b"through the link " + variant),
        hardlink("hl", "../../etc/passwd"),
        f("dup", b"first"),
        f("dup", b"second " + variant),
        f("esc\x1b[2Jname", b"\x1b]0;pwned\x07 " + variant + b"\n"),
    ]


def test_hostile_layers_are_compared_without_writing_anywhere(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    a = make_raw_layout(src, "a", hostile(tmp_path, b"A"))
    b = make_raw_layout(src, "b", hostile(tmp_path, b"B"))
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)

    r = diff.compare(a, b)
    text = diff.render_text(r)
    js = json.dumps(diff.to_json(r))
    diff.save(r, tmp_path / "report")

    assert snapshot(tmp_path) - before == {"report", "report/diff.txt", "report/diff.json"}
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "escape.txt").exists()
    changed = {c.path for c in r.changed}
    assert {"../escape.txt", "abs.txt", "link/through.txt", "dup", "esc\x1b[2Jname"} <= changed
    assert any("'dup' appears more than once" in n for n in r.notes)
    # No raw escape sequence reaches the terminal; it is shown escaped.
    assert "\x1b" not in text and "\x07" not in text
    assert "esc\\x1b[2Jname" in text
    assert "pwned" in js


def test_non_utf8_names_survive_json(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = make_raw_layout(src, "a", [f("caf\udce9", b"1")])  # the byte 0xe9, not UTF-8
    b = make_raw_layout(src, "b", [f("caf\udce9", b"2")])
    r = diff.compare(a, b)
    data = json.dumps(diff.to_json(r), ensure_ascii=False).encode("utf-8")
    assert b"caf\\\\xe9" in data
    assert "caf\\xe9" in diff.render_text(r)


def test_unreadable_layout_is_an_error_not_a_traceback(tmp_path):
    a = make_layout(tmp_path, "a", BASE)
    (tmp_path / "junk").mkdir()
    with pytest.raises(diff.UnreadableError) as e:
        diff.compare(a, tmp_path / "junk")
    assert e.value.exit_code == 3


# --- saving and diffoscope ------------------------------------------------------------

def test_save_writes_both_reports(tmp_path):
    a = make_layout(tmp_path, "a", BASE)
    b = make_layout(tmp_path, "b", replace(BASE, "etc/hello.conf", data=b"greeting=hello\n"))
    r = diff.compare(a, b)
    paths = diff.save(r, tmp_path / "rep")
    assert sorted(p.name for p in paths) == ["diff.json", "diff.txt"]
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["diff.json", "diff.txt"]
    assert json.loads((tmp_path / "rep" / "diff.json").read_text()) == json.loads(json.dumps(diff.to_json(r)))
    assert (tmp_path / "rep" / "diff.txt").read_text() == diff.render_text(r)


def fake_diffoscope(bindir: Path, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    exe = bindir / "diffoscope"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)


ARGS = 'while [ $# -gt 2 ]; do case "$1" in --text) t=$2; shift 2;; --html) h=$2; shift 2;; *) shift;; esac; done\n'


def test_run_diffoscope_absent_returns_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert diff.run_diffoscope(tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "rep") == []
    assert not (tmp_path / "rep").exists()


def test_run_diffoscope_collects_reports(tmp_path, monkeypatch):
    fake_diffoscope(tmp_path / "bin", ARGS + 'echo "text $1 $2" > "$t"; echo "<html/>" > "$h"; exit 1\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    out = diff.run_diffoscope(tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "rep")
    assert [p.name for p in out] == ["diffoscope.txt", "diffoscope.html"]
    assert out[0].read_text().startswith("text ")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["diffoscope.html", "diffoscope.txt"]


def test_run_diffoscope_failure_and_timeout_leave_no_report(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    fake_diffoscope(tmp_path / "bin", ARGS + 'echo partial > "$t"; echo boom >&2; exit 2\n')
    assert diff.run_diffoscope(tmp_path / "a", tmp_path / "b", tmp_path / "rep") == []
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["diffoscope.log"]
    assert "boom" in (tmp_path / "rep" / "diffoscope.log").read_text()

    fake_diffoscope(tmp_path / "bin", ARGS + 'echo partial > "$t"; exec sleep 30\n')
    assert diff.run_diffoscope(tmp_path / "a", tmp_path / "b", tmp_path / "rep", timeout=0.5) == []
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["diffoscope.log"]
    assert "timed out" in (tmp_path / "rep" / "diffoscope.log").read_text()


# --- the CLI -------------------------------------------------------------------------

def test_cli_diff_exit_codes_and_output(tmp_path, capsys):
    a = make_layout(tmp_path, "a", BASE)
    same = make_layout(tmp_path, "same", BASE)
    b = make_layout(tmp_path, "b", replace(BASE, "usr/share/doc/hello/README", data=b"changed\n"))
    assert main(["diff", str(a), str(same)]) == 0
    assert "identical" in capsys.readouterr().out
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "~ usr/share/doc/hello/README" in out and "+changed" in out
    assert main(["diff", "--json", str(a), str(b)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["changed"][0]["path"] == "usr/share/doc/hello/README"
    assert main(["diff", str(a), str(tmp_path / "nope")]) == 3
    assert "not an OCI layout" in capsys.readouterr().err


def test_cli_diff_resolves_names_in_the_tree_and_saves(tmp_path, capsys, monkeypatch):
    tree = tmp_path / "tree"
    (tree / "out").mkdir(parents=True)
    make_layout(tree / "out", "hello", BASE)
    other = make_layout(tmp_path, "other", BASE + [f("extra", b"x")])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no diffoscope
    rc = main(["diff", "--tree", str(tree), "--save", str(tmp_path / "rep"), "--diffoscope", "hello", str(other)])
    assert rc == 1
    captured = capsys.readouterr()
    assert "+ extra" in captured.out
    assert "diffoscope is not installed" in captured.err
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["diff.json", "diff.txt"]
    assert main(["diff", "--diffoscope", "hello", str(other), "--tree", str(tree)]) == 3
