"""Checks on artifacts that say what a build may not ship.

* Seed-free outputs: no file of an artifact built from packages/ may be
  byte-identical to a file of any seed.  The seeds are trusted to *build*,
  never to be *shipped*: an identical file means a seed binary (or a file
  copied out of one) leaked into the distribution unrebuilt.
* Static ELF: every ELF file in those artifacts has no program interpreter
  (PT_INTERP) and no dynamic section (PT_DYNAMIC), so nothing at run time
  resolves into a library outside the artifact.
* Seed-free builds (docs/spec/environment.md): for every environment gate,
  each package of packages/ built in a seed has a twin built in the
  environment, with no Debian seed, whose files are identical (read from
  the store's records, not from the manifest); an exempt package is named
  with its reason.  The environments themselves get the seed-file check:
  an environment holding a Debian file would prove nothing.

Nothing is extracted: layers are read as tar streams.
"""
from __future__ import annotations

import hashlib
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from . import oci
from .model import EnvironmentGate, Tree, twin_name
from .store import Store
from .text import printable

PT_DYNAMIC, PT_INTERP = 2, 3
# 65,535 headers of 56 bytes is the format's ceiling; real files have < 20.
MAX_PHDRS = 1 << 20


@dataclass
class Finding:
    package: str
    path: str
    check: str          # "seed-file" | "dynamic-elf"
    detail: str

    def to_json(self) -> dict:
        # Tar names that were not UTF-8 are escaped (\xNN) rather than
        # written as lone surrogates, which strict JSON readers refuse.
        return {"package": self.package, "path": printable(self.path), "check": self.check,
                "detail": printable(self.detail)}


@dataclass
class SeedFree:
    """One environment gate, as the store shows it."""
    gate: str
    environment: str
    identical: list[str] = field(default_factory=list)       # packages whose twin has the same files
    exempt: dict[str, str] = field(default_factory=dict)     # package -> reason (from quorum.yaml)
    in_environment: list[str] = field(default_factory=list)  # packages built in the environment itself
    missing: list[str] = field(default_factory=list)         # twins not built: nothing proven

    def to_json(self) -> dict:
        return {"gate": self.gate, "environment": self.environment, "identical": self.identical,
                "exempt": self.exempt, "in_environment": self.in_environment, "missing": self.missing}


@dataclass
class AuditResult:
    checked: list[str]
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    elf_files: int = 0
    seed_files: int = 0
    missing: list[str] = field(default_factory=list)
    allowed: list[Finding] = field(default_factory=list)
    seed_free: list[SeedFree] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings and not self.missing and not any(g.missing for g in self.seed_free)

    def to_json(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "files": self.files, "elf_files": self.elf_files,
                "seed_files": self.seed_files, "missing": self.missing,
                "allowed": [f.to_json() for f in self.allowed],
                "findings": [f.to_json() for f in self.findings],
                "seed_free": [g.to_json() for g in self.seed_free]}


def elf_dynamic_parts(head: bytes, read_at) -> list[str]:
    """Names of the dynamic-linking program headers of an ELF file (empty
    for a static one).  ``read_at(offset, n)`` reads the file."""
    if head[:4] != b"\x7fELF" or len(head) < 64:
        return []
    cls, data = head[4], head[5]
    end = "<" if data == 1 else ">"
    if cls == 2:
        phoff, = struct.unpack_from(end + "Q", head, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x36)
    elif cls == 1:
        phoff, = struct.unpack_from(end + "I", head, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 0x2A)
    else:
        return ["unknown ELF class"]
    found = []
    if phentsize * phnum > MAX_PHDRS:
        return ["implausible program header table"]
    table = read_at(phoff, phentsize * phnum)
    for i in range(phnum):
        if (i + 1) * phentsize > len(table):
            found.append("truncated program headers")
            break
        p_type, = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == PT_INTERP:
            found.append("PT_INTERP (needs a program interpreter)")
        elif p_type == PT_DYNAMIC:
            found.append("PT_DYNAMIC (has a dynamic section)")
    return found


def _reader(f):
    def read_at(off: int, n: int) -> bytes:
        f.seek(off)
        return f.read(n)
    return read_at


def _layer(store: Store, name: str) -> Path:
    return oci.read_layout(store.layout(name))["layer_path"]


def seed_hashes(store: Store, seeds: list[str]) -> dict[str, tuple[str, str]]:
    """sha256 -> (seed, path) of every non-empty regular file of the seeds."""
    out: dict[str, tuple[str, str]] = {}
    for s in seeds:
        with tarfile.open(_layer(store, s), "r:") as tf:
            for m in tf:
                if m.isreg() and m.size > 0:
                    h = hashlib.sha256()
                    f = tf.extractfile(m)
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                    out.setdefault(h.hexdigest(), (s, m.name))
    return out


def audit(tree: Tree, *, packages: list[str] | None = None, store: Store | None = None) -> AuditResult:
    """Audit the artifacts of packages/ (kind "package"; bootstrap stages are
    built in and from the seeds by design and are not checked)."""
    store = store or Store(tree.out)
    names = packages or sorted(n for n, p in tree.packages.items() if p.kind == "package")
    if not packages:
        names += sorted(tree.environments)
    result = AuditResult(checked=names)
    present = [s for s in sorted(tree.seeds) if store.record(s)]
    result.missing += [f"seed {s} (not built: cannot compare)" for s in sorted(tree.seeds) if s not in present]
    hashes = seed_hashes(store, present)
    result.seed_files = len(hashes)
    for n in names:
        if store.record(n) is None:
            result.missing.append(f"{n} (not built)")
            continue
        allow = _allowances(tree, n)
        with tarfile.open(_layer(store, n), "r:") as tf:
            for m in tf:
                if not m.isreg():
                    continue
                result.files += 1
                # Streamed: memory stays constant whatever the file's size.
                f = tf.extractfile(m)
                head = f.read(64)
                h = hashlib.sha256(head)
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                if m.size > 0 and h.hexdigest() in hashes:
                    s, p = hashes[h.hexdigest()]
                    finding = Finding(n, m.name, "seed-file", f"identical to /{p} of seed {s}")
                    # An allowance covers text only: a binary identical to a
                    # seed binary is exactly what this check exists to catch.
                    if m.name in allow and head[:4] != b"\x7fELF":
                        finding.detail += f"; allowed: {allow[m.name]}"
                        result.allowed.append(finding)
                    else:
                        result.findings.append(finding)
                if head[:4] == b"\x7fELF" and n not in tree.environments:
                    # An environment builds; it ships nothing, and its
                    # members' shared libraries are not run by anyone.
                    result.elf_files += 1
                    for what in elf_dynamic_parts(head, _reader(f)):
                        result.findings.append(Finding(n, m.name, "dynamic-elf", what))
    result.seed_free = [_seed_free(tree, store, gate, names, result) for gate in tree.config.environment_gates]
    return result


def _allowances(tree: Tree, name: str) -> dict[str, str]:
    """path -> reason of the seed-identical text files ``name`` may hold: a
    package's own ``audit.same-as-seed``; for an environment, its members'
    (it holds their files, at the same paths, and nothing else of theirs)."""
    if name in tree.packages:
        return dict(tree.packages[name].same_as_seed)
    allow: dict[str, str] = {}
    env = tree.environments.get(name)
    for m in env.members if env is not None else ():
        if m in tree.packages:
            for path, why in tree.packages[m].same_as_seed:
                allow.setdefault(path, f"{why} ({m})")
    return allow


def _seed_free(tree: Tree, store: Store, gate: EnvironmentGate, names: list[str], result: AuditResult) -> SeedFree:
    """Each audited package's twin against the package, by the layer digest
    of the store's records (the files; docs/spec/environment.md)."""
    out = SeedFree(gate=gate.name, environment=gate.environment)
    exempt = dict(gate.exempt)
    for n in names:
        pkg = tree.packages.get(n)
        if pkg is None:
            continue
        if tree.base_of(pkg) == gate.environment:
            out.in_environment.append(n)
            continue
        twin = twin_name(n, gate.environment)
        if twin not in tree.twins:
            continue   # a bootstrap stage: built in the seeds by design
        mine, theirs = store.record(n), store.record(twin)
        if mine is None or theirs is None:
            out.missing.append(f"{twin} (not built: run quorum build)" if mine else f"{n} (not built)")
        elif mine.layer_digest == theirs.layer_digest:
            out.identical.append(n)
        elif n not in exempt:
            result.findings.append(Finding(n, "", "seed-free", f"differs from {twin}, its build in "
                                                                f"{gate.environment}: run quorum build"))
        if n in exempt:
            out.exempt[n] = exempt[n]
    return out
