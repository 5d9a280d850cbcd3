"""Every artifact of the fixture tree (seed included), as a layout in out/
and as an archive, is taken by the OCI tools people use, under its one name
``<namespace>/<name>:<tag>``: docker load, podman load, skopeo (oci: and
oci-archive:) and umoci unpack.  Buildah (podman build) accepts an
artifact as a base, which needs the config's history (docs/spec/artifact.md),
and the whole tree built through Podman's Docker-compatible API gives the
manifest Docker gives, byte for byte.

Podman runs on a private storage root under the test's temporary folder
with the vfs driver, so it touches nothing of the machine's."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import require_tool, run_quorum
from quorum import build as buildlib
from quorum import imageref
from quorum.engine import Engine
from quorum.tree import load_tree
from treeutil import make_fixture_tree

pytestmark = pytest.mark.engine


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr or p.stdout}"
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory, locked_seed_text, engine):
    """The fixture tree built once, with an archive of every node."""
    tree_dir = make_fixture_tree(tmp_path_factory.mktemp("interop") / "tree", seed_lock=locked_seed_text)
    tree = load_tree(tree_dir)
    names = tuple(sorted([*tree.seeds, *tree.packages]))
    res = buildlib.build(tree, engine=engine, options=buildlib.Options(jobs=2, archives=names))
    assert res.ok, res.failed()
    refs = {n: str(imageref.reference(tree.config.namespace, n, res.nodes[n].version)) for n in names}
    return tree_dir, res, refs


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """podman with its own storage (vfs: no overlay mounts needed in a
    container) that nothing else uses."""
    exe = require_tool("podman")
    d = tmp_path_factory.mktemp("podman")
    return [exe, "--root", str(d / "root"), "--runroot", str(d / "run"), "--storage-driver", "vfs"]


def test_names_are_the_one_reference(built):
    tree_dir, res, refs = built
    for name, ref in refs.items():
        assert imageref.is_docker_reference(ref) and imageref.is_oci_ref_name(ref), ref
        index = json.loads((tree_dir / "out" / name / "index.json").read_bytes())
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == ref
    assert refs["busybox"].startswith("quorum-fixture/busybox:1debs-")


def test_layouts_pass_skopeo_and_umoci_by_name(built, tmp_path):
    tree_dir, res, refs = built
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    for name, ref in refs.items():
        layout = tree_dir / "out" / name
        got = json.loads(run(skopeo, "inspect", f"oci:{layout}:{ref}").stdout)
        assert got["Digest"] == res.nodes[name].digest, name
        bundle = tmp_path / f"bundle-{name}"
        run(umoci, "unpack", "--rootless", "--image", f"{layout}:{ref}", str(bundle))
        assert (bundle / "rootfs").is_dir() and (bundle / "config.json").is_file(), name


def test_archives_pass_skopeo_copy(built, tmp_path):
    tree_dir, res, refs = built
    skopeo = require_tool("skopeo")
    for name, ref in refs.items():
        # --preserve-digests: an oci: destination would gzip the layer (a
        # new manifest); the point is that the very bytes travel.
        dst = tmp_path / name
        archive = tree_dir / "out" / f"{name}.tgz"
        run(skopeo, "--insecure-policy", "copy", "--quiet", "--preserve-digests", f"oci-archive:{archive}",
            f"oci:{dst}:{ref}")
        got = json.loads(run(skopeo, "inspect", f"oci:{dst}:{ref}").stdout)
        assert got["Digest"] == res.nodes[name].digest, name


def test_archives_pass_docker_load(built, engine):
    tree_dir, res, refs = built
    docker = require_tool("docker")
    for name, ref in refs.items():
        out = run(docker, "load", "-i", str(tree_dir / "out" / (name + ".tgz"))).stdout
        assert f"Loaded image: {ref}\n" in out, out
        # Checked by ID, not by tag: another checkout on the same engine may
        # move the tag at any moment.
        assert engine.has_image(res.nodes[name].config_digest), name


def test_archives_pass_podman_load(built, podman):
    tree_dir, res, refs = built
    for name, ref in refs.items():
        out = run(*podman, "load", "-i", str(tree_dir / "out" / (name + ".tgz"))).stdout
        # podman puts "localhost/" before a name without a registry host.
        assert f"Loaded image: localhost/{ref}\n" in out, out
        got = json.loads(run(*podman, "image", "inspect", f"localhost/{ref}").stdout)[0]
        assert got["Digest"] == res.nodes[name].digest and "sha256:" + got["Id"] == res.nodes[name].config_digest


def test_podman_builds_on_an_artifact(built, podman, tmp_path):
    """buildah refuses a base whose config history does not cover its
    layers ("history lists 2 non-empty layers, but we have 3 layers on
    disk" at the second commit); two COPYs on the seed are enough to find
    out, and need no container runtime."""
    tree_dir, res, refs = built
    run(*podman, "load", "-i", str(tree_dir / "out" / "busybox.tgz"))
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "hello.txt").write_text("hello\n")
    # Two commits: the second is where buildah counts the base's history.
    (tmp_path / "ctx" / "Containerfile").write_text(
        f"FROM localhost/{refs['busybox']}\nCOPY hello.txt /hello.txt\nCOPY hello.txt /again.txt\n")
    run(*podman, "build", "--quiet", "--tag", "localhost/interop-child:1", str(tmp_path / "ctx"))
    got = json.loads(run(*podman, "image", "inspect", "localhost/interop-child:1").stdout)[0]
    assert len(got["RootFS"]["Layers"]) == 3


@pytest.fixture(scope="module")
def podman_service(tmp_path_factory):
    """``podman system service`` on a socket of its own, with its own
    storage and configuration (never the machine's); stopped by PID.  The
    same service the bench's R3 rebuilds on."""
    require_tool("podman")
    require_tool("runc")
    from quorum.benchtree import podman_service as service
    with service(tmp_path_factory.mktemp("podman-service")) as url:
        yield url


def test_the_tree_through_podman_gives_dockers_manifest_byte_for_byte(built, podman_service, locked_seed_text,
                                                                      tmp_path):
    docker_tree, docker_res, _ = built
    tree_dir = make_fixture_tree(tmp_path / "tree", seed_lock=locked_seed_text)
    # Two jobs, as a user runs it: parallel builds on Podman used to race the
    # removal of one's intermediate images against the other's cache lookup
    # ("getting top layer info: layer not known"); builds now remove only
    # the images they provably made (Engine.release), and 10 of 10 -j2
    # builds of this tree on Podman passed, warm and cold.
    res = buildlib.build(load_tree(tree_dir), engine=Engine(podman_service), options=buildlib.Options(jobs=2))
    assert res.ok, {n: r.error for n, r in res.nodes.items() if r.status == "failed"}
    assert all(r.status == "built" for r in res.nodes.values())
    assert (tree_dir / "manifests" / "manifest.json").read_bytes() == \
        (docker_tree / "manifests" / "manifest.json").read_bytes()


def test_reproduce_on_podman_names_both_engines(built, podman_service):
    """#8 item 2: a rebuild on another engine (Podman's API here), judged
    against the Docker build, and the report names both engines."""
    docker_tree, _, _ = built
    p = run_quorum("reproduce", "--tree", str(docker_tree), "--engine", podman_service, "--json", "base",
                   timeout=900)
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert [(v["name"], v["verdict"]) for v in doc["verdicts"]] == [("base", "REPRODUCED")]
    assert doc["complete"] is True
    assert doc["rebuild_engine"]["kind"] == "Podman" and doc["rebuild_engine"]["endpoint"] == podman_service
    assert doc["build_engine"]["kind"] == "Docker"
    for facts in (doc["rebuild_engine"], doc["build_engine"]):
        assert facts["kernel"] and facts["os"] and facts["cpus"] >= 1
