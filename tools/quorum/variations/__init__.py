"""Variations of a rebuild, in reprotest's vocabulary: a registry plus one
module per kind.

A variation changes the conditions of ``quorum reproduce``'s rebuild (never
the input hash: it is a perturbation that must not matter).  Each module
registers itself with ``@variation(name)`` and gives a function that either
changes the rebuild's ``Plan`` and says how, or raises ``NotApplied`` with
the reason it cannot act here.  A variation that cannot act is never
reported as applied: a reviewer who reads "clock" must be able to trust
that the clock really moved.

Adding a kind is one module here and one line in ``_MODULES``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import QuorumError
from ..model import Tree
from ..render import Settings


class NotApplied(Exception):
    """This variation cannot act in this rebuild; the message says why."""


@dataclass
class Context:
    """What a variation may look at to decide whether it can act."""
    tree: Tree
    targets: frozenset[str]                       # the nodes to be rebuilt
    layouts: dict[str, Path] = field(default_factory=dict)   # seed name -> its OCI layout, where built
    cpu_count: int = 1


@dataclass
class Plan:
    """The rebuild's conditions, as the variations leave them."""
    settings: Settings = field(default_factory=Settings)
    cpuset: str | None = None
    # Environment for the preload shim (shim.py), which reproduce compiles
    # and puts into each rebuild's build stage when any variation asks.
    preload: dict[str, str] = field(default_factory=dict)

    def set(self, **kw) -> None:
        self.settings = replace(self.settings, **kw)


@dataclass(frozen=True)
class Variation:
    name: str
    apply: Callable[[Plan, Context], str]         # returns how it was applied, or raises NotApplied
    intrinsic: bool = False                       # acts in every rebuild; cannot be switched off


REGISTRY: dict[str, Variation] = {}


def variation(name: str, *, intrinsic: bool = False):
    def deco(fn: Callable[[Plan, Context], str]):
        REGISTRY[name] = Variation(name, fn, intrinsic)
        return fn
    return deco


def request_preload(plan: Plan, ctx: Context, env: dict[str, str], what: str) -> str:
    """Ask for quorum's preload shim (shim.py) with ``env`` for it, or raise
    NotApplied saying why it cannot reach any rebuilt package.  Returns how
    the variation acts and on what."""
    from .. import shim
    compiler = shim.compiler_seed(ctx.tree)
    if compiler is None:
        raise NotApplied("quorum's preload shim needs a seed with GCC and libc6-dev to be compiled in, "
                         "and this tree has none")
    if compiler not in ctx.layouts:
        raise NotApplied(f"the compiler seed {compiler} is not built in out/ (run 'quorum build {compiler}')")
    r = shim.reach(ctx.tree, ctx.targets, ctx.layouts)
    if not r.reached:
        why = "; ".join(f"{n}: {reason}" for n, reason in r.missed) or "no package is rebuilt"
        raise NotApplied(f"no rebuilt package runs dynamically linked programs a preload can reach ({why})")
    plan.preload.update(env)
    return f"{what} for {r.describe()}, via quorum's preload shim"


# One module per kind; importing a module registers its variations.
_MODULES = ("build_path", "file_order", "hostname", "timezone", "locale", "umask", "cpus", "environment",
            "clock", "user")
for _m in _MODULES:
    importlib.import_module(f"{__name__}.{_m}")


def names() -> list[str]:
    return sorted(REGISTRY)


def parse_vary(spec: str | None) -> set[str]:
    """reprotest's syntax: "+all,-umask", "-all,+timezone", "umask"…
    The default is every variation."""
    chosen = set(REGISTRY)
    if not spec:
        return chosen
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        sign, name = ("-", part[1:]) if part.startswith("-") else ("+", part.lstrip("+"))
        if name != "all" and name not in REGISTRY:
            raise QuorumError(f"unknown variation {name!r} (known: all, {', '.join(names())})", field="--vary")
        picked = set(REGISTRY) if name == "all" else {name}
        chosen = chosen | picked if sign == "+" else chosen - picked
    return chosen


@dataclass
class Outcome:
    plan: Plan
    applied: dict[str, str]        # variation -> how it acted
    not_applied: dict[str, str]    # variation -> why it did not


def plan(chosen: set[str], ctx: Context) -> Outcome:
    """Apply the chosen variations (and the intrinsic ones) in name order."""
    p = Plan()
    applied, not_applied = {}, {}
    for name in names():
        v = REGISTRY[name]
        if name not in chosen and not v.intrinsic:
            not_applied[name] = "switched off with --vary"
            continue
        try:
            applied[name] = v.apply(p, ctx)
        except NotApplied as e:
            not_applied[name] = str(e)
    return Outcome(plan=p, applied=applied, not_applied=not_applied)
