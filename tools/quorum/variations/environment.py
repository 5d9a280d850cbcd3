"""environment: an extra variable the build has no reason to read."""
from . import Context, Plan, variation

EXTRA = (("QUORUM_REPRODUCE_EXTRA", "1"),)


@variation("environment")
def apply(plan: Plan, ctx: Context) -> str:
    plan.set(extra_env=EXTRA)
    return "an extra variable " + ", ".join(f"{k}={v}" for k, v in EXTRA) + " in the build"
