"""user: the build runs as an unprivileged uid/gid instead of root.

The rendered Containerfile copies the build folder in owned by that user,
hands it an empty /rootfs and switches with USER; the artifact is copied out
owned by root (as the build as root leaves it), so only what the build
*writes* can differ: `id -u`, `whoami`, a path under $HOME, a mode that
depends on who created the file.  A package whose build must be root (it
installs into the build environment itself, outside the build folder and
$DESTDIR) says so with `needs-root:` and builds as root; so does one with
its own Containerfile, which quorum does not rewrite.
"""
from . import Context, NotApplied, Plan, variation

REBUILD_USER = "4242:4242"


@variation("user")
def apply(plan: Plan, ctx: Context) -> str:
    pkgs = [ctx.tree.packages[n] for n in sorted(ctx.targets) if n in ctx.tree.packages]
    exempt = [p.name for p in pkgs if p.needs_root or p.containerfile is not None]
    if len(exempt) == len(pkgs):
        raise NotApplied("every package rebuilt must build as root (needs-root or its own Containerfile)"
                         if pkgs else "no package is rebuilt (seeds are not built by a user)")
    plan.set(build_user=REBUILD_USER)
    how = f"root -> uid:gid {REBUILD_USER}"
    if exempt:
        how += f" (except {', '.join(exempt)}, built as root: needs-root or own Containerfile)"
    return how
