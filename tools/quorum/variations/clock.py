"""clock: the wall clock reads years later than the build's.

A container reads the host kernel's clock and cannot set it (Linux time
namespaces shift the monotonic and boot clocks, never CLOCK_REALTIME), and
a rebuild that merely runs minutes after the build rarely changes the date
and never the year.  So the rebuild preloads quorum's shim (shim.py,
shims/vary.c) into its dynamically linked programs, and their time(),
gettimeofday(), clock_gettime(CLOCK_REALTIME) and timespec_get() read
OFFSET seconds later: another year, month, day and time of day, so `date
+%Y`, `date +%F` and `__DATE__`-style stamps all move.  Forward, never back:
files the build makes then look old rather than from the future, which
make and tar would warn about.

SOURCE_DATE_EPOCH stays fixed in every build either way; times the kernel
stamps on files are not moved (the normaliser clamps them anyway), and
statically linked programs read the real clock (the report names the
packages this missed).
"""
from . import Context, Plan, request_preload, variation

# 3 years, 47 days, 5 h 13 min 7 s: every field of a date changes.
OFFSET = ((3 * 365 + 47) * 24 + 5) * 3600 + 13 * 60 + 7


@variation("clock")
def apply(plan: Plan, ctx: Context) -> str:
    return request_preload(plan, ctx, {"QUORUM_VARY_CLOCK_OFFSET": str(OFFSET)},
                   f"the wall clock reads {OFFSET} s (3 years, 47 days, 5 h 13 min 7 s) later")
