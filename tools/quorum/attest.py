"""Attestations other tools can check: SLSA provenance and rebuild verdicts.

Two kinds of in-toto Statement (docs/spec/attestations.md):

* **provenance** (``https://slsa.dev/provenance/v1``), written by ``build``
  for every artifact it publishes: the subject is the artifact's manifest
  digest; the resolved dependencies are every source with its sha256 and
  origin, the seed and dependency digests, and the rendered Containerfile
  and scripts;
* **rebuild** (``REBUILD_PREDICATE``), written by ``reproduce`` for every
  node it judged: who rebuilt it on what engine, the variations applied,
  the expected and the rebuilt digests, and the verdict.

``quorum sign`` wraps each in a DSSE envelope signed with the signer's
OpenPGP key through securesystemslib's GPG signer (DSSE is never hand-made
here), and ``quorum verify`` counts, per role, the distinct rebuilders whose
signed rebuild attestation says REPRODUCED for the manifest's digest.

This module never talks to the engine: the builder hands it what it already
knows (digests, sources, the rendered files, and a description of the engine
as plain strings).  Every envelope, statement and key it reads is treated as
hostile: size-limited reads through ``safeio``, a schema check before any
field is used, and one-line errors naming the file and the field.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import __version__, FORMAT_VERSION, canon
from .errors import QuorumError
from .safeio import loads_json, read_regular

if TYPE_CHECKING:
    # securesystemslib is imported on first use (_sslib): `quorum build`
    # never needs it.  The others import this module.
    from securesystemslib.signer import GPGKey, GPGSigner

    from .build import NodeResult
    from .model import Environment, Package, Seed, Tree
    from .oci import Image
    from .render import Rendered, Settings

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_PREDICATE = "https://slsa.dev/provenance/v1"
# quorum's own URIs.  URNs on purpose: they name a format documented in
# docs/spec/attestations.md, not a web page that could move or change.
BUILD_TYPE = "urn:quorum:build-type:container/v1"
BUILDER_ID = "urn:quorum:builder"
REBUILD_PREDICATE = "urn:quorum:predicate:rebuild/v1"
REBUILDER_ID = "urn:quorum:rebuilder"
PAYLOAD_TYPE = "application/vnd.in-toto+json"   # DSSE payloadType of in-toto Statements

VERDICTS = ("REPRODUCED", "MISMATCH", "FAILED")
# Statements are small (a few KB; a Containerfile is at most a few dozen);
# an envelope adds base64 and signatures.
STATEMENT_LIMIT = 4 << 20
ENVELOPE_LIMIT = 8 << 20
MAX_SIGNATURES = 16

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class AttestError(QuorumError):
    """An attestation, envelope or key that cannot be used (exit 3: it is
    the input's fault, not the machine's)."""

    exit_code = 3


# --- the data the builder hands over -------------------------------------------------

@dataclass(frozen=True)
class Material:
    """One resolved dependency (an in-toto ResourceDescriptor)."""
    name: str
    sha256: str                               # hex, no prefix
    uri: str | None = None
    content: bytes | None = None              # small rendered files travel inline
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "digest": {"sha256": self.sha256}}
        if self.uri:
            d["uri"] = self.uri
        if self.content is not None:
            d["content"] = base64.b64encode(self.content).decode("ascii")
        if self.annotations:
            d["annotations"] = self.annotations
        return d


@dataclass(frozen=True)
class BuildFacts:
    """Everything the provenance of one artifact says, as the builder knows it."""
    tree: str                                 # the tree's name (quorum.yaml)
    name: str
    kind: str                                 # package | bootstrap | seed | environment | twin
    version: str
    image: str                                # "<namespace>/<name>:<tag>"
    digest: str                               # "sha256:…": the manifest digest (the subject)
    config_digest: str
    layer_digest: str
    input_hash: str
    definition: str                           # definition file, relative to the tree's root
    epoch: int
    materials: tuple[Material, ...]
    engine: dict[str, str]                    # {"kind": …, "version": …}: informational


def sha256_text(text: str) -> str:
    return canon.sha256_bytes(text.encode("utf-8"))


def file_material(name: str, text: str) -> Material:
    """A rendered file (Containerfile, build.sh): digest and the bytes themselves."""
    data = text.encode("utf-8")
    return Material(name=name, sha256=canon.sha256_bytes(data), content=data)


def _hex(digest: str, where: str) -> str:
    algo, _, hx = digest.partition(":")
    if algo != "sha256" or not _HEX64.match(hx):
        raise AttestError(f"expected a sha256:<64 hex> digest, found {digest[:80]!r}", field=where)
    return hx


def builder_version(engine: dict[str, str]) -> dict[str, str]:
    # The engine is informational: the subject and the materials never
    # depend on it (docs/spec/attestations.md).
    return {"quorum": __version__, "quorum-format": str(FORMAT_VERSION),
            "engine": engine.get("kind", "unknown"), "engine-version": engine.get("version", "unknown")}


@dataclass(frozen=True)
class Built:
    """A node the artifact was built on (its seed, or a dependency)."""
    role: str                                 # "seed" | "dependency"
    name: str
    image: str
    digest: str                               # manifest digest
    config_digest: str


def package_materials(pkg: Package, rendered: Rendered, built_on: list[Built],
                      file_hashes: dict[str, list]) -> tuple[Material, ...]:
    """A package's resolved dependencies: sources (sha256 and every origin),
    the seed and dependencies (by manifest digest), the package's own files
    and the rendered Containerfile and scripts."""
    out: list[Material] = []
    for s in pkg.sources:
        ann: dict[str, Any] = {"role": "source", "urls": list(s.urls)}
        if s.debian is not None:
            ann["debian"] = {"package": s.debian.package, **({"version": s.debian.version} if s.debian.version else {})}
        out.append(Material(name=s.file, sha256=s.sha256, uri=s.urls[0] if s.urls else None, annotations=ann))
    for b in built_on:
        out.append(Material(name=b.image, sha256=_hex(b.digest, f"{b.role}.{b.name}"),
                            annotations={"role": b.role, "package": b.name, "config": b.config_digest}))
    for rel, (sha, mode) in sorted(file_hashes.items()):
        out.append(Material(name=rel, sha256=sha, annotations={"role": "file", "mode": f"{mode:04o}"}))
    rendered_files = [(".quorum/Containerfile", rendered.containerfile), (".quorum/build.sh", rendered.build_sh)]
    if rendered.test_sh is not None:
        rendered_files.append((".quorum/test.sh", rendered.test_sh))
    for name, text in rendered_files:
        m = file_material(name, text)
        out.append(Material(name=m.name, sha256=m.sha256, content=m.content, annotations={"role": "rendered"}))
    return tuple(out)


def seed_materials(seed: Seed) -> tuple[Material, ...]:
    """A seed's resolved dependencies: its pinned Debian binary packages."""
    out = []
    for d in seed.debs:
        ann: dict[str, Any] = {"role": "deb", "package": d.name, "version": d.version, "arch": d.arch}
        if d.filename:
            ann["filename"] = d.filename
        out.append(Material(name=f"{d.name}_{d.version}_{d.arch}.deb", sha256=d.sha256, annotations=ann))
    return tuple(sorted(out, key=lambda m: m.name))


# --- provenance ------------------------------------------------------------------------

def provenance(f: BuildFacts) -> dict:
    """The SLSA provenance v1 Statement of one artifact.  A pure function of
    its arguments: no clock, host name or build path goes in, so two
    machines building the same inputs with the same quorum and engine write
    the same bytes."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f.image, "digest": {"sha256": _hex(f.digest, "digest")}}],
        "predicateType": PROVENANCE_PREDICATE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"tree": f.tree, "name": f.name, "kind": f.kind, "version": f.version,
                                       "definition": f.definition, "sourceDateEpoch": f.epoch},
                "internalParameters": {"inputHash": f.input_hash, "formatVersion": FORMAT_VERSION},
                "resolvedDependencies": [m.to_json() for m in f.materials],
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": builder_version(f.engine)},
                # No startedOn/finishedOn/invocationId: each would make two
                # identical builds disagree.
                "metadata": {},
                "byproducts": [{"name": "config", "digest": {"sha256": _hex(f.config_digest, "config_digest")}},
                               {"name": "layer", "digest": {"sha256": _hex(f.layer_digest, "layer_digest")}}],
            },
        },
    }


def write_provenance(tree: Tree, out: Path, name: str, img: Image, results: dict[str, NodeResult], *,
                     settings: Settings, engine: dict[str, str]) -> Path:
    """Write out/attestations/<name>.provenance.json for the artifact ``img``
    just built, from what the build used: the same rendering (with the
    build's settings), the tree's sources and files, and the digests of the
    nodes it was built on (``results``: the builder's NodeResults)."""
    from . import render
    from .imageref import reference

    def image(n: str) -> str:
        return str(reference(tree.config.namespace, n, results[n].version))

    def digests(n: str) -> tuple[str, str]:
        """(manifest digest, config digest) of a node this one was built on."""
        r = results[n]
        if r.digest is None or r.config_digest is None:   # the builder builds dependencies first
            raise AttestError(f"{n} has no digest: {name} cannot have been built on it", field="materials")
        return r.digest, r.config_digest

    epoch = tree.config.source_date_epoch
    node: Seed | Environment | Package
    if name in tree.seeds:
        node = tree.seeds[name]
        materials = seed_materials(node)
    elif name in tree.environments:
        node = tree.environments[name]
        materials = tuple(Material(name=image(m), sha256=_hex(digests(m)[0], f"member.{m}"),
                                   annotations={"role": "member", "package": m, "config": digests(m)[1]})
                          for m in node.members)
    else:
        # A twin (docs/spec/environment.md) is its package's definition
        # built in the gate's environment: the same materials but that one.
        twin = tree.twins.get(name)
        node = twin.package if twin else tree.packages[name]
        seed_name = twin.environment if twin else tree.base_of(node)
        ref = (lambda n: render.DepRef(name=n, image=digests(n)[1]))
        rendered = render.render(node, seed_image=ref(seed_name).image if seed_name else None,
                                 deps=[ref(d) for d in node.deps], epoch=epoch, settings=settings)
        on = ([("seed", seed_name)] if seed_name else []) + [("dependency", d) for d in node.deps]
        built_on = [Built(role=role, name=n, image=image(n), digest=digests(n)[0],
                          config_digest=digests(n)[1]) for role, n in on]
        materials = package_materials(node, rendered, built_on, render.file_hashes(node))
    r = results[name]
    facts = BuildFacts(tree=tree.config.name, name=name, kind=r.kind, version=r.version, image=image(name),
                       digest=img.digest, config_digest=img.config_digest, layer_digest=img.layer.digest,
                       input_hash=r.input_hash or "", definition=_relative(node.definition_file, tree.root),
                       epoch=epoch, materials=materials, engine=engine)
    path = provenance_path(out, name)
    write_statement(path, provenance(facts))
    return path


def _relative(path: Path, root: Path) -> str:
    """A definition's path inside the tree (never the checkout's location)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).name


def provenance_path(out: Path, name: str) -> Path:
    return Path(out) / "attestations" / f"{name}.provenance.json"


def rebuild_path(out: Path, name: str) -> Path:
    return Path(out) / "attestations" / f"{name}.rebuild.json"


def write_statement(path: Path, statement: dict) -> None:
    check_statement(statement, str(path))      # never write what we would refuse to read
    canon.atomic_write(path, canon.dumps_pretty(statement))


# --- rebuild attestations ------------------------------------------------------------

@dataclass(frozen=True)
class RebuildFacts:
    tree: str
    name: str
    kind: str
    image: str
    verdict: str                              # REPRODUCED | MISMATCH | FAILED
    expected: str | None                      # the manifest digest
    rebuilt: str | None
    reason: str
    applied: dict[str, str]                   # variation -> how it was applied
    not_applied: dict[str, str]               # variation -> why not
    engine: dict[str, str]


def rebuild(f: RebuildFacts) -> dict | None:
    """The rebuild Statement of one verdict, or None when there is no digest
    to make it about (a FAILED rebuild of something not in the manifest)."""
    if f.verdict not in VERDICTS:
        raise AttestError(f"unknown verdict {f.verdict!r}", field="verdict")
    subject = f.expected or f.rebuilt
    if subject is None:
        return None
    return {
        "_type": STATEMENT_TYPE,
        # The subject is what was judged: the digest the manifest claims.
        "subject": [{"name": f.image, "digest": {"sha256": _hex(subject, "expected")}}],
        "predicateType": REBUILD_PREDICATE,
        "predicate": {
            "rebuilder": {"id": REBUILDER_ID, "version": builder_version(f.engine)},
            "tree": f.tree,
            "name": f.name,
            "kind": f.kind,
            "expected": {"sha256": _hex(f.expected, "expected")} if f.expected else None,
            "rebuilt": {"sha256": _hex(f.rebuilt, "rebuilt")} if f.rebuilt else None,
            "variations": {"applied": dict(sorted(f.applied.items())),
                           "notApplied": dict(sorted(f.not_applied.items()))},
            "verdict": f.verdict,
            "reason": f.reason,
        },
    }


def write_rebuilds(out: Path, *, tree: str, namespace: str, verdicts: list, versions: dict[str, str],
                   applied: dict[str, str], not_applied: dict[str, str], engine: dict[str, str]) -> list[Path]:
    """One rebuild Statement per verdict of a reproduce, under
    ``out``/attestations/; -> the files written.  ``verdicts`` are
    reproduce's (name, kind, verdict, expected, rebuilt, reason)."""
    from .imageref import reference
    written = []
    for v in verdicts:
        st = rebuild(RebuildFacts(tree=tree, name=v.name, kind=v.kind,
                                  image=str(reference(namespace, v.name, versions[v.name])), verdict=v.verdict,
                                  expected=v.expected, rebuilt=v.rebuilt, reason=v.reason, applied=applied,
                                  not_applied=not_applied, engine=engine))
        path = rebuild_path(out, v.name)
        if st is None:
            # Nothing to attest this time: an earlier run's statement must
            # not pass for this run's verdict.
            path.unlink(missing_ok=True)
            continue
        write_statement(path, st)
        written.append(path)
    return written


# --- the schema check (hostile input) -------------------------------------------------

def _obj(v: Any, file: str, where: str) -> dict:
    if not isinstance(v, dict):
        raise AttestError("expected an object", file=file, field=where)
    return v


def _str(v: Any, file: str, where: str, *, empty: bool = False) -> str:
    if not isinstance(v, str) or (not empty and not v):
        raise AttestError("expected a non-empty string" if not empty else "expected a string", file=file, field=where)
    return v


def _list(v: Any, file: str, where: str) -> list:
    if not isinstance(v, list):
        raise AttestError("expected a list", file=file, field=where)
    return v


def _digest_set(v: Any, file: str, where: str) -> dict:
    d = _obj(v, file, where)
    if set(d) != {"sha256"} or not isinstance(d["sha256"], str) or not _HEX64.match(d["sha256"]):
        raise AttestError('expected {"sha256": <64 lower-case hex>}', file=file, field=where)
    return d


def _descriptor(v: Any, file: str, where: str) -> dict:
    d = _obj(v, file, where)
    unknown = set(d) - {"name", "uri", "digest", "content", "annotations", "downloadLocation", "mediaType"}
    if unknown:
        raise AttestError(f"unknown field {sorted(unknown)[0]!r}", file=file, field=where)
    _str(d.get("name"), file, f"{where}.name")
    _digest_set(d.get("digest"), file, f"{where}.digest")
    if "uri" in d:
        _str(d["uri"], file, f"{where}.uri")
    if "content" in d:
        try:
            content = base64.b64decode(_str(d["content"], file, f"{where}.content", empty=True), validate=True)
        except (binascii.Error, ValueError):
            raise AttestError("not valid base64", file=file, field=f"{where}.content") from None
        # Inline content must be what the digest says, or a reader of the
        # content and a checker of the digest would see different files.
        if canon.sha256_bytes(content) != d["digest"]["sha256"]:
            raise AttestError("content does not match its sha256", file=file, field=f"{where}.content")
    if "annotations" in d:
        _obj(d["annotations"], file, f"{where}.annotations")
    return d


def check_statement(doc: Any, file: str) -> dict:
    """Refuse anything but a well-formed quorum provenance or rebuild Statement."""
    doc = _obj(doc, file, "statement")
    if doc.get("_type") != STATEMENT_TYPE:
        raise AttestError(f"expected {STATEMENT_TYPE!r}", file=file, field="_type")
    unknown = set(doc) - {"_type", "subject", "predicateType", "predicate"}
    if unknown:
        raise AttestError(f"unknown field {sorted(unknown)[0]!r}", file=file, field="statement")
    subjects = _list(doc.get("subject"), file, "subject")
    if len(subjects) != 1:
        raise AttestError(f"expected exactly one subject, found {len(subjects)}", file=file, field="subject")
    s = _obj(subjects[0], file, "subject[0]")
    if set(s) != {"name", "digest"}:
        raise AttestError("expected exactly name and digest", file=file, field="subject[0]")
    _str(s["name"], file, "subject[0].name")
    _digest_set(s["digest"], file, "subject[0].digest")
    ptype = doc.get("predicateType")
    pred = _obj(doc.get("predicate"), file, "predicate")
    if ptype == PROVENANCE_PREDICATE:
        _check_provenance(pred, file)
    elif ptype == REBUILD_PREDICATE:
        _check_rebuild(pred, file, s["digest"]["sha256"])
    else:
        raise AttestError(f"unknown predicate type {str(ptype)[:80]!r}", file=file, field="predicateType")
    return doc


def _check_provenance(p: dict, file: str) -> None:
    bd = _obj(p.get("buildDefinition"), file, "predicate.buildDefinition")
    if bd.get("buildType") != BUILD_TYPE:
        raise AttestError(f"expected {BUILD_TYPE!r}", file=file, field="predicate.buildDefinition.buildType")
    ext = _obj(bd.get("externalParameters"), file, "predicate.buildDefinition.externalParameters")
    for k in ("tree", "name", "kind", "version", "definition"):
        _str(ext.get(k), file, f"predicate.buildDefinition.externalParameters.{k}")
    if not isinstance(ext.get("sourceDateEpoch"), int) or isinstance(ext.get("sourceDateEpoch"), bool):
        raise AttestError("expected an integer", file=file,
                          field="predicate.buildDefinition.externalParameters.sourceDateEpoch")
    internal = _obj(bd.get("internalParameters"), file, "predicate.buildDefinition.internalParameters")
    _str(internal.get("inputHash"), file, "predicate.buildDefinition.internalParameters.inputHash")
    deps = _list(bd.get("resolvedDependencies"), file, "predicate.buildDefinition.resolvedDependencies")
    for i, d in enumerate(deps):
        _descriptor(d, file, f"predicate.buildDefinition.resolvedDependencies[{i}]")
    rd = _obj(p.get("runDetails"), file, "predicate.runDetails")
    b = _obj(rd.get("builder"), file, "predicate.runDetails.builder")
    if b.get("id") != BUILDER_ID:
        raise AttestError(f"expected {BUILDER_ID!r}", file=file, field="predicate.runDetails.builder.id")
    _str_map(b.get("version"), file, "predicate.runDetails.builder.version")
    for i, d in enumerate(_list(rd.get("byproducts", []), file, "predicate.runDetails.byproducts")):
        _descriptor(d, file, f"predicate.runDetails.byproducts[{i}]")


def _str_map(v: Any, file: str, where: str) -> None:
    d = _obj(v, file, where)
    for k, x in d.items():
        if not isinstance(x, str):
            raise AttestError("expected a string", file=file, field=f"{where}.{k}")


def _check_rebuild(p: dict, file: str, subject_hex: str) -> None:
    known = {"rebuilder", "tree", "name", "kind", "expected", "rebuilt", "variations", "verdict", "reason"}
    unknown = set(p) - known
    if unknown:
        raise AttestError(f"unknown field {sorted(unknown)[0]!r}", file=file, field="predicate")
    r = _obj(p.get("rebuilder"), file, "predicate.rebuilder")
    if r.get("id") != REBUILDER_ID:
        raise AttestError(f"expected {REBUILDER_ID!r}", file=file, field="predicate.rebuilder.id")
    _str_map(r.get("version"), file, "predicate.rebuilder.version")
    for k in ("tree", "name", "kind"):
        _str(p.get(k), file, f"predicate.{k}")
    _str(p.get("reason"), file, "predicate.reason", empty=True)
    for k in ("expected", "rebuilt"):
        if p.get(k) is not None:
            _digest_set(p[k], file, f"predicate.{k}")
    v = _obj(p.get("variations"), file, "predicate.variations")
    _str_map(v.get("applied"), file, "predicate.variations.applied")
    _str_map(v.get("notApplied"), file, "predicate.variations.notApplied")
    verdict = p.get("verdict")
    if verdict not in VERDICTS:
        raise AttestError(f"expected one of {', '.join(VERDICTS)}", file=file, field="predicate.verdict")
    exp = (p.get("expected") or {}).get("sha256")
    reb = (p.get("rebuilt") or {}).get("sha256")
    # The verdict must follow from the digests it reports, so that nobody
    # can sign "REPRODUCED" over two different digests.
    if verdict == "REPRODUCED" and not (exp and reb and exp == reb):
        raise AttestError("REPRODUCED needs equal expected and rebuilt digests", file=file, field="predicate.verdict")
    if verdict == "MISMATCH" and not (exp and reb and exp != reb):
        raise AttestError("MISMATCH needs two different digests", file=file, field="predicate.verdict")
    if subject_hex != (exp or reb):
        raise AttestError("the subject is not the digest the predicate judged", file=file, field="subject[0].digest")


def load_statement(path: Path) -> dict:
    data = read_regular(path, limit=STATEMENT_LIMIT, error=AttestError, what="statement")
    return check_statement(loads_json(data, file=path, error=AttestError), str(path))


# --- DSSE ----------------------------------------------------------------------------

def _sslib() -> tuple[ModuleType, ModuleType, ModuleType, type[GPGKey], type[GPGSigner]]:
    """securesystemslib, imported on first use: `quorum build` never needs it."""
    try:
        from securesystemslib import dsse, exceptions
        from securesystemslib._gpg import functions as gpgfn
        from securesystemslib.signer import GPGKey, GPGSigner
    except ImportError as e:  # pragma: no cover - a broken install
        raise QuorumError(f"securesystemslib is not installed ({e}): reinstall quorum") from None
    return dsse, exceptions, gpgfn, GPGKey, GPGSigner


def sign_envelope(statement: dict, *, fingerprint: str, homedir: str | None) -> dict:
    """A DSSE envelope over ``statement``, signed by the *primary* key
    ``fingerprint`` in GnuPG home ``homedir`` (None: the user's own, with
    its agent and tokens).

    The primary, not a signing subkey GnuPG would otherwise pick: the
    library's OpenPGP key parser drops some subkeys (ed25519 signing subkeys
    among them, seen with GnuPG 2.2/2.4), so a verifier using it — in-toto's
    reference implementation included — could not check a subkey's
    signature (docs/spec/attestations.md)."""
    dsse, exceptions, gpgfn, _GPGKey, _GPGSigner = _sslib()
    # Imported by _sslib already (with its error message); named here
    # directly so the subclass below has a real class as its base.
    from securesystemslib.signer import GPGSigner, Signature

    class PrimarySigner(GPGSigner):
        # Only the key selection differs from GPGSigner: "FPR!" makes GnuPG
        # use exactly that key.  The signature packet is still the
        # library's, and so are the DSSE envelope and its PAE.
        def sign(self, payload: bytes) -> Signature:
            raw = gpgfn.create_signature(payload, self.public_key.keyid + "!", self.homedir)
            if raw["keyid"] != self.public_key.keyid:
                raise ValueError(f"GnuPG signed with {raw['keyid']}, not {self.public_key.keyid}")
            return self._sig_from_legacy_dict(raw)

    keyid = fingerprint.lower()
    try:
        _uri, public = GPGSigner.import_(keyid, homedir)
        env = dsse.Envelope(payload=canon.dumps(statement), payload_type=PAYLOAD_TYPE, signatures={})
        env.sign(PrimarySigner(public, homedir))
    except (ValueError, OSError, exceptions.Error) as e:
        first = str(e).splitlines()[0][:200] if str(e) else e.__class__.__name__
        raise QuorumError(f"signing an attestation with key {fingerprint} failed: {first}") from None
    return env.to_dict()


@dataclass(frozen=True)
class Anchor:
    """One policy key, as securesystemslib keys: the primary and each subkey
    (a signature names the key that made it, often a signing subkey)."""
    fingerprint: str                          # primary, upper-case
    keys: tuple[Any, ...]                     # securesystemslib GPGKey, one per usable part


def anchors_from_home(homedir: str, fingerprints: list[str], unusable: AbstractSet[str] = frozenset(),
                      notes: list[str] | None = None) -> dict[str, Anchor]:
    """The securesystemslib keys of anchors already imported into a
    throwaway GnuPG home.  ``unusable``: (sub)key fingerprints that are
    revoked or expired, which must not count (securesystemslib ignores
    validity).  A key the library cannot represent is left out (and said
    in ``notes``): its envelopes count for nobody, the other anchors still work."""
    _dsse, exceptions, gpgfn, GPGKey, _GPGSigner = _sslib()
    out = {}
    for fpr in fingerprints:
        try:
            bundle = gpgfn.export_pubkey(fpr.lower(), homedir)
            parts = [bundle] + list(bundle.get("subkeys", {}).values())
            keys = tuple(GPGKey(p["keyid"], p["type"], p["method"], p["keyval"]) for p in parts
                         if p["keyid"].upper() not in unusable)
        except Exception as e:  # noqa: BLE001 - securesystemslib raises many kinds for odd keys
            if notes is None:
                raise AttestError(f"cannot read anchor key {fpr} for attestations: {str(e)[:160]}") from None
            notes.append(f"anchor {fpr}: its key cannot be used for attestations ({str(e)[:160]})")
            continue
        out[fpr] = Anchor(fingerprint=fpr, keys=keys)
    return out


@dataclass(frozen=True)
class Checked:
    """A verified envelope: its statement and the primaries whose signature holds."""
    statement: dict
    signers: tuple[str, ...]


def read_envelope(path: Path) -> dict:
    data = read_regular(path, limit=ENVELOPE_LIMIT, error=AttestError, what="envelope")
    env = loads_json(data, file=path, error=AttestError)
    f = str(path)
    env = _obj(env, f, "envelope")
    if set(env) != {"payload", "payloadType", "signatures"}:
        raise AttestError("expected exactly payload, payloadType and signatures", file=f, field="envelope")
    if env["payloadType"] != PAYLOAD_TYPE:
        raise AttestError(f"expected {PAYLOAD_TYPE!r}", file=f, field="payloadType")
    _str(env["payload"], f, "payload")
    sigs = _list(env["signatures"], f, "signatures")
    if not sigs or len(sigs) > MAX_SIGNATURES:
        raise AttestError(f"expected 1 to {MAX_SIGNATURES} signatures", file=f, field="signatures")
    for i, s in enumerate(sigs):
        s = _obj(s, f, f"signatures[{i}]")
        _str(s.get("keyid"), f, f"signatures[{i}].keyid")
        _str(s.get("sig"), f, f"signatures[{i}].sig")
    return env


def verify_envelope(path: Path, anchors: dict[str, Anchor]) -> Checked:
    """Check ``path``'s DSSE signatures against the anchors, then its
    statement.  Only signatures by an anchor count; an envelope none of
    them signed is refused."""
    dsse, exceptions, _gpgfn, _GPGKey, _GPGSigner = _sslib()
    f = str(path)
    raw = read_envelope(path)
    try:
        env = dsse.Envelope.from_dict(dict(raw, signatures=[dict(s) for s in raw["signatures"]]))
    except (KeyError, ValueError, TypeError, binascii.Error, exceptions.Error) as e:
        raise AttestError(f"not a DSSE envelope ({str(e)[:120]})", file=f, field="signatures") from None
    signers = []
    for fpr, anchor in sorted(anchors.items()):
        if not anchor.keys:
            continue
        try:
            env.verify(list(anchor.keys), 1)
            signers.append(fpr)
        except (exceptions.VerificationError, ValueError):
            continue
        except Exception:  # noqa: BLE001 - a malformed signature packet; never a verdict of "signed"
            continue
    if not signers:
        raise AttestError("no good signature by an anchor", file=f, field="signatures")
    statement = check_statement(loads_json(env.payload, file=path, error=AttestError), f)
    return Checked(statement=statement, signers=tuple(signers))


# --- in the tree: signed envelopes under manifests/attestations/<FPR>/ --------------------

def signed_dir(manifests: Path, fingerprint: str) -> Path:
    """Each signer's envelopes in a folder named after the primary
    fingerprint, like manifests/signatures/: a file is only ever checked
    against the key its folder names."""
    return Path(manifests) / "attestations" / fingerprint


def _about(st: dict, tree: str, name: str) -> tuple[str, str]:
    """(tree, name) a checked statement is about."""
    p = st["predicate"]
    if st["predicateType"] == PROVENANCE_PREDICATE:
        ext = p["buildDefinition"]["externalParameters"]
        return ext["tree"], ext["name"]
    return p["tree"], p["name"]


@dataclass
class SignedAttestations:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def sign_attestations(*, out: Path, manifests: Path, tree: str, digests: dict[str, str], fingerprint: str,
                      homedir: str | None) -> SignedAttestations:
    """Sign this machine's provenance (out/attestations/) and rebuild
    attestations (out/reproduce/attestations/) of every artifact whose
    statement is about the manifest's digest for it; -> what was written.
    A statement about another digest (an older build, an older manifest)
    is skipped and said: one signs only what the manifest names."""
    res = SignedAttestations()
    dest = signed_dir(manifests, fingerprint)
    for d in (dest.parent, dest):
        # Writing through a linked folder would put files outside the tree.
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            raise AttestError("must be a real folder inside the tree", file=str(d))
    for name, digest in sorted(digests.items()):
        for kind, src in (("provenance", provenance_path(out, name)),
                          ("rebuild", rebuild_path(Path(out) / "reproduce", name))):
            if not src.exists() and not src.is_symlink():
                continue
            try:
                st = load_statement(src)
            except QuorumError as e:
                res.notes.append(f"not signed: {e}")
                continue
            want = PROVENANCE_PREDICATE if kind == "provenance" else REBUILD_PREDICATE
            if (st["predicateType"] != want or _about(st, tree, name) != (tree, name)
                    or "sha256:" + st["subject"][0]["digest"]["sha256"] != digest):
                res.notes.append(f"not signed: {src} is not about {name} {digest} of tree {tree}")
                continue
            target = dest / f"{name}.{kind}.json"
            canon.atomic_write(target, canon.dumps_pretty(sign_envelope(st, fingerprint=fingerprint, homedir=homedir)))
            res.written.append(target)
    return res


@dataclass
class RebuildCount:
    """Per package, the distinct anchors whose signed rebuild attestation
    says REPRODUCED for the manifest's digest."""
    by_package: dict[str, set[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def count_rebuilders(*, homedir: str, manifests: Path, tree: str, digests: dict[str, str],
                     fingerprints: list[str], unusable: set[str]) -> RebuildCount:
    """Check every anchor's rebuild envelopes (in a throwaway home holding
    the anchors, ``homedir``).  ``unusable``: primaries and subkeys that are
    revoked or expired, whose signatures must not count."""
    res = RebuildCount(by_package={n: set() for n in digests})
    top = Path(manifests) / "attestations"
    if top.is_symlink() or (top.exists() and not top.is_dir()):
        res.notes.append(f"{top}: not a real folder; no attestation in it counts")
        return res
    usable = [f for f in fingerprints if f not in unusable]
    anchors = anchors_from_home(homedir, usable, unusable, res.notes) if usable else {}
    for fpr in sorted(anchors):
        d = signed_dir(manifests, fpr)
        if d.is_symlink():
            res.notes.append(f"{d}: a symbolic link; its attestations do not count")
            continue
        for name, digest in sorted(digests.items()):
            p = d / f"{name}.rebuild.json"
            if not p.exists() and not p.is_symlink():
                continue
            try:
                checked = verify_envelope(p, {fpr: anchors[fpr]})
            except QuorumError as e:
                res.notes.append(f"not counted: {e}")
                continue
            st = checked.statement
            if st["predicateType"] != REBUILD_PREDICATE or _about(st, tree, name) != (tree, name):
                res.notes.append(f"not counted: {p}: not a rebuild attestation of {name} in tree {tree}")
            elif "sha256:" + st["subject"][0]["digest"]["sha256"] != digest:
                res.notes.append(f"not counted: {p}: about {name} at another digest than the manifest's")
            elif st["predicate"]["verdict"] != "REPRODUCED":
                res.notes.append(f"{p}: {fpr} rebuilt {name} with verdict {st['predicate']['verdict']}")
            else:
                res.by_package[name].add(fpr)
    return res
