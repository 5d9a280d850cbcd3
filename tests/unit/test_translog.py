"""The hash-chained transparency log."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from quorum import canon, translog

T = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
FPR = "C" * 40


def add(path, n=1):
    for i in range(n):
        translog.append(path, tree="demo", serial=1, manifest_sha256="a" * 64, signer=FPR,
                        signature_sha256=f"{i:064x}", now=T)


def test_append_chains_entries(tmp_path):
    p = tmp_path / "log.jsonl"
    add(p, 3)
    entries = translog.read(p)
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["prev"] == translog.GENESIS and entries[1]["prev"] == entries[0]["hash"]
    assert entries[0]["time"] == "2030-01-02T03:04:05Z"
    head = translog.replay(entries)
    assert head == translog.Head(3, entries[2]["hash"])
    assert p.read_bytes().count(b"\n") == 3 and p.read_bytes() == b"".join(canon.dumps(e) + b"\n" for e in entries)


def test_removed_reordered_and_altered_entries_break_the_chain(tmp_path):
    p = tmp_path / "log.jsonl"
    add(p, 3)
    e = translog.read(p)
    with pytest.raises(translog.LogError, match="line 2: seq is 3"):
        translog.replay([e[0], e[2]])
    with pytest.raises(translog.LogError, match="line 1: seq is 2"):
        translog.replay([e[1], e[0], e[2]])
    altered = dict(e[1], serial=9)
    with pytest.raises(translog.LogError, match="line 2: hash does not match"):
        translog.replay([e[0], altered, e[2]])
    altered["hash"] = translog.entry_hash(altered)
    with pytest.raises(translog.LogError, match="line 3: prev does not match"):
        translog.replay([e[0], altered, e[2]])


def test_malformed_lines(tmp_path):
    p = tmp_path / "log.jsonl"
    add(p, 1)
    good = p.read_bytes()
    for bad, msg in [(b"{not json}\n", "not a JSON object"),
                     (good.replace(b'"seq":1', b'"seq":"1"'), "wrong type"),
                     (good.replace(b',"tree"', b', "tree"'), "canonical"),
                     (good.replace(b'"tree":"demo"}', b'"tree":"demo","x":1}'), "exactly the fields"),
                     (good.rstrip(b"\n"), "not terminated")]:
        p.write_bytes(bad)
        with pytest.raises(translog.LogError, match=msg):
            translog.read(p)


def test_check_extends_detects_truncation_and_rewrites(tmp_path):
    p = tmp_path / "log.jsonl"
    add(p, 2)
    e = translog.read(p)
    known = translog.replay(e)
    translog.check_extends(e, known)
    translog.check_extends(e + [e[0]], known)         # longer is fine (not replayed here)
    with pytest.raises(translog.LogError, match="cut short"):
        translog.check_extends(e[:1], known)
    other = [e[0], dict(e[1], time="2031-01-01T00:00:00Z")]
    other[1]["hash"] = translog.entry_hash(other[1])     # a consistent, different history
    translog.replay(other)
    with pytest.raises(translog.LogError, match="rewritten"):
        translog.check_extends(other, known)


def test_find(tmp_path):
    p = tmp_path / "log.jsonl"
    add(p, 2)
    e = translog.read(p)
    assert translog.find(e, signer=FPR, signature_sha256=f"{1:064x}", manifest_sha256="a" * 64) == e[1]
    assert translog.find(e, signer=FPR, signature_sha256=f"{1:064x}", manifest_sha256="b" * 64) is None
