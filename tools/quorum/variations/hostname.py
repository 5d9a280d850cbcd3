"""hostname, domain: the engine gives every build container a fresh random
host name, so these vary in every rebuild and cannot be switched off."""
from . import Context, Plan, variation


@variation("hostname", intrinsic=True)
def hostname(plan: Plan, ctx: Context) -> str:
    return "every build container gets a fresh random host name from the engine"


@variation("domain", intrinsic=True)
def domain(plan: Plan, ctx: Context) -> str:
    return "every build container gets a fresh random domain name from the engine"
