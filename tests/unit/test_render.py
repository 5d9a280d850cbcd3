"""Nothing from a definition reaches a Containerfile instruction or a shell
command unquoted."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
    script = r.build_sh.replace("cd /build", f"cd {tmp_path}").replace("DESTDIR=/rootfs", f"DESTDIR={tmp_path}/root")
    subprocess.run(["/bin/sh", "-eu", "-c", script], check=True, cwd=tmp_path)
    assert (tmp_path / "out").read_text() == evil


def run_prelude(tmp_path, build: str, umask: str) -> Path:
    """Run the rendered build.sh on this machine, in tmp_path, with its
    DESTDIR under it; returns the DESTDIR."""
    from quorum.render import Settings
    r = render(pkg(tmp_path, build=build), seed_image=None, deps=[], epoch=1, settings=Settings(umask=umask))
    script = r.build_sh.replace("cd /build", f"cd {tmp_path}").replace("DESTDIR=/rootfs", f"DESTDIR={tmp_path}/root")
    subprocess.run(["/bin/sh", "-eu", "-c", script], check=True, cwd=tmp_path)
    return tmp_path / "root"


def test_prelude_folders_lose_group_write_but_files_keep_the_umask(tmp_path):
    # What `make install` does under a loose umask: parent folders by mkdir
    # -p, a file by redirection, a sticky world-writable folder on purpose.
    root = run_prelude(tmp_path, 'mkdir -p "$DESTDIR/usr/share/x" "$DESTDIR/.hidden/y"\n'
                                 'echo hi > "$DESTDIR/usr/share/x/f"\n'
                                 'mkdir "$DESTDIR/tmp" && chmod 1777 "$DESTDIR/tmp"\n'
                                 'exit 0', umask="002")
    mode = lambda p: oct((root / p).stat().st_mode & 0o7777)
    assert [mode(p) for p in ("usr", "usr/share", "usr/share/x", ".hidden", ".hidden/y")] == ["0o755"] * 5
    assert mode("tmp") == "0o1777"
    # a file that follows the umask is left alone: reproduce must see it
    assert mode("usr/share/x/f") == "0o664"


def test_prelude_stops_on_a_failing_build_script(tmp_path):
    with pytest.raises(subprocess.CalledProcessError):
        run_prelude(tmp_path, "false\ntouch after", umask="022")
    assert not (tmp_path / "after").exists()


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
