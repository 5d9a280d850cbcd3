"""The normaliser: determinism, and hostile tar members refused or
neutralised without anything being written outside its output."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from quorum import imageref, oci
from quorum.errors import UnsafeArchiveError

EPOCH = 1700000000


def make_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def f(name, data=b"x", mode=0o644, mtime=EPOCH + 500, uid=1000, uname="alice", pax=None):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = len(data), mode, mtime, uid, uid, uname, uname
    if pax:
        ti.pax_headers = pax
    return ti, data


def d(name, mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode = tarfile.DIRTYPE, mode
    return ti, None


def link(name, target, kind=tarfile.SYMTYPE):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, target
    return ti, None


def norm(raw: bytes) -> tuple[oci.LayerInfo, bytes]:
    out = io.BytesIO()
    info = oci.normalize_layer(io.BytesIO(raw), out, epoch=EPOCH)
    return info, out.getvalue()


def test_same_content_any_order_time_owner_name_gives_same_digest():
    a = make_tar([d("usr"), f("usr/b", b"2"), f("usr/a", b"1", mtime=EPOCH + 9, uname="bob"),
                  f("etc/x", b"3", pax={"SCHILY.xattr.user.foo": "bar", "atime": "1.5"})])
    b = make_tar([f("./etc/x", b"3", mtime=EPOCH + 99999), f("/usr/a", b"1", uname="carol"), f("usr/b", b"2"),
                  d("usr")], fmt=tarfile.GNU_FORMAT)
    ia, ba = norm(a)
    ib, bb = norm(b)
    assert ia.digest == ib.digest and ba == bb
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(ba)).getmembers()]
    assert names == sorted(names) and names[0] == "etc"  # parent added


def test_metadata_rules():
    _, out = norm(make_tar([f("old", mtime=5), f("new", mtime=EPOCH + 10**6), f("suid", mode=0o4755)]))
    ms = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(out)).getmembers()}
    assert ms["old"].mtime == 5                 # older than the clamp: kept
    assert ms["new"].mtime == EPOCH             # newer: clamped
    assert ms["suid"].mode == 0o4755
    assert ms["new"].uname == "" and ms["new"].uid == 1000
    assert b"PaxHeader" not in out and b"xattr" not in out


def test_content_changes_digest():
    assert norm(make_tar([f("a", b"1")]))[0].digest != norm(make_tar([f("a", b"2")]))[0].digest


def test_long_names_without_pax():
    name = "d/" + "x" * 180
    info, out = norm(make_tar([f(name)]))
    assert name in [m.name for m in tarfile.open(fileobj=io.BytesIO(out)).getmembers()]
    assert b"PaxHeader" not in out


@pytest.mark.parametrize("members,msg", [
    ([f("../escape")], "climbs out"),
    ([f("usr/../../escape")], "climbs out"),
    ([f("a"), link("b", "../../etc/passwd", tarfile.LNKTYPE)], "climbs out"),
    ([link("b", "/etc/passwd", tarfile.LNKTYPE)], "not a regular file of the layer"),
    ([link("b", "zzz", tarfile.LNKTYPE)], "not a regular file of the layer"),
    ([link("s", "/etc/shadow"), link("b", "s", tarfile.LNKTYPE)], "not a regular file of the layer"),
    ([f("usr/.wh.bin")], "whiteout"),
    ([f("a"), f("a")], "appears twice"),
    ([f("x"), f("x/y")], "not a directory"),
])
def test_hostile_members_refused(members, msg):
    with pytest.raises(UnsafeArchiveError, match=msg):
        norm(make_tar(members))


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_refused(kind):
    ti = tarfile.TarInfo("dev/null")
    ti.type = kind
    with pytest.raises(UnsafeArchiveError):
        norm(make_tar([(ti, None)]))


def test_absolute_symlinks_are_kept_as_data_and_nothing_is_written(tmp_path, monkeypatch):
    """An absolute symlink is legitimate in an image (/bin/sh -> /bin/busybox)
    and the normaliser never extracts, so it cannot redirect a write: the
    output is a tar, and the file system around it is untouched."""
    monkeypatch.chdir(tmp_path)
    before = sorted(p for p in Path(tmp_path).rglob("*"))
    raw = make_tar([link("etc", "/etc"), link("usr/bin/sh", "/bin/busybox")])
    dst = tmp_path / "out" / "layer.tar"
    dst.parent.mkdir()
    with open(dst, "wb") as fh:
        oci.normalize_layer(io.BytesIO(raw), fh, epoch=EPOCH)
    after = sorted(p for p in Path(tmp_path).rglob("*"))
    assert set(after) - set(before) == {tmp_path / "out", dst}
    ms = {m.name: m for m in tarfile.open(dst).getmembers()}
    assert ms["etc"].issym() and ms["etc"].linkname == "/etc"


def test_hardlink_to_earlier_file_is_kept():
    _, out = norm(make_tar([f("a/file", b"data"), link("a/hard", "a/file", tarfile.LNKTYPE)]))
    ms = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(out)).getmembers()}
    assert ms["a/hard"].islnk() and ms["a/hard"].linkname == "a/file"


def test_hardlinks_are_grouped_by_file_not_by_name_order():
    """The engine writes a/file first and a-c as a link to it; sorted, a-c
    comes first ("-" < "/").  The output is a valid tar either way, and the
    same whatever order the engine used."""
    outs = []
    for members in ([f("a/file", b"data"), link("a-c", "a/file", tarfile.LNKTYPE)],
                    [f("a-c", b"data"), link("a/file", "a-c", tarfile.LNKTYPE)]):
        _, out = norm(make_tar(members))
        outs.append(out)
        tf = tarfile.open(fileobj=io.BytesIO(out))
        ms = {m.name: m for m in tf.getmembers()}
        assert ms["a-c"].isreg() and tf.extractfile("a-c").read() == b"data"
        assert ms["a/file"].islnk() and ms["a/file"].linkname == "a-c"
    assert outs[0] == outs[1]


def test_layout_roundtrip_verify_and_archive(tmp_path):
    raw = make_tar([f("usr/share/x", b"hello")])
    layer_file = tmp_path / "layer.tar"
    with open(layer_file, "wb") as fh:
        info = oci.normalize_layer(io.BytesIO(raw), fh, epoch=EPOCH)
    img = oci.write_layout(tmp_path / "L", layer_file, info, epoch=EPOCH, name="x", version="1", namespace="ns")
    got = oci.verify_layout(tmp_path / "L", img.digest, deep=True)
    assert got["config_digest"] == img.config_digest
    cfg = json.loads(oci.blob_path(tmp_path / "L", img.config_digest).read_bytes())
    assert cfg["created"] == "2023-11-14T22:13:20Z"
    # One history entry per layer (buildah refuses a base without), dated
    # SOURCE_DATE_EPOCH like everything else.
    assert cfg["history"] == [{"created": "2023-11-14T22:13:20Z", "created_by": "quorum"}]
    assert len(cfg["history"]) == len(cfg["rootfs"]["diff_ids"])
    index = json.loads((tmp_path / "L" / "index.json").read_bytes())
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "ns/x:1"}
    assert cfg["rootfs"]["diff_ids"] == [info.digest]
    # A truncated blob is noticed.
    lp = oci.blob_path(tmp_path / "L", info.digest)
    lp.write_bytes(lp.read_bytes()[:-10])
    with pytest.raises(ValueError):
        oci.verify_layout(tmp_path / "L", img.digest)


def test_archive_is_deterministic_and_docker_loadable_shape(tmp_path):
    raw = make_tar([f("a", b"1")])
    lf = tmp_path / "layer.tar"
    with open(lf, "wb") as fh:
        info = oci.normalize_layer(io.BytesIO(raw), fh, epoch=EPOCH)
    oci.write_layout(tmp_path / "L", lf, info, epoch=EPOCH, name="a", version="1", namespace="ns")
    outs = []
    for _ in range(2):
        b = io.BytesIO()
        oci.write_archive(tmp_path / "L", b, compress=True, ref=imageref.reference("ns", "a", "1"))
        outs.append(b.getvalue())
    assert outs[0] == outs[1]
    import gzip
    tf = tarfile.open(fileobj=io.BytesIO(gzip.decompress(outs[0])))
    names = tf.getnames()
    assert names[:3] == ["oci-layout", "index.json", "manifest.json"]
    dm = json.load(tf.extractfile("manifest.json"))
    assert dm[0]["RepoTags"] == ["ns/a:1"] and dm[0]["Config"].startswith("blobs/sha256/")
    index = json.load(tf.extractfile("index.json"))
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "ns/a:1"
    # Without a name (quorum's own loads go by image ID) the archive names nothing.
    b = io.BytesIO()
    oci.write_archive(tmp_path / "L", b)
    tf = tarfile.open(fileobj=io.BytesIO(b.getvalue()))
    assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] is None
    assert "annotations" not in json.load(tf.extractfile("index.json"))["manifests"][0]
