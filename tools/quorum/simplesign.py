"""Per-image signatures in the containers-signature(5) "simple signing"
format, stored in the lookaside layout that podman and skopeo read.

A signature is an OpenPGP *signed message* (not detached) whose content is
a small JSON document binding one image manifest digest to one docker
reference.  Container tools look them up at

    <lookaside>/<repository path>@sha256=<hex>/signature-<N>     N = 1, 2, …

reading N upwards until the first missing number, so the files of one image
must be numbered without gaps.  quorum writes them below manifests/sigstore/
(docs/spec/signatures.md).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import __version__, canon
from .errors import QuorumError

SIGNATURE_TYPE = "atomic container signature"

# The docker reference grammar (distribution's reference package), in the
# parts quorum needs: a path component, a domain, a tag.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?\Z")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


class SimpleSignError(QuorumError):
    pass


def tag_for(version: str) -> str:
    """The image tag for a package version: characters a tag cannot hold
    (``+ ~ :``) become ``_`` (1:2.3+dfsg -> 1_2.3_dfsg)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", version)[:128]
    return tag if _TAG.match(tag) else "_" + tag[:127]


def _split(namespace: str, name: str) -> tuple[str | None, list[str]]:
    """-> (domain or None, path components) of <namespace>/<name>."""
    parts = f"{namespace}/{name}".split("/")
    domain = None
    # The distribution rule: a first component with '.' or ':' or equal to
    # "localhost" is a registry host, not part of the repository path.
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        domain = parts.pop(0)
        if not _DOMAIN.match(domain):
            raise SimpleSignError(f"{domain!r} is not a registry host name", field="namespace")
    for c in parts:
        if not _COMPONENT.match(c):
            raise SimpleSignError(f"{c!r} cannot be part of an image name (lower-case letters and digits, "
                                  "single separators . _ - between them)", field="namespace/name")
    return domain, parts


def reference(namespace: str, name: str, version: str) -> str:
    """``<namespace>/<name>:<tag>``: the docker-reference a signature binds."""
    domain, parts = _split(namespace, name)
    repo = "/".join(([domain] if domain else []) + parts)
    return f"{repo}:{tag_for(version)}"


def repository_path(namespace: str, name: str) -> str:
    """The repository path without the registry host: what the lookaside
    layout is keyed by."""
    _, parts = _split(namespace, name)
    return "/".join(parts)


def payload(ref: str, digest: str, creator: str = f"quorum {__version__}") -> bytes:
    """The JSON document that is signed.  No timestamp: the OpenPGP
    signature already carries its time, and the payload stays a function of
    the image alone."""
    if not _DIGEST.match(digest):
        raise SimpleSignError(f"not a sha256 manifest digest: {digest!r}")
    return canon.dumps({
        "critical": {
            "identity": {"docker-reference": ref},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": {"creator": creator},
    })


def parse_payload(data: bytes) -> tuple[str, str]:
    """-> (docker reference, manifest digest); strict about the critical
    part, as containers-signature(5) requires of a consumer."""
    try:
        doc = json.loads(data.decode("utf-8"))
        crit = doc["critical"]
        if set(doc) - {"critical", "optional"} or set(crit) != {"identity", "image", "type"}:
            raise ValueError("unexpected fields")
        if crit["type"] != SIGNATURE_TYPE or set(crit["identity"]) != {"docker-reference"} \
                or set(crit["image"]) != {"docker-manifest-digest"}:
            raise ValueError("unexpected critical content")
        ref, digest = crit["identity"]["docker-reference"], crit["image"]["docker-manifest-digest"]
        if not isinstance(ref, str) or not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError("bad reference or digest")
        return ref, digest
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SimpleSignError(f"not a simple-signing payload ({e})") from None


def lookaside_dir(sigstore: Path, namespace: str, name: str, digest: str) -> Path:
    if not _DIGEST.match(digest):
        raise SimpleSignError(f"not a sha256 manifest digest: {digest!r}")
    return sigstore / f"{repository_path(namespace, name)}@sha256={digest.split(':', 1)[1]}"


def signature_files(d: Path) -> list[Path]:
    """signature-1, signature-2, … up to the first gap (what tools read)."""
    out = []
    while (p := d / f"signature-{len(out) + 1}").is_file():
        out.append(p)
    return out


def write(d: Path, signature: bytes, index: int | None = None) -> Path:
    """Write a signature as signature-<index>, or as the next free number."""
    n = index if index is not None else len(signature_files(d)) + 1
    p = d / f"signature-{n}"
    canon.atomic_write(p, signature)
    return p
