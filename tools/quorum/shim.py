"""The rebuild's preload shim: one small C library (shims/vary.c) that the
file_order and clock variations preload into a rebuild's dynamically linked
programs, because a Docker-API engine offers no other way to change how a
folder lists its entries or what the wall clock reads (see the variations'
modules for what was tried).

The library is compiled for each ``quorum reproduce`` from the source that
ships with quorum, in a seed of the tree that has a C compiler and the same
C library as the build seeds, on the engine that rebuilds.  It lives in the
rebuild's build stage only (/.quorum-vary/), never in /rootfs: it changes
what the build *sees*, never what the artifact holds.

What it cannot reach, the report says: statically linked programs (busybox,
TinyCC), packages with their own Containerfile (quorum does not rewrite
them), and times the kernel stamps on files.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from . import oci
from .errors import EngineError, QuorumError
from .model import Tree

if TYPE_CHECKING:
    from .engines import Engine
    from .store import Store

LIBRARY_DIR = "/.quorum-vary"
LIBRARY = f"{LIBRARY_DIR}/libquorum-vary.so"
# The dynamic loader a glibc seed carries: where it is missing, the seed's
# programs are static and a preload reaches none of them.
_LOADERS = ("lib64/ld-linux-x86-64.so.2", "usr/lib64/ld-linux-x86-64.so.2",
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def source() -> bytes:
    return resources.files("quorum").joinpath("shims/vary.c").read_bytes()


def compiler_seed(tree: Tree) -> str | None:
    """The seed the shim is compiled in: the first (by name) whose locked
    packages include a GCC and glibc's headers."""
    for name in sorted(tree.seeds):
        debs = {d.name for d in tree.seeds[name].debs}
        if "libc6-dev" in debs and any(d.startswith("gcc-") and d[4:].isdigit() for d in debs):
            return name
    return None


@lru_cache(maxsize=32)
def _has_loader(layer_path: str, mtime_ns: int) -> bool:
    with tarfile.open(layer_path, "r:") as tf:
        for m in tf:
            if m.name.lstrip("./") in _LOADERS:
                return True
    return False


def has_dynamic_loader(layout: Path) -> bool:
    layer = Path(oci.read_layout(layout)["layer_path"])
    return _has_loader(str(layer), layer.stat().st_mtime_ns)


@dataclass(frozen=True)
class Reach:
    """Which rebuilt packages a preload reaches, and why the others not."""
    reached: tuple[str, ...]
    missed: tuple[tuple[str, str], ...]      # (package, why not)

    def describe(self) -> str:
        if not self.missed:
            return f"every rebuilt package's dynamically linked programs ({len(self.reached)} packages)"
        why: dict[str, list[str]] = {}
        for n, reason in self.missed:
            why.setdefault(reason, []).append(n)
        parts = "; ".join(f"{reason}: {', '.join(ns)}" for reason, ns in sorted(why.items()))
        return f"dynamically linked programs of {len(self.reached)} packages (not {parts})"


def reach(tree: Tree, targets: frozenset[str], layouts: dict[str, Path]) -> Reach:
    reached, missed = [], []
    loader: dict[str, bool] = {}
    for n in sorted(targets):
        pkg = tree.packages.get(n)
        if pkg is None:
            continue                       # seeds are assembled, not built by programs
        seed = tree.base_of(pkg)
        if pkg.containerfile is not None:
            missed.append((n, "own Containerfile"))
        elif seed is None:
            missed.append((n, "no seed"))
        elif seed not in layouts:
            missed.append((n, f"seed {seed} not built in out/"))
        else:
            if seed not in loader:
                loader[seed] = has_dynamic_loader(layouts[seed])
            if loader[seed]:
                reached.append(n)
            else:
                missed.append((n, f"seed {seed} has only static programs"))
    return Reach(tuple(reached), tuple(missed))


def _context(seed_image: str) -> bytes:
    """A build context for the shim.  -O2 and nothing else from the
    environment: the library must be the same on every engine."""
    containerfile = (
        "# Rendered by quorum: the rebuild's preload shim (tools/quorum/shims/vary.c).\n"
        f"FROM {seed_image} AS cc\n"
        "COPY vary.c /quorum-shim/vary.c\n"
        'RUN ["/bin/sh", "-eu", "-c", "cd /quorum-shim && '
        'gcc -shared -fPIC -O2 -Wall -Werror -o libquorum-vary.so vary.c"]\n'
        "FROM scratch\n"
        "COPY --from=cc /quorum-shim/libquorum-vary.so /libquorum-vary.so\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in (("Containerfile", containerfile.encode()), ("vary.c", source())):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def build(engine: "Engine", *, seed_layout: Path, seed_config_digest: str, owner: str, stage: "Store") -> str:
    """Compile the shim on ``engine`` in the compiler seed; returns the image
    ID of a one-file image holding /libquorum-vary.so.  Loads the seed first
    if the engine lacks it (checked by the image ID afterwards, as every
    load is), staging the archive in ``stage``: a crash leaves it where the
    store's next holder removes it, not in /tmp."""
    if not engine.has_image(seed_config_digest):
        with stage.staging("shim-seed") as tmp:
            arch = tmp / "seed.tar"
            with open(arch, "wb") as f:
                oci.write_archive(seed_layout, f)
            engine.load(arch)
        if not engine.has_image(seed_config_digest):
            raise EngineError(f"the engine did not take the compiler seed as {seed_config_digest}")
    lines: list[str] = []
    try:
        return engine.build(io.BytesIO(_context(seed_config_digest)), owner=owner, on_line=lines.append)
    except QuorumError as e:
        tail = " | ".join(lines[-3:])
        raise QuorumError(f"the preload shim did not compile: {e}" + (f" ({tail})" if tail else "")) from None
