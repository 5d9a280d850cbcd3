"""file_order: the build folder on a filesystem that lists a folder's
entries in another order.

Not available on this kind of engine.  What was tried and why it cannot act:
- re-creating the build folder's files in another order changes nothing:
  the engine's storage (fuse-overlayfs here, overlay on ext4's hashed
  folders elsewhere) does not list entries in creation order;
- a tmpfs lists them newest first, but the only tmpfs a classic-builder step
  gets is /dev/shm, mounted noexec: ./configure and every test program a
  build runs from its folder fail there (and /dev is capped at 64 MiB).
It would act with BuildKit (`RUN --mount=type=tmpfs`) or with the rebuild on
a second engine whose storage is a tmpfs; until then it says so, because a
reviewer must not read "file order varied" when it did not.
"""
from . import Context, NotApplied, Plan, variation

REASON = ("the engine's storage lists folders sorted, whatever order files are made in, and the only tmpfs a "
          "build step gets (/dev/shm) is mounted noexec, so a build cannot run there")


@variation("file_order")
def apply(plan: Plan, ctx: Context) -> str:
    raise NotApplied(REASON)
