"""Load a tree from disk and validate it against docs/spec/.

Every problem becomes one DefinitionError naming the file, the field and what
was expected.  Validation is strict on purpose: an unknown field is an error
(a typo such as ``dependencies:`` for ``deps:`` would otherwise silently build
a different package), and nothing from a definition reaches a shell or a
Containerfile without passing a pattern here.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import imageref
from .errors import DefinitionError, QuorumError
from .text import known
from .safeio import DEFINITION_LIMIT, JSON_LIMIT, load_json, read_regular, within
from .model import (
    ENV_KEY_RE, FILE_RE, NAME_RE, RESERVED_ENV, SHA256_RE, VERSION_RE,
    DebianOrigin, Environment, EnvironmentGate, Package, Seed, SeedDeb, Source, Tree, TreeConfig, Twin,
    twin_name,
)

CONFIG_FILE = "quorum.yaml"
ENVIRONMENTS_DIR = "environments"
PACKAGE_FILE = "package.yaml"
CONTAINERFILE = "Containerfile"


# libyaml's parser when PyYAML has it (10x faster on a large tree), else the
# pure-Python one; both only construct plain types (safe loading).
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeBase):
    """SafeLoader that refuses duplicate keys: with plain PyYAML the last one
    silently wins, which lets a definition show a reviewer one value while
    building with another."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # Built in one pass (PyYAML's own construct_mapping would construct
    # every key a second time): this runs for every mapping of every
    # definition, thousands of times on a large tree.
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml(path: Path, error: type[QuorumError] = DefinitionError) -> Any:
    # A definition is read like any planted file: regular, bounded, no
    # symlink, no FIFO (see safeio).
    return parse_yaml(read_regular(path, limit=DEFINITION_LIMIT, error=error, what="file"), path, error)


# Limits on the shape of a YAML document.  No honest definition comes near
# them; past them a document is an attack on the parser: nesting recurses in
# PyYAML's constructor (RecursionError at ~1,000 levels, a crash inside
# libyaml at ~100,000), and anchors let a small file stand for an
# exponentially large value (the "billion laughs").
YAML_MAX_DEPTH = 32
YAML_MAX_NODES = 200_000
# Integers: a 5,000-digit number is refused by Python's int() itself; nothing
# in a definition needs more than 64 bits.
YAML_MAX_INT = (1 << 63) - 1


def _check_shape(text: str, path: Path, error: type[QuorumError]) -> None:
    """Walk the event stream (libyaml's parser keeps its own stack and does
    not recurse) and refuse anchors, aliases, deep nesting and huge
    documents before anything is composed or constructed."""
    depth = nodes = 0
    try:
        for ev in yaml.parse(text, Loader=_SafeBase):
            if isinstance(ev, yaml.AliasEvent):
                raise error("YAML aliases (*name) are not allowed: write the value out",
                            file=path, field=_line(ev))
            if isinstance(ev, yaml.NodeEvent):
                nodes += 1
                if ev.anchor is not None:
                    raise error("YAML anchors (&name) are not allowed: write the value out",
                                file=path, field=_line(ev))
                if nodes > YAML_MAX_NODES:
                    raise error(f"more than {YAML_MAX_NODES} YAML values", file=path)
            if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > YAML_MAX_DEPTH:
                    raise error(f"nested more than {YAML_MAX_DEPTH} levels deep", file=path, field=_line(ev))
            elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as e:
        raise _yaml_error(e, path, error) from None


def _line(ev: Any) -> str | None:
    mark = getattr(ev, "start_mark", None)
    return f"line {mark.line + 1}" if mark is not None else None


def _yaml_error(e: yaml.YAMLError, path: Path, error: type[QuorumError]) -> QuorumError:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark else None
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return error(f"invalid YAML: {problem}", file=path, field=where)


def parse_yaml(data: bytes, path: Path, error: type[QuorumError] = DefinitionError) -> Any:
    """Parse YAML bytes strictly (no duplicate keys, no anchors or aliases,
    bounded depth, plain types only); errors name the file and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error("not UTF-8 text", file=path) from None
    _check_shape(text, path, error)
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, path, error) from None
    except ValueError as e:
        # int() of a number with thousands of digits.
        raise error(f"invalid YAML value: {str(e)[:100]}", file=path) from None


# --- small typed accessors: each names the file and the field on failure ----

class _Fields:
    """Reads fields out of one mapping, remembering which were used so that
    whatever is left over can be reported as unknown."""

    def __init__(self, data: Any, file: Path, prefix: str = ""):
        if not isinstance(data, dict):
            raise DefinitionError("expected a mapping", file=file, field=prefix or None)
        self.data, self.file, self.prefix, self.used = data, file, prefix, set()

    def _f(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def err(self, key: str, msg: str) -> DefinitionError:
        return DefinitionError(msg, file=self.file, field=self._f(key))

    def get(self, key: str, typ: type | tuple, *, required: bool = False, default: Any = None,
            what: str | None = None) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.err(key, f"required field is missing (expected {what or _tname(typ)})")
            return default
        value = self.data[key]
        # bool is an int in Python; a YAML "yes" must not pass as a number.
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            raise self.err(key, f"expected {what or _tname(typ)}, got {_tname(type(value))} {_short(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > YAML_MAX_INT:
            raise self.err(key, "number out of range (at most 64 bits)")
        return value

    def string(self, key: str, pattern: re.Pattern | None = None, *, required=False, default=None,
               what: str | None = None) -> str | None:
        value = self.get(key, str, required=required, default=default, what=what or "a string")
        if value is not None and pattern is not None and not pattern.match(value):
            raise self.err(key, f"{_short(value)} is not {what or 'valid'} (pattern {pattern.pattern})")
        return value

    def str_list(self, key: str, pattern: re.Pattern | None = None, what: str = "a string") -> list[str]:
        items = self.get(key, list, default=[], what=f"a list of {what}s")
        for i, v in enumerate(items):
            if not isinstance(v, str) or (pattern is not None and not pattern.match(v)):
                raise self.err(f"{key}[{i}]", f"expected {what}, got {_short(v)}")
        return items

    def env(self, key: str) -> tuple[tuple[str, str], ...]:
        env = self.get(key, dict, default={}, what="a mapping of NAME: value")
        out = []
        for k, v in env.items():
            if not isinstance(k, str) or not ENV_KEY_RE.match(k):
                raise self.err(f"{key}.{k}", "expected a variable name ([A-Za-z_][A-Za-z0-9_]*)")
            if k in RESERVED_ENV:
                raise self.err(f"{key}.{k}", "is set by quorum for every build and cannot be overridden")
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise self.err(f"{key}.{k}", f"expected a string, got {_tname(type(v))}")
            v = str(v)
            # A newline or NUL in a value could end the `export` line of the
            # build prelude and start a command of its own.
            if any(ord(c) < 32 and c != "\t" for c in v):
                raise self.err(f"{key}.{k}", "control characters (newline, NUL…) are not allowed")
            out.append((k, v))
        return tuple(sorted(out))

    def finish(self) -> None:
        unknown = sorted(set(map(str, self.data)) - self.used)
        if unknown:
            raise self.err(unknown[0], "unknown field" + _suggest(unknown[0], self.used))


def _short(value: Any) -> str:
    """A value for an error message, bounded before it is formatted (the
    repr of a huge value would cost what the limits exist to prevent)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        r = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "(a very large number)"
    else:
        r = f"({_tname(type(value))} of {len(value)})" if hasattr(value, "__len__") else type(value).__name__
    return r[:60] + ("…" if len(r) > 60 else "")


def _tname(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_tname(x) for x in t)
    return {str: "a string", int: "an integer", list: "a list", dict: "a mapping",
            bool: "true/false", type(None): "nothing"}.get(t, getattr(t, "__name__", str(t)))


def _suggest(name: str, known: set[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"


_PLACEHOLDER = re.compile(r"\{(name|version)\}")


def expand(template: str, name: str, version: str) -> str:
    """Replace {name} and {version}, and nothing else.  str.format would also
    evaluate {version.__class__...}: a definition must not be able to reach
    Python attributes through a URL."""
    return _PLACEHOLDER.sub(lambda m: name if m.group(1) == "name" else version, template)


# --- quorum.yaml -----------------------------------------------------------

def load_config(root: Path) -> TreeConfig:
    root = root.resolve()
    path = root / CONFIG_FILE
    if not path.exists():
        raise DefinitionError(f"not a quorum tree: no {CONFIG_FILE} (give --tree DIR)", file=path)
    f = _Fields(load_yaml(path), path)
    name = f.string("name", NAME_RE, required=True, what="a tree name")
    namespace = f.string("namespace", re.compile(r"^[a-z0-9][a-z0-9._/-]{0,127}\Z"), default=name,
                         what="an image namespace")
    try:
        imageref.check_namespace(namespace)
    except imageref.ImageRefError as e:
        raise f.err("namespace", e.message) from None
    sde = f.get("source_date_epoch", int, default=1, what="an integer (seconds since 1970)")
    if not 0 <= sde <= MAX_EPOCH:
        # Past 9999-12-31 no tar, OCI config or ISO date can express it.
        raise f.err("source_date_epoch", f"must be between 0 and {MAX_EPOCH} (9999-12-31)")
    defaults = _Fields(f.get("defaults", dict, default={}), path, "defaults")
    seed = defaults.string("seed", NAME_RE, what="a seed name")
    defaults.finish()
    gates = []
    env_gates = []
    for gname, gdef in sorted(f.get("gates", dict, default={},
                                    what="a mapping of gate name: {identical: [...]} or {environment: ...}").items()):
        if not isinstance(gname, str) or not NAME_RE.match(gname):
            raise f.err(f"gates.{gname}", "expected a gate name")
        g = _Fields(gdef, path, f"gates.{gname}")
        if "environment" in g.data:
            env_gates.append(_load_environment_gate(g, gname))
            continue
        members = g.str_list("identical", NAME_RE, "a package name")
        if len(set(members)) < 2:
            raise g.err("identical", "a gate compares at least two different packages")
        g.finish()
        gates.append((gname, tuple(members)))
    engines: tuple = ()
    if f.get("engines", list, what="a list of engines") is not None:
        from .endpoints import engines_from_yaml   # endpoints uses this module's field reader
        engines = engines_from_yaml(f.data["engines"], path, root)
    f.finish()
    return TreeConfig(name=name, namespace=namespace, source_date_epoch=sde,
                      default_seed=seed, path=root, gates=tuple(gates), engines=engines,
                      environment_gates=tuple(env_gates))


def _load_environment_gate(g: "_Fields", gname: str) -> EnvironmentGate:
    """``gates.<name>: {environment: E, exempt: {package: reason}}``
    (docs/spec/environment.md)."""
    if "identical" in g.data:
        raise g.err("identical", "a gate is either 'identical: [...]' or 'environment: NAME', not both")
    env = g.string("environment", NAME_RE, required=True, what="an environment name") or ""
    exempt = []
    for k, v in g.get("exempt", dict, default={}, what="a mapping of package: reason").items():
        if not isinstance(k, str) or not NAME_RE.match(k):
            raise g.err(f"exempt.{k}", "expected a package name")
        # "Fix the package, not the gate": an exemption is a claim someone
        # must be able to check, so it carries its reason.
        if not isinstance(v, str) or len(v.strip()) < 10:
            raise g.err(f"exempt.{k}", "give the reason this package's twin cannot be identical "
                                       "(at least a sentence)")
        exempt.append((k, v))
    g.finish()
    return EnvironmentGate(name=gname, environment=env, exempt=tuple(sorted(exempt)))


# --- seeds -----------------------------------------------------------------

MAX_EPOCH = 253402300799

ABS_PATH_RE = re.compile(r"^/[A-Za-z0-9._+@/-]*\Z")


def load_seed(path: Path) -> Seed:
    f = _Fields(load_yaml(path), path)
    name = f.string("name", NAME_RE, required=True, what="a seed name")
    if name != path.stem:
        raise f.err("name", f"must match the file name ({path.stem!r})")
    debs = []
    for i, d in enumerate(f.get("packages", list, default=[])):
        g = _Fields(d, path, f"packages[{i}]")
        debs.append(SeedDeb(
            name=g.string("name", re.compile(r"^[a-z0-9][a-z0-9.+-]*\Z"), required=True, what="a Debian package name"),
            version=g.string("version", re.compile(r"^[A-Za-z0-9.+~:-]+\Z"), required=True, what="a Debian version"),
            arch=g.string("arch", re.compile(r"^[a-z0-9-]+\Z"), default="amd64", what="an architecture"),
            sha256=g.string("sha256", SHA256_RE, required=True, what="a sha256 (64 lower-case hex digits)"),
            size=g.get("size", int),
            filename=g.string("filename", re.compile(r"^pool/[A-Za-z0-9._+~%/-]+\.deb\Z"), what="a pool/ path"),
        ))
        g.finish()
    seed = Seed(
        name=name, definition_file=path,
        description=f.string("description", default=""),
        arch=f.string("arch", re.compile(r"^[a-z0-9-]+\Z"), default="amd64"),
        request=tuple(f.str_list("request", re.compile(r"^[a-z0-9][a-z0-9.+-]*(=[A-Za-z0-9.+~:-]+)?\Z"),
                                 "a Debian package name")),
        debs=tuple(sorted(debs, key=lambda d: (d.name, d.arch))),
        symlinks=_symlinks(f),
        env=f.env("env") if "env" in f.data else (),
        exclude=tuple(f.str_list("exclude", what="a path glob")),
        omit=tuple(sorted(f.str_list("omit", re.compile(r"^[a-z0-9][a-z0-9.+-]*\Z"), "a Debian package name"))),
    )
    f.finish()
    requested = {r.split("=", 1)[0] for r in seed.request}
    for i, o in enumerate(f.data.get("omit") or []):
        if o in requested:
            raise DefinitionError(f"{o!r} is requested and omitted at once", file=path, field=f"omit[{i}]")
    names = [d.name for d in seed.debs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise DefinitionError(f"package {dup!r} is pinned twice", file=path, field="packages")
    return seed


# --- environments ----------------------------------------------------------

def load_environment(path: Path) -> Environment:
    """environments/<name>.yaml (docs/spec/environment.md).  References
    (members that exist, cycles) are checked once the whole tree is loaded."""
    f = _Fields(load_yaml(path), path)
    name = f.string("name", NAME_RE, required=True, what="an environment name") or ""
    if name != path.stem:
        raise f.err("name", f"must match the file name ({path.stem!r})")
    members = f.str_list("members", NAME_RE, "a package name")
    if not members:
        raise f.err("members", "required: the packages or bootstrap stages the environment is made of")
    seen: dict[str, int] = {}
    for i, m in enumerate(members):
        if m in seen:
            raise f.err(f"members[{i}]", f"{m!r} is listed twice (also members[{seen[m]}])")
        if m == name:
            raise f.err(f"members[{i}]", "an environment cannot be a member of itself")
        seen[m] = i
    env = Environment(name=name, definition_file=path, members=tuple(members),
                      description=f.string("description", default="") or "",
                      symlinks=_symlinks(f))
    f.finish()
    return env


def _symlinks(f: "_Fields") -> tuple[tuple[str, str], ...]:
    """A seed's or environment's ``symlinks``: absolute paths without '..'
    (the path is made inside the image; a '..' could name a path outside
    it on a careless extractor) to a target on one line."""
    symlinks = []
    for k, v in f.get("symlinks", dict, default={}, what="a mapping of /path: target").items():
        if not isinstance(k, str) or not ABS_PATH_RE.match(k) or ".." in k.split("/") or not k.strip("/"):
            raise f.err(f"symlinks.{k}", "expected an absolute path without '..'")
        if not isinstance(v, str) or not v or "\n" in v or "\x00" in v:
            raise f.err(f"symlinks.{k}", "expected a link target")
        symlinks.append((k, v))
    return tuple(sorted(symlinks))


def _load_environments(config: TreeConfig, taken: dict[str, Path]) -> dict[str, Environment]:
    envs: dict[str, Environment] = {}
    d = config.path / ENVIRONMENTS_DIR
    if d.is_symlink() or (d.exists() and not within(config.path, d)):
        raise DefinitionError("must be a folder of the tree, not a symlink to elsewhere", file=d)
    if not d.exists():
        return envs
    if not d.is_dir():
        raise DefinitionError("expected a folder", file=d)
    for p in sorted(d.glob("*.yaml")):
        env = load_environment(p)
        if env.name in taken:
            raise DefinitionError(f"{env.name!r} is already the name of a seed or package ({taken[env.name]})",
                                  file=p, field="name")
        envs[env.name] = env
    return envs


def _check_environments(config: TreeConfig, seeds: dict[str, Seed], packages: dict[str, Package],
                        envs: dict[str, Environment]) -> dict[str, Twin]:
    """Members exist and are artifacts of the tree; the gates name an
    environment; and every gate's twins, derived from the packages."""
    for env in envs.values():
        for i, m in enumerate(env.members):
            if m in seeds:
                why = "a seed: its Debian files are what an environment exists to replace"
            elif m in envs:
                why = "an environment: list its members instead"
            elif m not in packages:
                why = "not a package or bootstrap stage of this tree" + known(packages)
            else:
                continue
            raise DefinitionError(f"member {m!r} is {why}", file=env.definition_file, field=f"members[{i}]")
    twins: dict[str, Twin] = {}
    cfg = config.path / CONFIG_FILE
    for gate in config.environment_gates:
        if gate.environment not in envs:
            hint = " (it is a seed: a gate's environment must be made of tree artifacts)" \
                if gate.environment in seeds else known(envs)
            raise DefinitionError(f"environment {gate.environment!r} does not exist in {ENVIRONMENTS_DIR}/{hint}",
                                  file=cfg, field=f"gates.{gate.name}.environment")
        members = gate_members(config, seeds, packages)
        for pkg, _ in gate.exempt:
            if pkg not in members:
                raise DefinitionError(f"{pkg!r} is not a member of the gate (a package of packages/ built in a "
                                      "seed)", file=cfg, field=f"gates.{gate.name}.exempt.{pkg}")
        for m in members:
            t = Twin(name=twin_name(m, gate.environment), package=packages[m], environment=gate.environment,
                     gate=gate.name)
            if t.name in twins:
                raise DefinitionError(f"two gates build {m!r} in {gate.environment!r}", file=cfg,
                                      field=f"gates.{gate.name}.environment")
            twins[t.name] = t
    return twins


def gate_members(config: TreeConfig, seeds: dict[str, Seed], packages: dict[str, Package]) -> list[str]:
    """An environment gate's members: the packages of packages/ (not the
    bootstrap, which is built in the seeds by design) built in a seed."""
    return sorted(n for n, p in packages.items()
                  if p.kind == "package" and (p.seed or config.default_seed) in seeds)


# --- packages --------------------------------------------------------------

def load_package(pkg_dir: Path, kind: str = "package", cache: "ParseCache | None" = None,
                 scan: "_Scan | None" = None) -> Package:
    path = pkg_dir / PACKAGE_FILE
    scan = scan or _scan_package(pkg_dir)
    f = _Fields(cache.load(path) if cache is not None else load_yaml(path), path)
    name = f.string("name", NAME_RE, required=True, what="a package name")
    if name != pkg_dir.name:
        raise f.err("name", f"must match the folder name ({pkg_dir.name!r})")
    version = f.string("version", VERSION_RE, required=True, what="a version")
    sources = []
    for i, s in enumerate(f.get("sources", list, default=[])):
        sources.append(_load_source(s, path, f"sources[{i}]", name, version))
    files_seen: dict[str, str] = {}
    for i, s in enumerate(sources):
        if s.file in files_seen:
            raise DefinitionError(f"file name {s.file!r} is used twice", file=path, field=f"sources[{i}].file")
        files_seen[s.file] = f"sources[{i}]"
    deps = f.str_list("deps", NAME_RE, "a package name")
    if len(set(deps)) != len(deps):
        raise f.err("deps", "lists a package twice")
    if name in deps:
        raise f.err("deps", "a package cannot depend on itself")
    build = f.string("build")
    test = f.string("test")
    containerfile = pkg_dir / CONTAINERFILE
    has_cf = CONTAINERFILE in scan.top
    if build is None and not has_cf:
        raise f.err("build", f"required: a build script, or a {CONTAINERFILE} beside {PACKAGE_FILE}")
    if build is not None and has_cf:
        raise f.err("build", f"give either a build script or a {CONTAINERFILE}, not both")
    pkg_files = scan.files
    for rel in pkg_files:
        # A folder named like a source ("x.tar.gz/evil") would land on the
        # verified source's path in the build folder.
        top_name = rel.split("/", 1)[0]
        if top_name in files_seen:
            raise DefinitionError(f"{'file' if top_name == rel else 'folder'} {top_name!r} beside the definition "
                                  "has the same name as a source", file=path, field=files_seen[top_name])
    cf_text = None
    if has_cf:
        raw = read_regular(containerfile, limit=DEFINITION_LIMIT, single_link=True, error=DefinitionError,
                           what="Containerfile")
        try:
            cf_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DefinitionError("not UTF-8 text", file=containerfile) from None
    same_as_seed = []
    if f.data.get("audit") is not None:
        a = _Fields(f.get("audit", dict), path, "audit")
        for k, v in a.get("same-as-seed", dict, default={}, what="a mapping of path: reason").items():
            if not isinstance(k, str) or k.startswith("/") or ".." in k.split("/") or not k:
                raise a.err(f"same-as-seed.{k}", "expected a path inside the artifact (relative, no '..')")
            if not isinstance(v, str) or len(v.strip()) < 10:
                raise a.err(f"same-as-seed.{k}", "give the reason this file may equal a seed file")
            same_as_seed.append((k, v))
        a.finish()
    else:
        f.used.add("audit")
    needs_root = f.string("needs-root")
    if needs_root is not None and len(needs_root.strip()) < 10:
        raise f.err("needs-root", "give the reason the build must run as root (what it writes outside "
                                  "the build folder and $DESTDIR)")
    pkg = Package(
        name=name, version=version, dir=pkg_dir, definition_file=path, kind=kind, needs_root=needs_root,
        same_as_seed=tuple(sorted(same_as_seed)),
        description=f.string("description", default=""),
        seed=f.string("seed", NAME_RE, what="a seed name"),
        deps=tuple(deps), sources=tuple(sources), env=f.env("env"),
        build=build, containerfile=containerfile if has_cf else None, containerfile_text=cf_text, test=test,
        files=tuple(pkg_files), raw=f.data,
    )
    f.finish()
    if cf_text is not None:
        from .render import check_package_template   # jinja2 only for trees that need it
        check_package_template(pkg)
    return pkg


def _load_source(data: Any, path: Path, prefix: str, name: str, version: str) -> Source:
    g = _Fields(data, path, prefix)
    sha = g.string("sha256", SHA256_RE, required=True, what="a sha256 (64 lower-case hex digits)")
    urls = []
    g.used.update(("url", "debian"))   # a null is the same as absent
    if g.data.get("url") is not None:
        urls.append(g.string("url"))
    urls += g.str_list("urls", what="a URL")
    for i, u in enumerate(urls):
        u = expand(u, name, version)
        if not re.match(r"^(https?|file)://[^\s]+\Z", u):
            raise g.err("url" if i == 0 and g.data.get("url") is not None else "urls",
                        f"{u!r:.80} is not an http(s):// or file:// URL")
        urls[i] = u
    deb = None
    if g.data.get("debian") is not None:
        d = _Fields(g.get("debian", dict), path, f"{prefix}.debian")
        deb = DebianOrigin(
            package=d.string("package", re.compile(r"^[a-z0-9][a-z0-9.+-]*\Z"), required=True,
                             what="a Debian source package name"),
            version=d.string("version", re.compile(r"^[A-Za-z0-9.+~:-]+\Z"), what="a Debian version"))
        d.finish()
    if not urls and deb is None:
        raise g.err("url", "a source needs at least one URL or a debian: origin")
    file = g.string("file", what="a file name")
    if file is None:
        if not urls:
            raise g.err("file", "required when there is no URL to take the name from")
        file = urls[0].rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    else:
        file = expand(file, name, version)
    if not FILE_RE.match(file):
        # The name becomes a path in the build folder: no separators, no "..",
        # nothing hidden.
        raise g.err("file", f"{file!r:.80} is not a plain file name")
    g.finish()
    return Source(sha256=sha, urls=tuple(urls), file=file, debian=deb)


@dataclass
class _Scan:
    files: list[str]      # files that go into the build folder, relative, sorted
    top: set[str]         # regular files directly in the folder


def _scan_package(pkg_dir: Path) -> _Scan:
    """Every file beside the definition that goes into the build folder, in
    one walk (os.scandir: entries know their type without a stat each, which
    matters on a tree of thousands of packages).  Symlinks and special files
    are refused: a symlink in a package folder could make quorum read (and
    ship into a build) any file on the maintainer's machine."""
    out: list[str] = []
    top: set[str] = set()
    stack = [(pkg_dir, "")]
    while stack:
        d, prefix = stack.pop()
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            rel = prefix + e.name
            p = Path(e.path)
            if e.is_symlink():
                raise DefinitionError("symlinks are not allowed in a package folder", file=p)
            if e.is_dir(follow_symlinks=False):
                if not prefix and e.name in (PACKAGE_FILE, CONTAINERFILE):
                    raise DefinitionError("expected a regular file, found a directory", file=p)
                stack.append((p, rel + "/"))
                continue
            if not e.is_file(follow_symlinks=False):
                raise DefinitionError("only regular files are allowed in a package folder", file=p)
            if e.stat(follow_symlinks=False).st_nlink > 1:
                # A hard link has another file's bytes under this name: a
                # link to /etc/shadow would ship the secret into a build.
                raise DefinitionError("hard-linked file in a package folder; copy it instead", file=p)
            if not prefix:
                top.add(e.name)
            if rel in (PACKAGE_FILE, CONTAINERFILE):
                continue
            if any(not FILE_RE.match(part) for part in rel.split("/")):
                raise DefinitionError("file names in a package folder must be plain "
                                      "(letters, digits, . _ + ~ -; not starting with a dot)", file=p)
            out.append(rel)
    return _Scan(files=sorted(out), top=top)


class ParseCache:
    """Parsed package.yaml files, keyed by what the file system says about
    them (path, size, inode, mtime and ctime in nanoseconds: ctime cannot be
    set back by a user, so an edit always misses), so that loading a tree of
    thousands of packages does not parse thousands of unchanged YAML files.
    Only the parse is cached: validation runs on every load.  JSON, not
    pickle, so a planted cache file can at worst lie about a definition's
    contents — which whoever can write out/ could do to the tree anyway."""

    FORMAT = 1

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            doc = load_json(path, limit=JSON_LIMIT)
            if isinstance(doc, dict) and doc.get("format") == self.FORMAT and isinstance(doc.get("entries"), dict):
                self.entries = doc["entries"]
        except QuorumError:
            pass   # no cache, or an unusable one: parse everything

    @staticmethod
    def _key(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns]

    def load(self, path: Path) -> Any:
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise DefinitionError("file not found", file=path) from None
        hit = self.entries.get(str(path))
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == self._key(st):
            return hit[1]
        data = load_yaml(path)
        # Only what survives a JSON round trip unchanged is cached (YAML can
        # also make dates, sets, bytes: those files are parsed every time).
        try:
            if json.loads(json.dumps(data)) == data:
                self.entries[str(path)] = [self._key(st), data]
                self.dirty = True
        except (TypeError, ValueError):
            pass
        return data

    def save(self) -> None:
        if not self.dirty or not self.path.parent.parent.is_dir():
            return   # no out/ yet: nothing is created just for a cache
        from .canon import atomic_write
        try:
            atomic_write(self.path, json.dumps({"format": self.FORMAT, "entries": self.entries},
                                               separators=(",", ":")).encode())
        except OSError:
            pass   # a read-only checkout still loads, only slower


def load_tree(root: str | os.PathLike) -> Tree:
    """Load and validate everything; cross-references (deps, seeds) are
    checked in ``graph``, which can say which edge is wrong."""
    config = load_config(Path(root))
    cache = ParseCache(config.path / "out" / ".quorum" / "parsed.json")
    seeds: dict[str, Seed] = {}
    seeds_dir = config.path / "bootstrap" / "seeds"
    if seeds_dir.is_symlink() or (seeds_dir.exists() and not within(config.path, seeds_dir)):
        raise DefinitionError("must be a folder of the tree, not a symlink to elsewhere", file=seeds_dir)
    if seeds_dir.is_dir():
        for p in sorted(seeds_dir.glob("*.yaml")):
            s = load_seed(p)
            seeds[s.name] = s
    packages: dict[str, Package] = {}
    for kind, sub in (("bootstrap", config.path / "bootstrap"), ("package", config.path / "packages")):
        if sub.is_symlink() or (sub.exists() and not within(config.path, sub)):
            # Its files would go into build contexts from wherever it points.
            raise DefinitionError("must be a folder of the tree, not a symlink to elsewhere", file=sub)
        if not sub.is_dir():
            if sub.exists():
                raise DefinitionError("expected a folder", file=sub)
            continue
        with os.scandir(sub) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name == "seeds" and kind == "bootstrap":
                continue
            if e.is_symlink():
                # A linked package folder could pull in files from anywhere
                # on the machine (see _scan_package).
                raise DefinitionError("symlinks are not allowed among package folders", file=e.path)
            if not e.is_dir(follow_symlinks=False):
                continue
            scan = _scan_package(Path(e.path))
            if PACKAGE_FILE not in scan.top:
                continue   # not a package folder (notes, a work area…)
            pkg = load_package(Path(e.path), kind, cache, scan=scan)
            if pkg.name in packages:
                raise DefinitionError(f"package {pkg.name!r} is defined twice (also in "
                                      f"{packages[pkg.name].definition_file})", file=pkg.definition_file, field="name")
            if pkg.name in seeds:
                raise DefinitionError(f"{pkg.name!r} is already the name of a seed", file=pkg.definition_file,
                                      field="name")
            packages[pkg.name] = pkg
    cache.save()
    envs = _load_environments(config, {**{n: s.definition_file for n, s in seeds.items()},
                                       **{n: p.definition_file for n, p in packages.items()}})
    twins = _check_environments(config, seeds, packages, envs)
    # Two nodes whose names map to one image name (a+b, a-plus-b; a twin
    # sed@e and a package sed_e) would share a tag and a signed
    # docker-reference.
    image_names: dict[str, str] = {}
    named: list[tuple[str, Path]] = [(s.name, s.definition_file) for s in seeds.values()]
    named += [(p.name, p.definition_file) for p in packages.values()]
    named += [(e.name, e.definition_file) for e in envs.values()]
    named += [(t.name, config.path / CONFIG_FILE) for t in twins.values()]
    for node_name, file in named:
        other = image_names.setdefault(imageref.component_for(node_name), node_name)
        if other != node_name:
            raise DefinitionError(f"{node_name!r} and {other!r} would share the image name "
                                  f"{config.namespace}/{imageref.component_for(node_name)}; rename one",
                                  file=file, field="name")
    for gname, members in config.gates:
        for i, m in enumerate(members):
            if m not in packages:
                raise DefinitionError(f"gate member {m!r} is not a package of this tree",
                                      file=config.path / CONFIG_FILE, field=f"gates.{gname}.identical[{i}]")
    return Tree(config=config, seeds=seeds, packages=packages, environments=envs, twins=twins)
