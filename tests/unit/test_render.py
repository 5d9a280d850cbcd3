"""Nothing from a definition reaches a Containerfile instruction or a shell
command unquoted."""
from __future__ import annotations

import subprocess

from quorum.model import Package
from quorum.render import DepRef, render


def pkg(tmp_path, **kw) -> Package:
    base = dict(name="p", version="1", dir=tmp_path, definition_file=tmp_path / "package.yaml", build="true")
    base.update(kw)
    return Package(**base)


def test_env_values_are_shell_quoted(tmp_path):
    evil = "$(touch /tmp/pwned) `id` ' \" ; rm -rf /"
    r = render(pkg(tmp_path, env=(("EVIL", evil),), build='printf %s "$EVIL" > out'), seed_image="sha256:" + "a" * 64,
               deps=[], epoch=1)
    assert evil not in r.containerfile
    # Run the prelude for real with /bin/sh: the value arrives verbatim and
    # nothing in it is executed.
    script = r.build_sh.replace("cd /build", f"cd {tmp_path}").replace('mkdir -p "$DESTDIR"', ":")
    subprocess.run(["/bin/sh", "-eu", "-c", script], check=True, cwd=tmp_path)
    assert (tmp_path / "out").read_text() == evil


def test_default_containerfile_shape(tmp_path):
    r = render(pkg(tmp_path, deps=("d",)), seed_image="sha256:" + "a" * 64,
               deps=[DepRef("d", "sha256:" + "b" * 64)], epoch=7)
    cf = r.containerfile
    assert "FROM sha256:" + "b" * 64 + " AS dep0" in cf
    assert "FROM sha256:" + "a" * 64 + " AS build" in cf
    assert cf.rstrip().endswith("FROM scratch\nCOPY --from=build /rootfs/ /")
    assert "export SOURCE_DATE_EPOCH=7" in r.build_sh and "umask 022" in r.build_sh


def test_rendering_is_stable(tmp_path):
    a = render(pkg(tmp_path), seed_image="sha256:" + "a" * 64, deps=[], epoch=1)
    b = render(pkg(tmp_path), seed_image="sha256:" + "a" * 64, deps=[], epoch=1)
    assert (a.containerfile, a.build_sh) == (b.containerfile, b.build_sh)
