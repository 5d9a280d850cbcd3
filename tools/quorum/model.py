"""Data classes for the tree's formats (see docs/spec/).

These are plain values: loading and validation live in ``tree``; nothing here
talks to the engine, the network or GnuPG.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoints import EngineSpec

# Names end up in file paths (out/<name>/), image tags and Containerfile
# stage names, so they are restricted to a set that cannot express a path
# separator, "..", white space or shell metacharacters.  "@" is kept out of
# names so that derived nodes can use it without colliding: a gate's twin
# is "<package>@<environment>" (docs/spec/environment.md).
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}\Z")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+~:_-]{0,127}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
# A file name inside the build folder: one path component, no hidden tricks.
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}\Z")

# Variables quorum itself sets for every build; a package may not override
# them, because each one is part of the reproducibility contract.
RESERVED_ENV = frozenset({
    "SOURCE_DATE_EPOCH", "TZ", "LC_ALL", "LANG", "HOME", "PATH", "DESTDIR",
    "QUORUM_BUILD_DIR", "QUORUM_JOBS",
})


@dataclass(frozen=True)
class TreeConfig:
    """quorum.yaml at the root of a tree."""
    name: str
    namespace: str                 # image namespace: <namespace>/<package>
    source_date_epoch: int         # the clamp for every mtime, and $SOURCE_DATE_EPOCH
    default_seed: str | None
    path: Path                     # the tree's root folder
    # Gates: name -> nodes whose artifacts must be bit-identical before
    # anything built on them may be built (the diverse double-compiling
    # check of the bootstrap is one).
    gates: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Engines this tree's builds use when no --engine is given (a tree's CI
    # names its builders here); empty: the user's engines.yaml or the local
    # engine (docs/spec/engines.md).
    engines: tuple["EngineSpec", ...] = ()
    # Environment gates (docs/spec/environment.md): every package of
    # packages/ built in a seed is built again in the environment, and the
    # two must be identical.
    environment_gates: tuple["EnvironmentGate", ...] = ()


@dataclass(frozen=True)
class EnvironmentGate:
    """quorum.yaml ``gates.<name>: {environment: E, exempt: {...}}``."""
    name: str
    environment: str
    exempt: tuple[tuple[str, str], ...] = ()   # (package, reason), sorted

    @property
    def node(self) -> str:
        """The gate's node in the graph: ':' is in no node name."""
        return f"gate:{self.name}"


@dataclass(frozen=True)
class DebianOrigin:
    """Where in Debian's source archive the same bytes can be found."""
    package: str
    version: str | None = None


@dataclass(frozen=True)
class Source:
    sha256: str
    urls: tuple[str, ...]
    file: str
    debian: DebianOrigin | None = None


@dataclass(frozen=True)
class Package:
    """One node of the tree: packages/<name>/ or bootstrap/<name>/."""
    name: str
    version: str
    dir: Path
    definition_file: Path
    kind: str = "package"                    # "package" | "bootstrap"
    description: str = ""
    seed: str | None = None                  # base of the build environment
    deps: tuple[str, ...] = ()               # build deps, by package name
    sources: tuple[Source, ...] = ()
    env: tuple[tuple[str, str], ...] = ()    # sorted (key, value) pairs
    build: str | None = None                 # script for the default template
    containerfile: Path | None = None        # the package's own template
    containerfile_text: str | None = field(default=None, compare=False, repr=False)  # as read and checked at load
    test: str | None = None                  # smoke test, run in the built image
    files: tuple[str, ...] = ()              # other files beside the definition, relative, sorted
    # Files allowed to be byte-identical to a seed file, with the reason
    # (e.g. a shell script generated from the same upstream version that
    # Debian shipped).  Never honoured for ELF files.
    same_as_seed: tuple[tuple[str, str], ...] = ()
    # Why the build must run as root (it installs into the build environment
    # itself): reproduce's user variation then leaves it root.  None = any user.
    needs_root: str | None = None
    raw: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SeedDeb:
    """One pinned Debian binary package of a seed."""
    name: str
    version: str
    arch: str
    sha256: str
    size: int | None = None
    filename: str | None = None     # path within the archive (pool/...), never a host


@dataclass(frozen=True)
class Seed:
    """bootstrap/seeds/<name>.yaml: the only binaries a tree trusts."""
    name: str
    definition_file: Path
    description: str = ""
    arch: str = "amd64"
    request: tuple[str, ...] = ()            # what `quorum seed lock` resolves
    debs: tuple[SeedDeb, ...] = ()           # the locked closure
    symlinks: tuple[tuple[str, str], ...] = ()  # (path, target) that maintainer scripts would have made
    env: tuple[tuple[str, str], ...] = ()
    exclude: tuple[str, ...] = ()            # path globs left out of the seed (docs, man pages)
    omit: tuple[str, ...] = ()               # Debian packages dropped from the locked closure

    @property
    def locked(self) -> bool:
        return bool(self.debs)


@dataclass(frozen=True)
class Environment:
    """environments/<name>.yaml: a build environment made of tree artifacts."""
    name: str
    definition_file: Path
    members: tuple[str, ...]                    # packages or bootstrap stages, in merge order
    description: str = ""
    symlinks: tuple[tuple[str, str], ...] = ()  # (path, target), sorted


def twin_name(package: str, environment: str) -> str:
    """The node that builds ``package`` again in ``environment``.  '@' is
    not allowed in a package name (NAME_RE), so a twin never collides with
    a node of the tree."""
    return f"{package}@{environment}"


@dataclass(frozen=True)
class Twin:
    """A package built again in a gate's environment (a proof, not an
    artifact of the distribution)."""
    name: str                  # twin_name(package.name, environment)
    package: Package           # the original definition, built unchanged
    environment: str
    gate: str


@dataclass
class Tree:
    config: TreeConfig
    seeds: dict[str, Seed]
    packages: dict[str, Package]
    environments: dict[str, Environment] = field(default_factory=dict)
    # Derived from the environment gates and the packages (tree.load_tree).
    twins: dict[str, Twin] = field(default_factory=dict)

    def base_of(self, pkg: Package) -> str | None:
        """The seed or environment a package is built on."""
        return pkg.seed or self.config.default_seed

    @property
    def root(self) -> Path:
        return self.config.path

    @property
    def out(self) -> Path:
        return self.config.path / "out"

    @property
    def manifest_path(self) -> Path:
        return self.config.path / "manifests" / "manifest.json"
