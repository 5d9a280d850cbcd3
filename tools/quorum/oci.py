"""Deterministic layers and OCI image layouts.

The engine's own image bytes are not reproducible (its tar writer records
build-time mtimes, PAX headers, user names…), so quorum takes the one layer of
a built image apart and writes it again from nothing but what should matter:
entry names, contents, modes, numeric owners, link targets.  The layer blob
is left uncompressed: gzip output depends on the zlib build of the machine,
and a digest that changes with zlib would make two honest rebuilders
disagree.  Compression happens only for transport (``write_archive``).

See docs/spec/artifact.md for the exact rules.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import canon, imageref
from .errors import QuorumError, UnsafeArchiveError
from .safeio import JSON_LIMIT, load_json

if TYPE_CHECKING:
    from typing_extensions import Buffer   # collections.abc.Buffer from Python 3.12 on

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"

# What a config's history entry says made the layer: a constant, so that the
# digest does not change with quorum's release or the machine.
HISTORY_CREATED_BY = "quorum"

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Modes that survive normalisation.  setuid/setgid/sticky are kept because a
# package may legitimately need them (and a diff must show them); the file
# type bits are re-derived from the entry type.
_PERM_MASK = 0o7777


@dataclass(frozen=True)
class LayerInfo:
    digest: str        # "sha256:…" of the uncompressed tar == its diff_id
    size: int
    entries: int


@dataclass(frozen=True)
class Image:
    """What the store records about a written layout."""
    digest: str            # manifest digest: the package's identity
    config_digest: str     # == the image ID the engine gives it after load
    layer: LayerInfo
    size: int              # bytes of all blobs of the layout


def _clean_name(name: str, *, what: str = "path") -> str:
    """Normalise a member name to a relative POSIX path or refuse it.

    A leading "/" or "./" is harmless noise and is stripped; a ".." component
    is an attempt to write outside the image root (on extraction by a careless
    consumer) and is refused outright rather than "fixed", because no honest
    build produces one."""
    parts = [x for x in name.split("/") if x not in ("", ".")]
    if any(x == ".." for x in parts):
        raise UnsafeArchiveError(f"{what} {name!r} climbs out of the image root with '..'")
    if any("\x00" in x for x in parts):
        raise UnsafeArchiveError(f"{what} {name!r} contains a NUL byte")
    return "/".join(parts)


def normalize_layer(src: str | os.PathLike | BinaryIO, dst: BinaryIO, *, epoch: int,
                    drop_prefixes: tuple[str, ...] = ()) -> LayerInfo:
    """Read the tar ``src`` and write its deterministic form to ``dst``.

    Rules (docs/spec/artifact.md): entries sorted by name (bytes); missing
    parent directories added as 0755 root:root; mtime clamped to ``epoch``;
    uid/gid kept as numbers, user and group names dropped; PAX headers, xattrs
    and atime/ctime dropped; GNU format for long names (no PAX, so no
    per-machine headers); hard links must point at an earlier entry of the
    same archive; devices, FIFOs and whiteouts are refused.  Nothing is ever
    extracted to disk, so a symlink — absolute or not — is only data here and
    cannot redirect a write.
    """
    tf = tarfile.open(src, mode="r:") if isinstance(src, (str, os.PathLike)) else tarfile.open(fileobj=src, mode="r:")
    with tf:
        members: dict[str, tarfile.TarInfo] = {}
        for m in tf.getmembers():
            name = _clean_name(m.name)
            if not name:
                continue  # the root itself: its metadata is not part of an image
            if any(name == p or name.startswith(p + "/") for p in drop_prefixes):
                continue
            base = name.rsplit("/", 1)[-1]
            if base.startswith(".wh."):
                raise UnsafeArchiveError(f"{name!r} is an overlay whiteout; an artifact is a single layer "
                                         "and may not delete files")
            if m.ischr() or m.isblk():
                raise UnsafeArchiveError(f"{name!r} is a device node; artifacts may not ship devices")
            if m.isfifo():
                raise UnsafeArchiveError(f"{name!r} is a FIFO; artifacts may not ship FIFOs")
            if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
                raise UnsafeArchiveError(f"{name!r} has an unsupported tar type {m.type!r}")
            if name in members:
                raise UnsafeArchiveError(f"{name!r} appears twice in the layer")
            members[name] = m

        # Add missing parent directories so that every consumer sees the same
        # tree regardless of how it treats implicit parents.
        for name in list(members):
            parts = name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent in members:
                    if not members[parent].isdir():
                        raise UnsafeArchiveError(f"{name!r} lies below {parent!r}, which is not a directory")
                    continue
                d = tarfile.TarInfo(parent)
                d.type, d.mode = tarfile.DIRTYPE, 0o755
                members[parent] = d

        names = sorted(members, key=lambda n: n.encode("utf-8", "surrogateescape"))
        # Hard links, by inode rather than by name order: the engine writes
        # the first name it met as the file and later ones as links to it,
        # but after sorting a link ("a-c") can come before its target
        # ("a/file": "-" sorts before "/").  Each group of names of one file
        # is written with its first name in *our* order as the file and the
        # others as links to it, so the bytes depend on the names only.
        group_of: dict[str, str] = {}          # name -> the regular member it shares an inode with
        for name in names:
            m = members[name]
            if m.islnk():
                target = _clean_name(m.linkname, what="hard link target")
                # Only a regular file of this same layer may be linked:
                # anything else is a way to make an extractor link (and
                # then overwrite) a file outside the root.
                if target not in members or not members[target].isreg():
                    raise UnsafeArchiveError(
                        f"hard link {name!r} points at {m.linkname!r}, which is not a regular file of the layer")
                group_of[name] = group_of[target] = target
        first_of: dict[str, str] = {}          # regular member -> first name of its group in output order
        for name in names:
            if name in group_of:
                first_of.setdefault(group_of[name], name)
        seen: set[str] = set()
        h = hashlib.sha256()
        out = _HashingWriter(dst, h)
        tw = tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                          errors="surrogateescape")
        with tw:
            for name in names:
                m = members[name]
                if name in group_of:
                    # Every name of a hard-linked file carries the file's own
                    # metadata (they share one inode).
                    m = members[group_of[name]]
                ti = tarfile.TarInfo(name)
                ti.mode = m.mode & _PERM_MASK
                ti.uid, ti.gid = int(m.uid), int(m.gid)
                ti.uname = ti.gname = ""
                ti.mtime = min(int(m.mtime), epoch)
                ti.pax_headers = {}
                if m.isdir():
                    ti.type = tarfile.DIRTYPE
                    tw.addfile(ti)
                elif m.issym():
                    if not m.linkname or "\x00" in m.linkname:
                        raise UnsafeArchiveError(f"symlink {name!r} has an empty or invalid target")
                    ti.type, ti.linkname = tarfile.SYMTYPE, m.linkname
                    tw.addfile(ti)
                elif name in group_of and first_of[group_of[name]] != name:
                    ti.type, ti.linkname = tarfile.LNKTYPE, first_of[group_of[name]]
                    tw.addfile(ti)
                else:
                    ti.type, ti.size = tarfile.REGTYPE, m.size
                    f = tf.extractfile(m) if m.size else None
                    tw.addfile(ti, f)
                seen.add(name)
        return LayerInfo(digest="sha256:" + h.hexdigest(), size=out.count, entries=len(names))


class _HashingWriter(io.RawIOBase):
    def __init__(self, f: BinaryIO, h: hashlib._Hash):
        self.f, self.h, self.count = f, h, 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:  # tarfile asks where it starts
        return self.count

    def write(self, b: Buffer) -> int:
        b = bytes(b)
        self.f.write(b)
        self.h.update(b)
        self.count += len(b)
        return len(b)


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_config(layer: LayerInfo, *, epoch: int, env: dict[str, str] | None = None,
                 arch: str = "amd64") -> dict:
    """The image config: only fields that are the same on every machine.
    ``created`` is SOURCE_DATE_EPOCH, never the build time; no hostname, no
    container id.  ``history`` has one entry per layer, because buildah (and
    so Podman) refuses a base image whose history does not account for every
    layer; the entry says nothing of the machine or the builder's commands."""
    envd = {"PATH": DEFAULT_PATH}
    envd.update(env or {})
    return {
        "architecture": arch,
        "os": "linux",
        "created": rfc3339(epoch),
        "config": {"Env": [f"{k}={v}" for k, v in sorted(envd.items())]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created": rfc3339(epoch), "created_by": HISTORY_CREATED_BY}],
    }


def _put_blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = canon.sha256_bytes(data)
    p = layout / "blobs" / "sha256" / digest
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return "sha256:" + digest, len(data)


def write_layout(layout: Path, layer_file: Path, layer: LayerInfo, *, epoch: int,
                 name: str, version: str, namespace: str, env: dict[str, str] | None = None,
                 arch: str = "amd64") -> Image:
    """Write an OCI image layout into the (new, empty) folder ``layout``,
    moving ``layer_file`` in as the layer blob.  index.json names the image
    ``<namespace>/<name>:<tag>`` (``imageref.reference``); the name is not
    part of the manifest, so the artifact's digest does not depend on it.
    The caller publishes the folder atomically (``store``); nothing here is
    visible to a reader."""
    layout.mkdir(parents=True, exist_ok=False)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    shutil.move(str(layer_file), blobs / layer.digest.split(":", 1)[1])
    cfg_digest, cfg_size = _put_blob(layout, canon.dumps(image_config(layer, epoch=epoch, env=env, arch=arch)))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": cfg_digest, "size": cfg_size},
        "layers": [{"mediaType": MT_LAYER, "digest": layer.digest, "size": layer.size}],
        "annotations": {
            "org.opencontainers.image.title": name,
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.created": rfc3339(epoch),
        },
    }
    man_digest, man_size = _put_blob(layout, canon.dumps(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": man_digest, "size": man_size,
            "annotations": {REF_NAME: str(imageref.reference(namespace, name, version))},
        }],
    }
    (layout / "index.json").write_bytes(canon.dumps(index))
    (layout / "oci-layout").write_bytes(canon.dumps({"imageLayoutVersion": "1.0.0"}))
    return Image(digest=man_digest, config_digest=cfg_digest, layer=layer,
                 size=layer.size + cfg_size + man_size)


def read_json(path: Path) -> Any:
    """A JSON document of a layout (which may come from anyone: `quorum
    diff` reads other people's artifacts), bounded in size and depth; any
    problem is a ValueError, as read_layout promises."""
    try:
        return load_json(path, limit=JSON_LIMIT)
    except QuorumError as e:
        raise ValueError(str(e)) from None


def read_layout(layout: Path) -> dict:
    """Parse a layout written by ``write_layout``; returns
    {digest, manifest, config_digest, layer_digest, layer_path}.  Raises
    ValueError when anything is missing or inconsistent."""
    index = read_json(layout / "index.json")
    mans = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(mans, list):
        raise ValueError(f"{layout}/index.json: not an OCI image index")
    if len(mans) != 1:
        raise ValueError(f"{layout}/index.json: expected exactly one manifest")
    digest = mans[0]["digest"]
    man_path = blob_path(layout, digest)
    manifest = read_json(man_path)
    if not isinstance(manifest, dict):
        raise ValueError(f"{man_path}: not an OCI image manifest")
    layers = manifest.get("layers") or []
    if len(layers) != 1:
        raise ValueError(f"{man_path}: expected exactly one layer")
    return {
        "digest": digest,
        "manifest": manifest,
        "config_digest": manifest["config"]["digest"],
        "layer_digest": layers[0]["digest"],
        "layer_path": blob_path(layout, layers[0]["digest"]),
    }


_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})\Z")


def blob_path(layout: Path, digest: str) -> Path:
    """The blob's path; the digest is checked first because it comes from a
    JSON file that may be hostile ("sha256:../../etc/passwd")."""
    m = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return layout / "blobs" / "sha256" / m.group(1)


def verify_layout(layout: Path, expect_digest: str | None = None, *, deep: bool = False) -> dict:
    """Check a layout is whole: every blob present with its recorded size
    (and, with ``deep``, its hash).  A half-written or tampered layout raises
    ValueError so the store rebuilds instead of trusting it."""
    info = read_layout(layout)
    if expect_digest is not None and info["digest"] != expect_digest:
        raise ValueError(f"{layout}: manifest digest {info['digest']} != recorded {expect_digest}")
    man = info["manifest"]
    blobs = [(info["digest"], None), (man["config"]["digest"], man["config"]["size"])]
    blobs += [(l["digest"], l["size"]) for l in man["layers"]]
    for digest, size in blobs:
        p = blob_path(layout, digest)
        st = p.stat()
        if size is not None and st.st_size != size:
            raise ValueError(f"{p}: size {st.st_size} != {size}")
        if deep and "sha256:" + canon.sha256_file(p) != digest:
            raise ValueError(f"{p}: content does not match its digest")
    return info


def _tar_add_file(tw: tarfile.TarFile, arcname: str, path: Path | None = None, data: bytes | None = None) -> None:
    ti = tarfile.TarInfo(arcname)
    ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0o644, 0, 0, 0, "", ""
    if data is not None:
        ti.size = len(data)
        tw.addfile(ti, io.BytesIO(data))
    else:
        assert path is not None, "_tar_add_file needs a path or data"
        ti.size = path.stat().st_size
        with open(path, "rb") as f:
            tw.addfile(ti, f)


def write_archive(layout: Path, dst: BinaryIO, *, ref: imageref.ImageRef | None = None,
                  compress: bool = False) -> None:
    """One file holding the layout: an OCI archive (podman load, skopeo
    oci-archive:) that also carries Docker's manifest.json, so ``docker load``
    and the engine API accept the very same bytes.  ``ref`` becomes the
    Docker ``RepoTags`` and replaces the layout's ref name in the archive's
    index.json, so both loaders name the image alike; without it the
    archive names nothing (quorum's own loads go by image ID).  Entries in
    a fixed order with fixed metadata; gzip (for transport only) without
    name or time."""
    info = read_layout(layout)
    raw: BinaryIO | gzip.GzipFile = dst
    gz = None
    if compress:
        gz = gzip.GzipFile(fileobj=dst, mode="wb", mtime=0, filename="", compresslevel=6)
        raw = gz
    tw = tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT)
    with tw:
        _tar_add_file(tw, "oci-layout", layout / "oci-layout")
        _tar_add_file(tw, "index.json", data=canon.dumps(_index_named(layout, ref)))
        man = info["manifest"]
        docker_manifest = [{
            "Config": "blobs/sha256/" + man["config"]["digest"].split(":")[1],
            "RepoTags": [str(ref)] if ref else None,
            "Layers": ["blobs/sha256/" + l["digest"].split(":")[1] for l in man["layers"]],
        }]
        _tar_add_file(tw, "manifest.json", data=canon.dumps(docker_manifest))
        for digest in sorted({info["digest"], man["config"]["digest"], *[l["digest"] for l in man["layers"]]}):
            _tar_add_file(tw, "blobs/sha256/" + digest.split(":")[1], blob_path(layout, digest))
    if gz is not None:
        gz.close()


def _index_named(layout: Path, ref: imageref.ImageRef | None) -> dict:
    """The layout's index.json with its one manifest named ``ref`` (or
    named nothing)."""
    index = read_json(layout / "index.json")
    for m in index["manifests"]:
        ann = {k: v for k, v in (m.get("annotations") or {}).items() if k != REF_NAME}
        if ref is not None:
            ann[REF_NAME] = str(ref)
        if ann:
            m["annotations"] = ann
        else:
            m.pop("annotations", None)
    return index


def layer_entries(layer_path: Path) -> dict[str, tarfile.TarInfo]:
    """name -> TarInfo of a normalised layer (for audits and diffs)."""
    with tarfile.open(layer_path, "r:") as tf:
        return {m.name: m for m in tf.getmembers()}
