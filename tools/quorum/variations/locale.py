"""locale: LC_ALL/LANG=C -> a UTF-8 locale, when the build environment has
one.

glibc falls back to the C locale, silently, when the data of the locale
asked for is missing; setting LC_ALL=fr_CH.UTF-8 in a seed without locale
data changes nothing.  So the rebuild uses a locale only when every seed it
builds in ships that locale's data, and says "not applied" otherwise.
"""
from __future__ import annotations

import tarfile

from .. import oci
from . import Context, NotApplied, Plan, variation

# (locale name, the folder of its compiled data), most different from C first
CANDIDATES = (("fr_CH.UTF-8", "usr/lib/locale/fr_CH.utf8"), ("C.UTF-8", "usr/lib/locale/C.utf8"))


def _locale_dirs(layout) -> set[str]:
    """Folders under usr/lib/locale/ holding compiled locale data (LC_CTYPE)."""
    layer = oci.read_layout(layout)["layer_path"]
    found = set()
    with tarfile.open(layer, "r:") as tf:
        for m in tf:
            name = m.name.lstrip("./")
            if name.startswith("usr/lib/locale/") and name.endswith("/LC_CTYPE"):
                found.add(name.rsplit("/", 1)[0])
    return found


def seeds_used(ctx: Context) -> set[str]:
    tree = ctx.tree
    out: set[str] = set()
    for n in ctx.targets:
        pkg = tree.packages.get(n)
        base = tree.base_of(pkg) if pkg is not None else None
        if base:
            out.add(base)
    return out


@variation("locale")
def apply(plan: Plan, ctx: Context) -> str:
    seeds = sorted(seeds_used(ctx))
    if not seeds:
        raise NotApplied("no package built in a seed is rebuilt")
    have: dict[str, set[str]] = {}
    for s in seeds:
        layout = ctx.layouts.get(s)
        if layout is None:
            raise NotApplied(f"seed {s} is not built in out/, so its locale data cannot be checked")
        have[s] = _locale_dirs(layout)
    for name, folder in CANDIDATES:
        if all(folder in dirs for dirs in have.values()):
            plan.set(locale=name)
            return f"LC_ALL/LANG=C -> {name} (its data is in seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
    lacking = [s for s in seeds if not have[s]]
    raise NotApplied(f"seed{'s' if len(lacking) > 1 else ''} {', '.join(lacking or seeds)} ha"
                     f"{'ve' if len(lacking) > 1 else 's'} no locale data (usr/lib/locale/*/LC_CTYPE), "
                     "and glibc would silently stay in C")
