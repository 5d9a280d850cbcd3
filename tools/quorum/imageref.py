"""The one place image names are made: ``<namespace>/<name>:<tag>``.

Every tool that meets an artifact by name reads it with a different grammar:
Docker's ``RepoTags`` and a simple-signing ``docker-reference`` follow the
distribution reference grammar; an OCI layout's
``org.opencontainers.image.ref.name`` (which ``podman load``, ``skopeo
oci:DIR:REF`` and ``umoci`` read) follows the image-layout grammar.  A name
is only safe when it satisfies both, so quorum makes every name here, once,
from the node's name and version (docs/spec/artifact.md, "Names"):

* repository: ``<namespace>/<name>``, lower case; each path component is
  ``[a-z0-9]+`` joined by single ``.``, ``_`` or ``-`` (a name's ``+``
  becomes ``p``, the usual spelling: ``g++`` -> ``gpp``); at most 255
  characters.  Two nodes of one tree may not map to the same name.
* tag: the version with every character other than ``[A-Za-z0-9._-]``
  (``+ ~ :``) mapped to ``_``, runs of separators folded to their first
  character, separators at either end dropped, at most 128 characters.

The tag is a label for people and tools; the manifest digest stays the
artifact's identity, so a mapping that folds two versions together can
mislead nobody who checks digests.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import QuorumError

# distribution/reference: a path component, and a registry host (with port).
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?\Z")
_DOCKER_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
# The OCI image-layout grammar of org.opencontainers.image.ref.name.
_OCI_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_OCI_REF = re.compile(rf"{_OCI_COMPONENT}(?:/{_OCI_COMPONENT})*\Z")

NAME_TOTAL_MAX = 255   # distribution's limit on the repository name, host included
TAG_MAX = 128


class ImageRefError(QuorumError):
    pass


@dataclass(frozen=True)
class ImageRef:
    repository: str    # [domain/]path, e.g. "quorum/tcc-musl"
    tag: str           # e.g. "0.9.27_git20200814.62c30a4a"

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def path(self) -> str:
        """The repository without its registry host (what simple signing's
        lookaside layout is keyed by)."""
        first, _, rest = self.repository.partition("/")
        return rest if rest and _is_domain(first) else self.repository


def _is_domain(component: str) -> bool:
    # distribution's rule: a first component with '.' or ':' or equal to
    # "localhost" names a registry host, not part of the repository path.
    return "." in component or ":" in component or component == "localhost"


def _fold(text: str, bad: str, seps: str) -> str:
    """Map characters matching the class ``bad`` to ``_``, fold runs of
    separators to their first one and drop separators at either end."""
    text = re.sub(bad, "_", text)
    text = re.sub(f"([{re.escape(seps)}])[{re.escape(seps)}]+", r"\1", text)
    return text.strip(seps)


def tag_for(version: str) -> str:
    """The tag for a version: ``1:2.3+dfsg~rc1`` -> ``1_2.3_dfsg_rc1``."""
    tag = _fold(version, r"[^A-Za-z0-9._-]", "._-")[:TAG_MAX].rstrip("._-")
    if not tag:
        raise ImageRefError(f"version {version!r} leaves nothing for an image tag", field="version")
    return tag


def component_for(name: str) -> str:
    """A node name as one repository path component (names are already
    lower case, see model.NAME_RE; '+' is the one character they may hold
    that a component may not)."""
    comp = _fold(name.lower().replace("+", "p"), r"[^a-z0-9._-]", "._-")
    if not _COMPONENT.match(comp):
        raise ImageRefError(f"{name!r} cannot be made an image name component", field="name")
    return comp


def check_namespace(namespace: str) -> str:
    """The namespace as given, or ImageRefError saying why it cannot start
    an image name (used when quorum.yaml is loaded, so the error names it)."""
    parts = namespace.split("/")
    if len(parts) > 1 and _is_domain(parts[0]):
        if not _DOMAIN.match(parts[0]):
            raise ImageRefError(f"{parts[0]!r} is not a registry host name", field="namespace")
        parts = parts[1:]
    for c in parts:
        if not _COMPONENT.match(c):
            raise ImageRefError(f"{c!r} cannot be part of an image name (lower-case letters and digits, single "
                                "separators . _ - between them, '/' between components)", field="namespace")
    return namespace


def reference(namespace: str, name: str, version: str) -> ImageRef:
    """``<namespace>/<name>:<tag>``: the Docker tag, OCI ref name and
    signed docker-reference of one artifact."""
    repo = f"{check_namespace(namespace)}/{component_for(name)}"
    if len(repo) > NAME_TOTAL_MAX:
        raise ImageRefError(f"image name {repo!r} is longer than {NAME_TOTAL_MAX} characters; "
                            "shorten the namespace", field="namespace")
    ref = ImageRef(repository=repo, tag=tag_for(version))
    # Both grammars hold by construction; checked anyway because a name that
    # one tool refuses is exactly the bug this module exists to prevent.
    assert _DOCKER_TAG.match(ref.tag) and _OCI_REF.match(str(ref)), ref
    return ref


def is_oci_ref_name(text: str) -> bool:
    return bool(_OCI_REF.match(text))


def is_docker_reference(text: str) -> bool:
    """``[domain/]path:tag`` under distribution's grammar (no digest form)."""
    repo, sep, tag = text.rpartition(":")
    if not sep or "/" in tag or not _DOCKER_TAG.match(tag) or len(repo) > NAME_TOTAL_MAX:
        return False
    try:
        check_namespace(repo)
    except ImageRefError:
        return False
    return True
