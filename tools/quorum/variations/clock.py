"""clock: a wall clock years away from the build's.

Not available on this engine: a container reads the host kernel's clock and
cannot set it (Linux time namespaces shift the monotonic and boot clocks,
never CLOCK_REALTIME), and no seed carries a clock-faking library such as
libfaketime.  A rebuild runs minutes after the build, which rarely changes
the date and never the year, so calling that "clock varied" would let a
package that writes `date +%Y` pass as reproducible.  SOURCE_DATE_EPOCH is
fixed in every build either way.
"""
from . import Context, NotApplied, Plan, variation

REASON = ("containers read the host kernel's clock and cannot set it (time namespaces leave the wall "
          "clock alone) and no seed has a clock-faking library; the rebuild only runs minutes later")


@variation("clock")
def apply(plan: Plan, ctx: Context) -> str:
    raise NotApplied(REASON)
