"""cpus: one CPU instead of all, so nproc and `make -j$QUORUM_JOBS` change."""
from . import Context, NotApplied, Plan, variation


@variation("cpus")
def apply(plan: Plan, ctx: Context) -> str:
    if ctx.cpu_count <= 1:
        raise NotApplied("this machine has one CPU")
    plan.cpuset = "0"
    return f"all {ctx.cpu_count} CPUs -> one CPU (cpuset 0), so nproc and make -j change"
