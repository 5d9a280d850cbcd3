"""build_path: the build folder moves deeper, so an embedded path shows."""
from ..render import BUILD_DIR
from . import Context, Plan, variation

REBUILD_DIR = BUILD_DIR + "/quorum-reproduce/deeper/path"


@variation("build_path")
def apply(plan: Plan, ctx: Context) -> str:
    plan.set(build_dir=REBUILD_DIR)
    return f"build folder {BUILD_DIR} -> {REBUILD_DIR}"
