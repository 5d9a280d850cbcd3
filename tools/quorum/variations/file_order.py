"""file_order: every folder lists its entries in the reverse of the order
the engine's storage gives.

A package whose bytes follow `ls -f`, `find`, `tar -c` of a folder, or any
other readdir() walk without sorting then differs.  Why a preload and not a
filesystem: re-creating the build folder's files in another order changes
nothing on the engine's storage (overlay on ext4 lists by name hash,
fuse-overlayfs likewise, whatever the creation order), and the only tmpfs a
classic-builder step gets, /dev/shm, is mounted noexec, so no build can run
there.  The shim (shim.py, shims/vary.c) reverses what readdir() returns in
every dynamically linked program of the rebuild; statically linked programs
read the storage's order, and the report names the packages it missed.
"""
from . import Context, Plan, request_preload, variation


@variation("file_order")
def apply(plan: Plan, ctx: Context) -> str:
    return request_preload(plan, ctx, {"QUORUM_VARY_READDIR": "reverse"}, "folders list their entries in reverse")

