"""The second engine of the farm tests, and the TLS rules on a live daemon:
a client built from docker_client_kwargs talks to a dockerd in another
network namespace over TLS; without its client certificate, or trusting
another CA, it is refused (verification is really on, whatever the
environment says); and private_engine leaves nothing behind."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest
import requests

import enginehost
from enginehost import CannotStart, make_ca, make_leaf, private_engine
from quorum.endpoints import EngineSpec, TLSFiles, _pinned_tls, check_transport, docker_client_kwargs
from quorum.errors import InputError

pytestmark = pytest.mark.engine

REFUSED = (docker.errors.DockerException, requests.exceptions.RequestException)
# How a daemon refusing a client certificate shows: its TLS alert, or (TLS
# 1.3, where the client may finish first) the connection closed at once.
CLIENT_REFUSED = "BAD_CERTIFICATE|CERTIFICATE_REQUIRED|UNKNOWN_CA|EOF occurred in violation of protocol"


def client(spec: EngineSpec) -> docker.APIClient:
    # version= given: the constructor then makes no request, so a refusal
    # shows up in the call below and not inside docker-py's __init__.
    return docker.APIClient(version="1.41", timeout=20, **docker_client_kwargs(spec))


def test_tls_engine_in_its_own_namespace_answers(second_engine):
    spec = second_engine.spec(slots=2, labels={"cpu": "test"})
    assert spec.url.startswith("tcp://") and spec.tls is not None
    check_transport(spec)
    c = client(spec)
    assert c.version()["ApiVersion"] and c.info()["Driver"] == "vfs"
    assert c.images() == []                      # empty: images arrive through quorum
    # A separate host to quorum: another network namespace, an address that
    # is not loopback, so the same URL without TLS is refused.
    assert os.readlink(f"/proc/{second_engine.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    with pytest.raises(InputError, match="has no TLS"):
        check_transport(EngineSpec(url=spec.url, name="plain"))


def test_client_without_its_certificate_is_refused(second_engine):
    ca = str(second_engine.tls.ca)
    # The daemon is verified as quorum verifies it (the pinned CA, nothing
    # from the environment), so the refusal below is the daemon's.
    anonymous = docker.APIClient(base_url=second_engine.url, version="1.41", timeout=20,
                                 tls=_pinned_tls()(ca_cert=ca, verify=ca))
    with pytest.raises(REFUSED, match=CLIENT_REFUSED):
        anonymous.version()


def test_client_certificate_of_another_ca_is_refused(second_engine, tmp_path):
    other = make_ca(tmp_path / "other", "impostor CA")
    cert, key = make_leaf(tmp_path / "other", "client", other)
    spec = EngineSpec(url=second_engine.url, name="x", tls=TLSFiles(ca=second_engine.tls.ca, cert=cert, key=key))
    with pytest.raises(REFUSED, match=CLIENT_REFUSED):
        client(spec).version()


def test_daemon_of_another_ca_is_refused_whatever_the_environment(second_engine, tmp_path, monkeypatch):
    """The client trusts the CA the spec names and nothing else: not
    another CA, and not $REQUESTS_CA_BUNDLE (requests would let it replace
    the session's CA; here it even names the daemon's real CA)."""
    wrong_ca, _ = make_ca(tmp_path / "wrong", "not the daemon's CA")
    tls = second_engine.tls
    spec = EngineSpec(url=second_engine.url, name="x", tls=TLSFiles(ca=wrong_ca, cert=tls.cert, key=tls.key))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tls.ca))
    with pytest.raises(REFUSED, match="CERTIFICATE_VERIFY_FAILED"):
        client(spec).version()
    # And the other way round: an environment naming a CA that did not sign
    # the daemon's certificate does not break the right one.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(wrong_ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(wrong_ca))
    assert client(second_engine.spec()).version()["ApiVersion"]


def _container_processes(host: enginehost.EngineHost) -> list[int]:
    """Running processes in the engine's cgroups.  Zombies do not count:
    nothing reaps orphans on this machine (its PID 1 does not)."""
    return [int(p) for p in os.listdir("/proc")
            if p.isdigit() and enginehost._in_cgroup(int(p), host.name) and not enginehost._zombie(int(p))]


def _gone(host: enginehost.EngineHost) -> list[str]:
    """What is left of an engine after stop."""
    left = []
    if host.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
        left.append(f"netns {host.name}")
    if subprocess.run(["ip", "link", "show", f"{host.name}h"], capture_output=True).returncode == 0:
        left.append(f"veth {host.name}h")
    if enginehost._alive(host.pid) and not enginehost._zombie(host.pid):
        left.append(f"process {host.pid}")
    for p in (host.data_root, host.run_dir):
        if p.exists():
            left.append(str(p))
    if list(Path("/sys/fs/cgroup").glob(f"*/{host.name}")):
        left.append("cgroups")
    if _container_processes(host):
        left.append("container processes")
    mounts = Path("/proc/mounts").read_text()
    if str(host.data_root) in mounts or str(host.run_dir) in mounts:
        left.append("mounts")
    return left


def _sleep_image() -> bytes:
    """An image holding this machine's sleep and the libraries it loads:
    the daemon starts empty and no registry is reachable."""
    files = [Path("/usr/bin/sleep")]
    for line in subprocess.run(["ldd", "/usr/bin/sleep"], capture_output=True, text=True, check=True).stdout.splitlines():
        path = next((w for w in line.split() if w.startswith("/")), None)
        if path:
            files.append(Path(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for f in files:
            t.add(f.resolve(), arcname=str(f).lstrip("/"))
    return buf.getvalue()


def test_private_engine_leaves_nothing_behind(tmp_path):
    try:
        with private_engine(tmp_path) as host:
            # Something to clean up: an image, a running container (its shim
            # outlives a killed dockerd unless it is stopped too).
            c = client(host.spec())
            c.import_image_from_data(_sleep_image(), repository="quorum-test/sleep", tag="1")
            ctr = c.create_container("quorum-test/sleep:1", command=["/usr/bin/sleep", "600"],
                                     host_config=c.create_host_config(network_mode="none"))
            c.start(ctr)
            inside = enginehost._netns_pids(host.name)
            assert host.pid in inside and len(inside) >= 3          # dockerd, containerd, the shim, sleep
            host.kill()                                             # the machine is lost...
            with pytest.raises(REFUSED):
                client(host.spec()).version()
            assert enginehost._netns_pids(host.name) == []
            assert _container_processes(host) == []
    except CannotStart as e:
        pytest.skip(f"no private dockerd on this machine: {e}")
    assert _gone(host) == []                                        # ...and stop() cleans up after it
    with private_engine(tmp_path, tls=False) as plain:
        assert plain.url.startswith("unix://") and plain.tls is None
        assert client(plain.spec()).version()["ApiVersion"]
    assert _gone(plain) == []


def test_a_crashed_runs_leftovers_are_removed_and_a_live_runs_are_not(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    dead = subprocess.Popen(["true"])
    dead.wait()                                                     # a PID that no longer runs
    crashed = f"{enginehost.PREFIX}{dead.pid}x0"
    live = f"{enginehost.PREFIX}{os.getpid()}x999"
    for name in (crashed, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}n"], check=True)
        run_dir = enginehost.RUN_BASE / name
        run_dir.mkdir(parents=True)
        data = tmp_path / f"{name}-data"
        (data / "vfs" / "dir").mkdir(parents=True)
        (data / "vfs" / "dir").chmod(0o500)
        (run_dir / "state.json").write_text(f'{{"data_root": "{data}", "netns": "{name}"}}')
        (Path("/sys/fs/cgroup/pids") / name / "ctr").mkdir(parents=True)
    try:
        assert crashed in enginehost.cleanup_stale()
        ghost = enginehost.EngineHost(url="", tls=None, pid=dead.pid, data_root=tmp_path / f"{crashed}-data",
                                      name=crashed, run_dir=enginehost.RUN_BASE / crashed)
        assert _gone(ghost) == []
        assert (enginehost.RUN_BASE / live).exists() and (tmp_path / f"{live}-data").exists()
        assert live in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert (Path("/sys/fs/cgroup/pids") / live / "ctr").is_dir()
    finally:
        enginehost._remove(live, live, enginehost.RUN_BASE / live, tmp_path / f"{live}-data")
