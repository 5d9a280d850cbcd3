"""umask: 022 -> 002, so a file whose mode follows the umask is group
writable in the rebuild.  (The prelude normalises folders of the artifact,
not files: see templates/build.sh.j2.)"""
from . import Context, Plan, variation

REBUILD_UMASK = "002"


@variation("umask")
def apply(plan: Plan, ctx: Context) -> str:
    plan.set(umask=REBUILD_UMASK)
    return f"umask 022 -> {REBUILD_UMASK}"
