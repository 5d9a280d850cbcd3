"""timezone: a POSIX zone with an odd offset, so dates printed in local time
move by hours and minutes (and often to another day)."""
from . import Context, Plan, variation

REBUILD_TZ = "QRB-13:45"


@variation("timezone")
def apply(plan: Plan, ctx: Context) -> str:
    plan.set(tz=REBUILD_TZ)
    return f"TZ=UTC -> TZ={REBUILD_TZ} (a POSIX zone with an odd offset)"
