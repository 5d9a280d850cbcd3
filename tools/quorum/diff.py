"""File-level comparison of two artifacts: what exactly differs, and where.

A digest says *that* two rebuilds disagree; a maintainer needs to know *which
file* and *which bytes*.  This module walks the single layer of two OCI
layouts side by side and reports files added, removed and changed (metadata
field by field, contents by a comparator chosen for the kind of file), plus
any difference in the image config and manifest annotations.

Like diffoscope, contents are compared by one small comparator per kind of
file (ELF, text, and a binary fallback that always works).  A new kind is a
new function registered with ``@comparator``; nothing else changes.

Both layers may come from someone else's machine, so they are treated as
hostile: nothing is ever extracted to disk (a symlink or a '..' name is only a
string here), only regular files are read, and only into memory under a size
cap.  Text printed to a terminal is escaped, because a file's contents could
otherwise carry terminal control sequences into the maintainer's shell.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from . import canon, oci
from .errors import QuorumError
from .text import printable


class UnreadableError(QuorumError):
    """An input that cannot be compared at all (not a layout, a broken tar,
    a malformed manifest).  Exit code 3 (an input error, docs/exit-codes.md),
    so that scripts can tell "could not compare" from 1, "compared and found
    differences"."""

    exit_code = 3

# --- results -----------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Caps that keep a diff of two large or hostile layers readable and its
    memory bounded."""
    text_max_bytes: int = 1 << 20     # larger files are never treated as text
    diff_lines: int = 40              # lines of unified diff shown per file
    hexdump_before: int = 16          # bytes shown before the first difference
    hexdump_after: int = 32           # bytes shown from the first difference on
    elf_sections: int = 30            # differing ELF sections listed per file


@dataclass(frozen=True)
class Entry:
    """One layer member as far as a diff cares: what an extractor would
    create, not how the tar happened to encode it."""
    path: str
    type: str                # file | dir | symlink | hardlink | char | block | fifo | other
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    link: str | None = None  # symlink or hard link target
    sha256: str | None = None  # regular files only

    def describe(self) -> str:
        bits = [self.type]
        if self.type == "file":
            bits.append(f"{self.size} bytes")
        bits.append(f"{self.mode:04o} {self.uid}:{self.gid}")
        if self.link is not None:
            bits.append(f"-> {self.link}")
        return ", ".join(bits)


@dataclass(frozen=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass
class Detail:
    """What one comparator found in a file's contents."""
    kind: str                     # the comparator's name
    summary: str                  # one line
    lines: list[str] = field(default_factory=list)  # body: diff, hexdump, table
    truncated: int = 0            # body lines left out
    data: dict[str, Any] = field(default_factory=dict)  # facts for --json


@dataclass
class FileChange:
    path: str
    old: Entry
    new: Entry
    fields: list[FieldChange]
    details: list[Detail] = field(default_factory=list)


@dataclass(frozen=True)
class ArtifactRef:
    label: str
    digest: str | None = None        # manifest digest (None when only a layer was compared)
    layer_digest: str | None = None
    config_digest: str | None = None


@dataclass
class DiffResult:
    a: ArtifactRef
    b: ArtifactRef
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    changed: list[FileChange] = field(default_factory=list)
    config: list[FieldChange] = field(default_factory=list)  # image config + annotations
    notes: list[str] = field(default_factory=list)  # anything odd about the layers themselves

    @property
    def identical(self) -> bool:
        if self.a.digest and self.b.digest and self.a.digest != self.b.digest:
            return False  # even when no file differs, the bytes do
        if self.a.layer_digest and self.b.layer_digest and self.a.layer_digest != self.b.layer_digest:
            return False
        return not (self.added or self.removed or self.changed or self.config)


# --- reading a layer ---------------------------------------------------------

_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
          tarfile.GNUTYPE_SPARSE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
          tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo"}


def _key(name: str) -> str:
    """The name two layers are matched by.  Leading '/' and './' are noise
    some tar writers add; '..' is kept as it is (it is reported, never
    followed), so a hostile name cannot alias an honest one."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


class Blob:
    """One side of a changed regular file, readable only through the open
    tar (never from disk).  Heads and decoded text are cached because several
    comparators may ask for them."""

    def __init__(self, tf: tarfile.TarFile, member: tarfile.TarInfo, entry: Entry):
        self._tf, self._member, self.entry = tf, member, entry
        self._head: bytes | None = None
        self._text: str | None = None
        self._text_decided = False

    def open(self) -> IO[bytes]:
        f = self._tf.extractfile(self._member)
        assert f is not None  # only regular files become Blobs
        return f

    def head(self, n: int) -> bytes:
        if self._head is None or (len(self._head) < n and len(self._head) < self.entry.size):
            with self.open() as f:
                self._head = f.read(n)
        return self._head[:n]

    def text(self, limits: Limits) -> str | None:
        if not self._text_decided:
            self._text_decided = True
            if self.entry.size <= limits.text_max_bytes:
                self._text = decode_text(self.head(limits.text_max_bytes))
        return self._text


class _Layer:
    """An open layer: entries by key, plus the members to read contents."""

    def __init__(self, path: Path, side: str):
        self.path, self.side = path, side
        self.tf = tarfile.open(path, mode="r:")
        self.entries: dict[str, Entry] = {}
        self.members: dict[str, tarfile.TarInfo] = {}
        self.order: list[str] = []
        self.notes: list[str] = []
        try:
            self._read()
        except BaseException:
            self.tf.close()
            raise

    def _read(self) -> None:
        for m in self.tf.getmembers():
            key = _key(m.name)
            if not key:
                continue  # the root: its metadata is not part of an image
            if key in self.entries:
                # The last one wins, as it would on extraction; a normalised
                # layer never has this, so it is worth a note.
                self.notes.append(f"{self.side}: {key!r} appears more than once; the last one is compared")
            else:
                self.order.append(key)
            self.members[key] = m
            self.entries[key] = self._entry(key, m)

    def _entry(self, key: str, m: tarfile.TarInfo) -> Entry:
        kind = _TYPES.get(m.type, "other")
        digest = None
        if m.isreg():
            h = hashlib.sha256()
            f = self.tf.extractfile(m)
            if f is not None:
                with f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            digest = h.hexdigest()
        link = m.linkname if kind in ("symlink", "hardlink") else None
        return Entry(path=key, type=kind, size=int(m.size) if kind == "file" else 0,
                     mode=m.mode & 0o7777, uid=int(m.uid), gid=int(m.gid), mtime=int(m.mtime),
                     link=link, sha256=digest)

    def blob(self, key: str) -> Blob:
        return Blob(self.tf, self.members[key], self.entries[key])

    def close(self) -> None:
        self.tf.close()


# --- comparators -------------------------------------------------------------

CompareFn = Callable[[Blob, Blob, Limits], list[Detail]]


@dataclass(frozen=True)
class Comparator:
    name: str
    recognizes: Callable[[Blob, Limits], bool]
    compare: CompareFn


# Tried in order; the first that recognises *both* sides is used.  The binary
# comparator recognises everything and is kept last.
COMPARATORS: list[Comparator] = []


def comparator(name: str, recognizes: Callable[[Blob, Limits], bool], *,
               first: bool = False) -> Callable[[CompareFn], CompareFn]:
    """Register a content comparator: the decorated function gets both
    Blobs and the Limits and returns Details.  It is tried after those
    registered before it (``first=True``: before all of them), and always
    before the binary fallback."""
    def wrap(fn: CompareFn) -> CompareFn:
        c = Comparator(name, recognizes, fn)
        fallback = [x for x in COMPARATORS if x.name == "binary"]
        rest = [x for x in COMPARATORS if x.name != "binary"]
        COMPARATORS[:] = ([c] + rest if first else rest + [c]) + fallback
        return fn
    return wrap


def decode_text(data: bytes) -> str | None:
    """``data`` as text, or None when it does not look like text.  UTF-8
    first; latin-1 decodes any bytes, so it is accepted only when no control
    characters appear (those mean binary, not a legacy encoding).  A NUL
    always means binary."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    allowed = {0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1B}
    if any((c < 0x20 and c not in allowed) or 0x7F <= c <= 0x9F for c in data):
        return None
    return data.decode("latin-1")


def _first_difference(a: Blob, b: Blob, chunk: int = 1 << 16) -> int | None:
    """Offset of the first differing byte (streamed, so any size works), or
    None when the contents are equal."""
    offset = 0
    with a.open() as fa, b.open() as fb:
        while True:
            ca, cb = fa.read(chunk), fb.read(chunk)
            if ca != cb:
                n = min(len(ca), len(cb))
                i = next((i for i in range(n) if ca[i] != cb[i]), n)
                return offset + i
            if not ca:
                return None
            offset += len(ca)


def _read_at(blob: Blob, offset: int, n: int) -> bytes:
    with blob.open() as f:
        f.seek(offset)
        return f.read(n)


def hexdump(data: bytes, start: int, *, prefix: str = "", width: int = 16) -> list[str]:
    """Classic offset / hex / ASCII rows; ``start`` is the offset of data[0]."""
    rows = []
    for i in range(0, len(data), width):
        chunk = data[i:i + width]
        hexes = " ".join(f"{c:02x}" for c in chunk).ljust(width * 3 - 1)
        text = "".join(chr(c) if 0x20 <= c < 0x7F else "." for c in chunk)
        rows.append(f"{prefix}{start + i:08x}  {hexes}  |{text}|")
    return rows


def _binary_detail(a: Blob, b: Blob, limits: Limits) -> list[Detail]:
    off = _first_difference(a, b)
    if off is None:
        return []
    # Align the window to 16 bytes so rows of both sides line up.
    start = max(0, off - limits.hexdump_before) // 16 * 16
    n = off - start + limits.hexdump_after
    da, db = _read_at(a, start, n), _read_at(b, start, n)
    ha, hb = hexdump(da, start, prefix="- "), hexdump(db, start, prefix="+ ")
    lines = []
    for i, (ra, rb) in enumerate(zip(ha, hb)):
        if ra[2:] == rb[2:]:
            lines.append("  " + ra[2:])
            continue
        lines += [ra, rb]
        if start + i * 16 <= off < start + (i + 1) * 16:
            # A caret under the first differing byte: the eye finds it at once.
            lines.append(" " * (2 + 8 + 2 + 3 * (off % 16)) + "^^")
    # A side that ends inside the window has fewer rows; show what is left.
    lines += ha[len(hb):] + hb[len(ha):]
    if off >= min(a.entry.size, b.entry.size):
        shorter = "a" if a.entry.size < b.entry.size else "b"
        summary = f"{shorter} ends at byte {off:#x} ({off}); the other continues (sizes {a.entry.size} / {b.entry.size})"
    else:
        summary = f"first difference at byte {off:#x} ({off}) of {a.entry.size} / {b.entry.size}"
    return [Detail(kind="binary", summary=summary, lines=lines,
                   data={"offset": off, "size_a": a.entry.size, "size_b": b.entry.size})]


# --- ELF -----------------------------------------------------------------------

_ELF_MAGIC = b"\x7fELF"
_SHT_NOBITS = 8


class _ElfError(Exception):
    pass


def _elf_sections(blob: Blob) -> dict[str, tuple[int, int, str | None]]:
    """name -> (type, size, sha256 of contents) for every section, parsed in
    Python with bounds checks (no readelf, no file on disk).  Duplicate names
    get '#2', '#3' so nothing is silently merged."""
    size = blob.entry.size
    with blob.open() as f:
        ident = f.read(64)
        if len(ident) < 52 or ident[:4] != _ELF_MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise _ElfError("truncated or unknown ELF header")
        is64, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if is64:
            shoff, = struct.unpack_from(end + "Q", ident, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", ident, 0x3A)
            fmt, need = end + "IIQQQQIIQQ", 64
        else:
            shoff, = struct.unpack_from(end + "I", ident, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", ident, 0x2E)
            fmt, need = end + "IIIIIIIIII", 40
        if shoff == 0:
            return {}
        if shentsize < need or shoff >= size:
            raise _ElfError("section header table out of bounds")

        def header(i: int) -> tuple:
            f.seek(shoff + i * shentsize)
            raw = f.read(need)
            if len(raw) < need:
                raise _ElfError(f"section header {i} is truncated")
            return struct.unpack(fmt, raw)

        first = header(0)
        if shnum == 0:          # extended numbering: the count lives in section 0
            shnum = first[5]
        if shstrndx == 0xFFFF:  # SHN_XINDEX: the index lives in section 0's sh_link
            shstrndx = first[6]
        if shnum * shentsize > size - shoff or shstrndx >= shnum:
            raise _ElfError("section count out of bounds")
        heads = [header(i) for i in range(shnum)]
        st = heads[shstrndx]
        if st[4] + st[5] > size:
            raise _ElfError("section name table out of bounds")
        f.seek(st[4])
        strtab = f.read(min(st[5], 1 << 24))

        out: dict[str, tuple[int, int, str | None]] = {}
        for h in heads[1:]:
            name_off, stype, ssize, soff = h[0], h[1], h[5], h[4]
            end_name = strtab.find(b"\x00", name_off)
            name = strtab[name_off:end_name if end_name >= 0 else None].decode("utf-8", "backslashreplace") or "(unnamed)"
            key, n = name, 2
            while key in out:
                key, n = f"{name}#{n}", n + 1
            digest = None
            if stype != _SHT_NOBITS:
                if soff + ssize > size:
                    raise _ElfError(f"section {name} lies beyond the end of the file")
                f.seek(soff)
                hh, left = hashlib.sha256(), ssize
                while left > 0:
                    chunk = f.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    hh.update(chunk)
                    left -= len(chunk)
                digest = hh.hexdigest()
            out[key] = (stype, ssize, digest)
        return out


def _is_elf(blob: Blob, limits: Limits) -> bool:
    return blob.head(4) == _ELF_MAGIC


@comparator("elf", _is_elf)
def compare_elf(a: Blob, b: Blob, limits: Limits) -> list[Detail]:
    """Which sections differ: usually the fastest route from "the binary
    differs" to the cause (a build ID, an embedded path in .debug_str, a
    timestamp in .rodata).  The first differing byte is reported too."""
    binary = _binary_detail(a, b, limits)
    try:
        sa, sb = _elf_sections(a), _elf_sections(b)
    except (_ElfError, struct.error) as e:
        return [Detail(kind="elf", summary=f"could not read ELF sections ({e}); bytes compared instead")] + binary
    rows: list[str] = []
    names = list(sa) + [n for n in sb if n not in sa]
    for n in names:
        if n not in sb:
            rows.append(f"{n}: only in a")
        elif n not in sa:
            rows.append(f"{n}: only in b")
        elif sa[n] != sb[n]:
            (ta, za, ha), (tb, zb, hb) = sa[n], sb[n]
            what = []
            if ta != tb:
                what.append(f"type {ta} -> {tb}")
            if za != zb:
                what.append(f"size {za} -> {zb}")
            if ha != hb:
                what.append("contents differ")
            rows.append(f"{n}: " + ", ".join(what))
    if not rows:
        return [Detail(kind="elf", summary="all sections are equal; the headers or the gaps between sections differ")] + binary
    shown = rows[:limits.elf_sections]
    return [Detail(kind="elf", summary=f"{len(rows)} of {len(names)} ELF sections differ", lines=shown,
                   truncated=len(rows) - len(shown),
                   data={"sections": [r.split(":", 1)[0] for r in rows]})] + binary


# --- text ----------------------------------------------------------------------

def _is_text(blob: Blob, limits: Limits) -> bool:
    return blob.text(limits) is not None


@comparator("text", _is_text)
def compare_text(a: Blob, b: Blob, limits: Limits) -> list[Detail]:
    """A unified diff, capped: the first few hunks are what a maintainer
    needs; the rest is in the saved report or diffoscope's."""
    ta, tb = a.text(limits) or "", b.text(limits) or ""
    # keepends: a difference only in line endings or the final newline must
    # still show up as a changed line.
    raw = list(difflib.unified_diff(ta.splitlines(keepends=True), tb.splitlines(keepends=True),
                                    fromfile=f"a/{a.entry.path}", tofile=f"b/{b.entry.path}", n=3))
    lines: list[str] = []
    for line in raw:
        if line.endswith("\n"):
            lines.append(line[:-1])
        else:
            lines += [line, "\\ No newline at end of file"]
    if not lines:
        # Same text from different bytes (one side UTF-8, the other
        # latin-1): only the bytes can show the difference.
        return _binary_detail(a, b, limits)
    shown = lines[:limits.diff_lines]
    changed = sum(1 for x in lines[2:] if x[:1] in "+-")
    return [Detail(kind="text", summary=f"{changed} lines added or removed", lines=shown,
                   truncated=len(lines) - len(shown))]


@comparator("binary", lambda blob, limits: True)
def compare_binary(a: Blob, b: Blob, limits: Limits) -> list[Detail]:
    return _binary_detail(a, b, limits)


def compare_contents(a: Blob, b: Blob, limits: Limits = Limits()) -> list[Detail]:
    for c in COMPARATORS:
        if c.recognizes(a, limits) and c.recognizes(b, limits):
            return c.compare(a, b, limits)
    return []


# --- comparing ------------------------------------------------------------------

_FIELDS = ("type", "size", "mode", "owner", "link", "sha256", "mtime")


def _field(e: Entry, name: str) -> Any:
    if name == "owner":
        return f"{e.uid}:{e.gid}"
    return getattr(e, name)


def compare_entries(old: Entry, new: Entry) -> list[FieldChange]:
    return [FieldChange(f, _field(old, f), _field(new, f))
            for f in _FIELDS if _field(old, f) != _field(new, f)]


def _sort_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _compare_open_layers(la: _Layer, lb: _Layer, result: DiffResult, limits: Limits) -> None:
    result.notes += la.notes + lb.notes
    for key in sorted(set(la.entries) | set(lb.entries), key=_sort_key):
        ea, eb = la.entries.get(key), lb.entries.get(key)
        if ea is None:
            assert eb is not None  # the key came from one side or the other
            result.added.append(eb)
        elif eb is None:
            result.removed.append(ea)
        else:
            fields = compare_entries(ea, eb)
            if not fields:
                continue
            details = []
            if ea.type == eb.type == "file" and ea.sha256 != eb.sha256:
                details = compare_contents(la.blob(key), lb.blob(key), limits)
            result.changed.append(FileChange(key, ea, eb, fields, details))
    if la.entries.keys() == lb.entries.keys() and la.order != lb.order:
        result.notes.append("the entries are stored in a different order")


def compare_layers(a: Path, b: Path, *, limits: Limits = Limits(),
                   labels: tuple[str, str] | None = None) -> DiffResult:
    """Compare two uncompressed layer tars file by file.  Raises
    UnreadableError when either is not a readable tar."""
    result = DiffResult(ArtifactRef(labels[0] if labels else str(a)),
                        ArtifactRef(labels[1] if labels else str(b)))
    layers: list[_Layer] = []
    try:
        for path, side in ((a, "a"), (b, "b")):
            try:
                layers.append(_Layer(Path(path), side))
            except _READ_ERRORS as e:
                raise UnreadableError(f"not a readable layer tar ({e.__class__.__name__}: {e})",
                                      file=path) from None
        try:
            _compare_open_layers(layers[0], layers[1], result, limits)
        except _READ_ERRORS as e:  # a member cut short half-way through the layer
            raise UnreadableError(f"layer unreadable while comparing ({e.__class__.__name__}: {e})",
                                  file=f"{a} or {b}") from None
    finally:
        for layer in layers:
            layer.close()
    return result


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config as dotted keys, so a change is reported as one precise
    field.  Env lists become one key per variable (their order is fixed by
    oci.image_config, so a set difference says it all)."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif prefix.endswith(".Env") and isinstance(doc, list) and all(isinstance(x, str) for x in doc):
        for x in doc:
            name, _, value = x.partition("=")
            out[f"{prefix}[{name}]"] = value
    else:
        out[prefix] = doc
    return out


def _metadata(layout: Path, info: dict) -> dict[str, Any]:
    config = oci.read_json(oci.blob_path(layout, info["config_digest"]))
    if not isinstance(config, dict):
        raise ValueError("the image config is not a JSON object")
    if isinstance(config.get("rootfs"), dict):
        # The layer digest is reported on its own; repeating it here is noise.
        config["rootfs"].pop("diff_ids", None)
    flat = _flatten(config)
    flat.update(_flatten(info["manifest"].get("annotations") or {}, "annotations"))
    return flat


def compare_metadata(a: Path, ia: dict, b: Path, ib: dict) -> list[FieldChange]:
    ma, mb = _metadata(a, ia), _metadata(b, ib)
    return [FieldChange(k, ma.get(k), mb.get(k))
            for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]


_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, tarfile.TarError)


def _read(layout: Path) -> dict:
    try:
        return oci.read_layout(layout)
    except _READ_ERRORS as e:
        raise UnreadableError(f"not a readable OCI layout ({e.__class__.__name__}: {e})", file=layout) from None


def compare(a: Path, b: Path, *, limits: Limits = Limits(),
            labels: tuple[str, str] | None = None) -> DiffResult:
    """Compare two OCI layouts (as written by oci.write_layout).  Raises
    UnreadableError when either is not a readable single-layer layout."""
    a, b = Path(a), Path(b)
    ia, ib = _read(a), _read(b)
    la, lb = labels or (str(a), str(b))
    result = DiffResult(ArtifactRef(la, ia["digest"], ia["layer_digest"], ia["config_digest"]),
                        ArtifactRef(lb, ib["digest"], ib["layer_digest"], ib["config_digest"]))
    if ia["digest"] == ib["digest"]:
        return result
    try:
        result.config = compare_metadata(a, ia, b, ib)
    except _READ_ERRORS as e:
        raise UnreadableError(f"image config unreadable ({e.__class__.__name__}: {e})",
                              file=f"{a} or {b}") from None
    if ia["layer_digest"] != ib["layer_digest"]:
        files = compare_layers(ia["layer_path"], ib["layer_path"], limits=limits)
        result.added, result.removed, result.changed = files.added, files.removed, files.changed
        result.notes = files.notes
        if not (files.added or files.removed or files.changed):
            result.notes.append("the layer bytes differ but no file does: tar headers or padding differ "
                                "(diffoscope on the two layer blobs shows how)")
    return result


# --- rendering ------------------------------------------------------------------

def _value(field_name: str, v: Any) -> str:
    if v is None:
        return "(none)"
    if field_name == "mode":
        return f"{v:04o}"
    if field_name == "mtime":
        return f"{v} ({oci.rfc3339(v)})" if isinstance(v, int) and v >= 0 else str(v)
    if isinstance(v, str):
        return printable(v) if field_name in ("type", "owner", "sha256") else repr(printable(v))
    return printable(json.dumps(v, sort_keys=True, ensure_ascii=False))


def _summary(r: DiffResult) -> str:
    parts = [f"{len(r.added)} added", f"{len(r.removed)} removed", f"{len(r.changed)} changed"]
    s = "files: " + ", ".join(parts)
    if r.config:
        s += f"; {len(r.config)} image config/annotation fields differ"
    return s


def render_text(result: DiffResult, *, max_files: int | None = None) -> str:
    """What a maintainer reads in a terminal: a header naming both sides,
    then one block per differing path ('+' added, '-' removed, '~' changed)
    with the fields that changed and where the contents differ."""
    r = result
    out = [f"a: {printable(r.a.label)}" + (f"  {r.a.digest}" if r.a.digest else ""),
           f"b: {printable(r.b.label)}" + (f"  {r.b.digest}" if r.b.digest else "")]
    if r.identical:
        out.append("identical")
        return "\n".join(out) + "\n"
    if r.a.layer_digest != r.b.layer_digest:
        out.append(f"layer: {r.a.layer_digest} -> {r.b.layer_digest}")
    out.append(_summary(r))
    for n in r.notes:
        out.append(f"note: {printable(n)}")
    if r.config:
        out += ["", "image config and annotations:"]
        out += [f"  {printable(c.field)}: {_value(c.field, c.old)} -> {_value(c.field, c.new)}" for c in r.config]

    blocks: list[tuple[bytes, list[str]]] = []
    for e in r.added:
        blocks.append((_sort_key(e.path), [f"+ {printable(e.path)}  ({printable(e.describe())})"]))
    for e in r.removed:
        blocks.append((_sort_key(e.path), [f"- {printable(e.path)}  ({printable(e.describe())})"]))
    for c in r.changed:
        lines = [f"~ {printable(c.path)}"]
        for f in c.fields:
            lines.append(f"    {f.field}: {_value(f.field, f.old)} -> {_value(f.field, f.new)}")
        for d in c.details:
            lines.append(f"    [{d.kind}] {printable(d.summary)}")
            lines += [f"      {printable(x)}" for x in d.lines]
            if d.truncated:
                lines.append(f"      … {d.truncated} more lines not shown (see diff.json or diffoscope)")
        blocks.append((_sort_key(c.path), lines))
    blocks.sort(key=lambda x: x[0])
    shown = blocks if max_files is None else blocks[:max_files]
    for _, lines in shown:
        out += [""] + lines
    if len(shown) < len(blocks):
        out += ["", f"… {len(blocks) - len(shown)} more paths differ (not shown)"]
    return "\n".join(out) + "\n"


def _jsonable(v: Any) -> Any:
    """JSON can carry any Unicode, but not the lone surrogates that stand for
    non-UTF-8 bytes in tar names; show those bytes as \\xNN instead."""
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if isinstance(v, dict):
        return {_jsonable(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _entry_json(e: Entry) -> dict:
    return {"path": e.path, "type": e.type, "size": e.size, "mode": f"{e.mode:04o}",
            "uid": e.uid, "gid": e.gid, "mtime": e.mtime, "link": e.link, "sha256": e.sha256}


def _change_json(c: FieldChange) -> dict:
    if c.field == "mode":
        return {"field": c.field, "old": f"{c.old:04o}", "new": f"{c.new:04o}"}
    return {"field": c.field, "old": c.old, "new": c.new}


def to_json(result: DiffResult) -> dict:
    r = result
    ref = lambda x: {"label": x.label, "digest": x.digest, "layer_digest": x.layer_digest,
                     "config_digest": x.config_digest}
    return _jsonable({
        "identical": r.identical,
        "a": ref(r.a), "b": ref(r.b),
        "added": [_entry_json(e) for e in r.added],
        "removed": [_entry_json(e) for e in r.removed],
        "changed": [{"path": c.path, "fields": [_change_json(f) for f in c.fields],
                     "details": [{"kind": d.kind, "summary": d.summary, "lines": d.lines,
                                  "truncated": d.truncated, "data": d.data} for d in c.details]}
                    for c in r.changed],
        "config": [_change_json(c) for c in r.config],
        "notes": r.notes,
    })


def save(result: DiffResult, folder: Path) -> list[Path]:
    """Write diff.txt and diff.json into ``folder``, each atomically, so a
    reader never sees half a report.  Returns the two paths."""
    folder = Path(folder)
    txt, js = folder / "diff.txt", folder / "diff.json"
    canon.atomic_write(txt, render_text(result).encode("utf-8"))
    canon.atomic_write(js, canon.dumps_pretty(to_json(result)))
    return [txt, js]


# --- diffoscope ----------------------------------------------------------------

def run_diffoscope(a_layer_path: Path, b_layer_path: Path, folder: Path, *,
                   timeout: float = 900) -> list[Path]:
    """Run diffoscope (when installed) on two layer tars, writing
    diffoscope.txt and diffoscope.html into ``folder``.  It goes deeper than
    this module (disassembly, archives inside archives) but is optional: its
    absence, a failure or a timeout returns [] and leaves no partial report
    (the reason, if any, is in folder/diffoscope.log)."""
    exe = shutil.which("diffoscope")
    if exe is None:
        return []
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Reports are written into a private folder and moved into place only
    # when diffoscope finished, so a killed run leaves no half report.
    tmp = Path(tempfile.mkdtemp(prefix=".diffoscope.", dir=folder))
    try:
        txt, html, log = tmp / "diffoscope.txt", tmp / "diffoscope.html", tmp / "diffoscope.log"
        cmd = [exe, "--text", str(txt), "--html", str(html), os.fspath(a_layer_path), os.fspath(b_layer_path)]
        with open(log, "wb") as logf:
            # Its own session, so a timeout ends diffoscope *and* the tools it
            # runs (objdump, readelf…); output goes to a file, not a pipe, so
            # a straggler holding the pipe open cannot hang us.
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        # 0: identical, 1: differences found, anything else: diffoscope failed.
        if rc not in (0, 1):
            why = f"diffoscope timed out after {timeout} s\n" if rc is None else f"diffoscope exited with {rc}\n"
            canon.atomic_write(folder / "diffoscope.log", why.encode() + log.read_bytes()[-20000:])
            return []
        (folder / "diffoscope.log").unlink(missing_ok=True)  # a failed earlier run's reason no longer holds
        produced = []
        for f in (txt, html):
            if f.exists():
                os.replace(f, folder / f.name)
                produced.append(folder / f.name)
        return produced
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
