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

from . import __version__, canon, imageref
from .errors import QuorumError

SIGNATURE_TYPE = "atomic container signature"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


class SimpleSignError(QuorumError):
    pass


def reference(namespace: str, name: str, version: str) -> str:
    """``<namespace>/<name>:<tag>``: the docker-reference a signature binds
    (the same name the artifact carries everywhere, see ``imageref``)."""
    return str(imageref.reference(namespace, name, version))


def repository_path(namespace: str, name: str) -> str:
    """The repository path without the registry host: what the lookaside
    layout is keyed by."""
    return imageref.reference(namespace, name, "0").path


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
    out: list[Path] = []
    while (p := d / f"signature-{len(out) + 1}").is_file():
        out.append(p)
    return out


def write(d: Path, signature: bytes, index: int | None = None) -> Path:
    """Write a signature as signature-<index>, or as the next free number."""
    n = index if index is not None else len(signature_files(d)) + 1
    p = d / f"signature-{n}"
    canon.atomic_write(p, signature)
    return p
