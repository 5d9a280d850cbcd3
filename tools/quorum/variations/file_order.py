"""file_order: the build runs on a filesystem that lists folders in another
order.

The engine's storage (overlay) lists a folder's entries sorted by name; a
tmpfs lists them newest first.  The rebuild copies its build folder onto
the container's /dev/shm (a tmpfs the engine mounts in every build step) and
builds there, so `find`, `ls -U`, readdir() and every tool that archives or
links "the files in this folder" see them in another order.  The path the
build sees changes with it (/dev/shm/...): a build that embeds its path is
caught by build_path as well.
"""
from . import Context, Plan, variation


@variation("file_order")
def apply(plan: Plan, ctx: Context) -> str:
    plan.set(on_tmpfs=True)
    return ("the build runs in a copy of its build folder on a tmpfs (/dev/shm), which lists entries newest "
            "first instead of sorted by name")
