"""Containerfiles and build contexts from package definitions.

The package's words reach the engine only through files quorum writes into
the build context (build.sh, test.sh) and through values that passed the
patterns in ``tree``: nothing from a definition is pasted into a
Containerfile instruction, so a YAML field cannot add an instruction or a
shell command of its own.
"""
from __future__ import annotations

import hashlib
import io
import os
import shlex
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import jinja2
import jinja2.nodes as jn
from jinja2.sandbox import ImmutableSandboxedEnvironment

from . import shim
from .errors import DefinitionError, FetchError
from .model import Package
from .safeio import open_regular

BUILD_DIR = "/build"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONTAINERFILE_PATH = ".quorum/Containerfile"
TEST_CONTAINERFILE_PATH = ".quorum/test.Containerfile"


@dataclass(frozen=True)
class DepRef:
    name: str
    image: str          # "sha256:<config digest>": the image ID once loaded


@dataclass(frozen=True)
class Settings:
    """What the build environment pins.  ``reproduce`` changes some of these
    on purpose to show which packages depend on them."""
    build_dir: str = BUILD_DIR
    umask: str = "022"
    tz: str = "UTC"
    locale: str = "C"
    extra_env: tuple[tuple[str, str], ...] = ()
    build_user: str | None = None        # "uid:gid" to build as, None = root
    # Image holding reproduce's preload shim (shim.py), copied into the
    # build stage, and the shim's settings: the build script alone gets
    # them with LD_PRELOAD (the smoke test runs without the shim).
    preload_image: str | None = None
    preload_env: tuple[tuple[str, str], ...] = ()


def settings_for(pkg: Package, settings: Settings) -> Settings:
    """The settings one package builds under: a package that must build as
    root (``needs-root``), or whose own Containerfile quorum does not
    rewrite, keeps root whatever the rebuild varies."""
    if settings.build_user and (pkg.needs_root or pkg.containerfile is not None):
        return replace(settings, build_user=None)
    return settings


@dataclass
class Rendered:
    containerfile: str
    build_sh: str
    test_sh: str | None
    env: list[tuple[str, str]] = field(default_factory=list)


def _env() -> jinja2.Environment:
    e = jinja2.Environment(loader=jinja2.PackageLoader("quorum", "templates"), undefined=jinja2.StrictUndefined,
                           keep_trailing_newline=True, autoescape=False)
    e.filters["shquote"] = lambda v: shlex.quote(str(v))
    return e


_JINJA = None


def jinja() -> jinja2.Environment:
    """quorum's own templates (trusted: they ship with quorum)."""
    global _JINJA
    if _JINJA is None:
        _JINJA = _env()
    return _JINJA


# --- a package's own Containerfile: untrusted ----------------------------------
#
# A package's Containerfile arrives in a pull request from a stranger and is
# rendered on the maintainer's machine, as root, before any container exists.
# Plain Jinja2 lets a template walk from any object to Python's globals
# (``{{ lipsum.__globals__['os'].system(...) }}``), and even a sandboxed one
# can call string methods that allocate without bound (``'a'.ljust(10**10)``).
# So two independent walls: the template's syntax tree must use only the
# constructs below (no calls, no arithmetic, no macros, includes or
# assignments; at most two nested loops), and it is rendered by an immutable
# sandbox with no globals at all, with its output size bounded.

# Filters a package template may use: all pure, none allocates more than
# its input.
PACKAGE_FILTERS = frozenset({"shquote", "join", "lower", "upper", "length", "first", "last", "default",
                             "trim", "string"})
_ALLOWED_NODES: tuple[type[jn.Node], ...] = (
    jn.Template, jn.Output, jn.TemplateData, jn.Name, jn.Const, jn.Getattr, jn.Getitem, jn.For, jn.If,
    jn.Filter, jn.Test, jn.Compare, jn.Operand, jn.And, jn.Or, jn.Not, jn.CondExpr, jn.Concat, jn.Tuple,
    jn.List,
)
_ALLOWED_TESTS = frozenset({"defined", "undefined", "none", "string", "number", "sameas", "eq", "ne"})
MAX_LOOP_DEPTH = 2
MAX_RENDERED = 1 << 20      # a Containerfile of a megabyte is no honest one


class _PackageSandbox(ImmutableSandboxedEnvironment):
    """The environment package templates run in: no globals (no ``range``,
    ``lipsum``, ``dict``, ``cycler``, ``joiner``, ``namespace``), undefined
    names are errors, only PACKAGE_FILTERS."""

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
        self.globals.clear()
        base = {k: v for k, v in self.filters.items() if k in PACKAGE_FILTERS}
        base["shquote"] = lambda v: shlex.quote(str(v))
        self.filters = base
        self.tests = {k: v for k, v in self.tests.items() if k in _ALLOWED_TESTS}


_SANDBOX: _PackageSandbox | None = None


def _sandbox() -> _PackageSandbox:
    global _SANDBOX
    if _SANDBOX is None:
        _SANDBOX = _PackageSandbox()
    return _SANDBOX


def _refuse_constructs(tree: jn.Node, file: Path) -> None:
    def bad(node: jn.Node, what: str) -> DefinitionError:
        return DefinitionError(f"{what} is not allowed in a package Containerfile (only variables, "
                               f"filters {', '.join(sorted(PACKAGE_FILTERS))}, if and for)",
                               file=file, field=f"line {node.lineno}")

    def walk(node: jn.Node, loops: int) -> None:
        if not isinstance(node, _ALLOWED_NODES):
            raise bad(node, f"'{type(node).__name__}'")
        if isinstance(node, (jn.Getattr, jn.Getitem)):
            attr = node.attr if isinstance(node, jn.Getattr) else getattr(node.arg, "value", None)
            if isinstance(attr, str) and attr.startswith("_"):
                raise bad(node, f"the attribute {attr!r}")
        if isinstance(node, jn.Filter) and node.name not in PACKAGE_FILTERS:
            raise bad(node, f"the filter {node.name!r}")
        if isinstance(node, jn.Test) and node.name not in _ALLOWED_TESTS:
            raise bad(node, f"the test {node.name!r}")
        if isinstance(node, jn.For):
            if node.recursive:
                raise bad(node, "a recursive loop")
            loops += 1
            if loops > MAX_LOOP_DEPTH:
                raise bad(node, f"nesting loops more than {MAX_LOOP_DEPTH} deep")
        for child in node.iter_child_nodes():
            walk(child, loops)

    walk(tree, 0)


def compile_package_template(text: str, file: Path) -> jinja2.Template:
    """Check and compile a package's Containerfile; every problem is a
    DefinitionError naming the file and the line."""
    env = _sandbox()
    try:
        ast = env.parse(text, name=str(file))
    except jinja2.TemplateSyntaxError as e:
        raise DefinitionError(f"template error: {e.message}", file=file,
                              field=f"line {e.lineno}" if e.lineno else None) from None
    except RecursionError:
        raise DefinitionError("template nested too deeply", file=file) from None
    _refuse_constructs(ast, file)
    try:
        return env.from_string(text)
    except jinja2.TemplateError as e:
        raise DefinitionError(f"template error: {e}", file=file) from None


def render_package_template(text: str, file: Path, variables: dict) -> str:
    tmpl = compile_package_template(text, file)
    out: list[str] = []
    size = 0
    try:
        for chunk in tmpl.generate(**variables):
            size += len(chunk)
            if size > MAX_RENDERED:
                raise DefinitionError(f"renders to more than {MAX_RENDERED} characters", file=file)
            out.append(chunk)
    except DefinitionError:
        raise
    except jinja2.TemplateError as e:
        line = _template_line(e)
        raise DefinitionError(f"template error: {getattr(e, 'message', None) or e}", file=file,
                              field=f"line {line}" if line else None) from None
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError, RecursionError) as e:
        raise DefinitionError(f"template error: {type(e).__name__}: {str(e)[:200]}", file=file) from None
    return "".join(out)


def _template_line(e: Exception) -> int | None:
    line = getattr(e, "lineno", None)
    if line:
        return line
    tb = e.__traceback__
    found = None
    while tb is not None:
        # Jinja2 maps errors in compiled templates back to the template's
        # own line in the traceback's frames named after the template.
        if tb.tb_frame.f_code.co_filename.endswith("Containerfile"):
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


def template_variables(pkg: Package, *, seed_image: str | None, deps: list[DepRef], epoch: int,
                       settings: Settings, env: list[tuple[str, str]]) -> dict:
    """The documented variables of a package template (docs/spec/package.md)
    and nothing else."""
    return dict(name=pkg.name, version=pkg.version, seed=seed_image or "", deps=deps, epoch=epoch,
                build_dir=settings.build_dir, env=env,
                sources=[{"file": s.file, "sha256": s.sha256} for s in pkg.sources])


def check_package_template(pkg: Package) -> None:
    """Render a package's own Containerfile once with placeholder values of
    the real shapes, when the tree is loaded: an undefined variable or a
    template error is then reported by ``quorum graph`` like any other
    definition error, not halfway through a build."""
    if pkg.containerfile_text is None or pkg.containerfile is None:
        return
    placeholder = "sha256:" + "0" * 64
    deps = [DepRef(name=d, image=placeholder) for d in pkg.deps]
    settings = Settings()
    env = build_env(pkg, 0, settings)
    render_package_template(pkg.containerfile_text, pkg.containerfile,
                            template_variables(pkg, seed_image=placeholder, deps=deps, epoch=0,
                                               settings=settings, env=env))


def build_env(pkg: Package, epoch: int, settings: Settings = Settings()) -> list[tuple[str, str]]:
    fixed = {
        "SOURCE_DATE_EPOCH": str(epoch), "TZ": settings.tz, "LC_ALL": settings.locale, "LANG": settings.locale,
        "HOME": settings.build_dir, "PATH": DEFAULT_PATH, "DESTDIR": "/rootfs",
        "QUORUM_BUILD_DIR": settings.build_dir,
    }
    env = dict(pkg.env)
    env.update(fixed)
    env.update(dict(settings.extra_env))
    return sorted(env.items())


def render(pkg: Package, *, seed_image: str | None, deps: list[DepRef], epoch: int,
           settings: Settings = Settings()) -> Rendered:
    settings = settings_for(pkg, settings)
    env = build_env(pkg, epoch, settings)
    j = jinja()
    script = pkg.build if pkg.build is not None else "# no build script: the package's Containerfile does the work"
    build_env_ = env
    if settings.preload_image and pkg.containerfile is None:
        build_env_ = sorted((dict(env) | dict(settings.preload_env) | {"LD_PRELOAD": shim.LIBRARY}).items())
    build_sh = j.get_template("build.sh.j2").render(env=build_env_, umask=settings.umask,
                                                    build_dir=settings.build_dir, script=script.rstrip("\n"))
    test_sh = None
    if pkg.test:
        test_sh = j.get_template("test.sh.j2").render(env=env, script=pkg.test.rstrip("\n"),
                                                      build_dir=settings.build_dir)
    variables = template_variables(pkg, seed_image=seed_image, deps=deps, epoch=epoch, settings=settings, env=env)
    if pkg.containerfile is not None and pkg.containerfile_text is not None:
        # The text read (and checked) when the tree was loaded: never the
        # file again, which could have been swapped since.
        containerfile = render_package_template(pkg.containerfile_text, pkg.containerfile, variables)
    else:
        # build_user is the default template's own (the user variation);
        # package templates always build as root.
        containerfile = j.get_template("Containerfile.j2").render(**variables,
                                                                  build_user=settings.build_user or "",
                                                                  preload_image=settings.preload_image or "",
                                                                  preload_dir=shim.LIBRARY_DIR)
    return Rendered(containerfile=containerfile, build_sh=build_sh, test_sh=test_sh, env=env)


def render_test(pkg: Package, *, artifact_image: str, seed_image: str | None, deps: list[DepRef],
                settings: Settings = Settings()) -> str:
    return jinja().get_template("test.Containerfile.j2").render(
        name=pkg.name, version=pkg.version, artifact=artifact_image, seed=seed_image or "", deps=deps,
        build_dir=settings.build_dir)


# --- build contexts ---------------------------------------------------------

class _ContextWriter:
    """A build context tar with fixed metadata: the engine's layer cache and
    the build itself see the same bytes on every machine."""

    def __init__(self, fileobj: BinaryIO, epoch: int):
        self.tf = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT)
        self.epoch = epoch
        self.dirs: set[str] = set()

    def _info(self, name: str, size: int, mode: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = size, mode, self.epoch
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                ti = self._info(d, 0, 0o755)
                ti.type = tarfile.DIRTYPE
                self.tf.addfile(ti)
                self.dirs.add(d)

    def add_bytes(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._parents(name)
        self.tf.addfile(self._info(name, len(data), mode), io.BytesIO(data))

    def add_file(self, name: str, path: Path, mode: int = 0o644, expect_sha256: str | None = None) -> None:
        """Copy ``path`` in; with ``expect_sha256``, re-check the bytes as
        they are read (the cache could have been altered since it admitted
        them) and refuse a mismatch."""
        self._parents(name)
        # Checked on the open descriptor: the name may have become a FIFO,
        # a symlink or a hard link to a secret since the tree was loaded.
        with open_regular(path, single_link=expect_sha256 is None) as (f, size):
            reader = _HashingReader(f) if expect_sha256 else f
            self.tf.addfile(self._info(name, size, mode), reader)
        if expect_sha256 and reader.hexdigest() != expect_sha256:
            raise FetchError(f"cached file {path} no longer has sha256 {expect_sha256} "
                             f"(got {reader.hexdigest()}); delete it and fetch again")

    def close(self) -> None:
        self.tf.close()


class _HashingReader:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def read(self, n=-1):
        b = self.f.read(n)
        self.h.update(b)
        return b

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def write_context(dst: BinaryIO, pkg: Package, rendered: Rendered, source_paths: dict[str, Path], epoch: int,
                  test_containerfile: str | None = None) -> None:
    """The build context: sources, the package's files, and quorum's
    generated files under .quorum/.  The smoke test's context is the same
    plus its own Containerfile, so a test can use the sources (e.g. to check
    a compiler rebuilds itself to the same bytes)."""
    w = _ContextWriter(dst, epoch)
    entries: list[tuple[str, object]] = []
    for s in pkg.sources:
        entries.append((s.file, ("source", source_paths[s.file], s.sha256)))
    for rel in pkg.files:
        entries.append((rel, ("file", pkg.dir / rel, None)))
    entries.append((CONTAINERFILE_PATH, ("bytes", rendered.containerfile.encode())))
    entries.append((".quorum/build.sh", ("bytes", rendered.build_sh.encode())))
    if rendered.test_sh is not None:
        entries.append((".quorum/test.sh", ("bytes", rendered.test_sh.encode())))
    if test_containerfile is not None:
        entries.append((TEST_CONTAINERFILE_PATH, ("bytes", test_containerfile.encode())))
    for name, spec in sorted(entries):
        if spec[0] == "bytes":
            w.add_bytes(name, spec[1])
        else:
            _, path, sha = spec
            # Only the executable bit is kept from the maintainer's checkout:
            # git records no other mode, so anything else would differ
            # between two clones.
            mode = 0o755 if os.access(path, os.X_OK) and spec[0] == "file" else 0o644
            w.add_file(name, path, mode, expect_sha256=sha)
    w.close()


def file_hashes(pkg: Package) -> dict[str, list]:
    """sha256 and executable bit of every package file (for the input hash)."""
    out = {}
    for rel in pkg.files:
        p = pkg.dir / rel
        h = hashlib.sha256()
        with open_regular(p, single_link=True) as (f, _size):
            while chunk := f.read(1 << 20):
                h.update(chunk)
        out[rel] = [h.hexdigest(), 0o755 if os.access(p, os.X_OK) else 0o644]
    return out
