"""A second engine for the tests: a private dockerd on a "separate host".

``private_engine`` starts a dockerd of its own (own data root, exec root,
pidfile and sockets; no bridge, no iptables; vfs storage) inside a network
namespace the test makes, joined to this one by a veth pair on a private
/30, and serving the Docker API over TCP with TLS: a throwaway CA, a server
certificate for the namespace's address and a client certificate, made by
openssl at test time and never committed.  To quorum it is another machine
reached the way a real builder is.  A unix socket beside it (not namespaced:
sockets in the file system are reachable from here) serves the test's own
checks.

Everything it makes is named ``qe<pid>x<n>`` (network namespace, veth,
/run/quorum-enginehost/<name>/), so two test runs on one machine never
collide, and a later run can recognise and remove what a crashed one left
(its PID is gone).  Processes are stopped by PID, never by name.

The daemon starts empty and no registry is reachable: images get into it
through quorum, like on any new builder.
"""
from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from quorum.endpoints import EngineSpec, TLSFiles  # noqa: E402

RUN_BASE = Path("/run/quorum-enginehost")
PREFIX = "qe"
PORT = 2376
# Private /30s for the veth pairs are taken from here; 16,384 of them.
POOL = ipaddress.IPv4Network("10.231.0.0/16")
START_TIMEOUT = 60
_counter = itertools.count()


class CannotStart(Exception):
    """dockerd (or its network namespace) cannot be started on this
    machine: not root, no permission for namespaces, dockerd exits at once.
    The fixture turns this into a skip naming the reason; anything else is a
    failure."""


@dataclass
class EngineHost:
    url: str                  # tcp://10.231.x.y:2376 (TLS) or unix:///run/quorum-enginehost/<name>/sock
    tls: TLSFiles | None
    pid: int
    data_root: Path
    name: str = ""            # the namespace / run-folder name, qe<pid>x<n>
    admin_url: str = ""       # the unix socket, for the test's own checks
    address: str | None = None
    netns: str | None = None
    run_dir: Path = Path()
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def spec(self, slots: int = 1, labels: dict[str, str] | None = None) -> EngineSpec:
        return EngineSpec(url=self.url, name=self.name or self.url, slots=slots,
                          labels=tuple(sorted((labels or {}).items())), tls=self.tls)

    def kill(self) -> None:
        """The machine is lost: SIGKILL the daemon, then whatever else runs
        in its namespace (containerd, the running step's shim), so no
        container outlives it and nothing answers on its address."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        _kill_rest(self.name, self.netns, self.run_dir)

    def stop(self) -> None:
        """Graceful stop by PID (TERM, then KILL after 30 s), then remove
        the namespace, the veth pair, the mounts, the data root and the run
        folder."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        _remove(self.name, self.netns, self.run_dir, self.data_root)


# --- TLS material ----------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    p = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {p.stderr.strip()[-500:]}")


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def make_ca(d: Path, cn: str = "quorum test CA") -> tuple[Path, Path]:
    """A CA (certificate, key) in ``d``: valid two days, for this run only."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", *_EC, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    (d / "ca-key.pem").chmod(0o600)
    return d / "ca.pem", d / "ca-key.pem"


def make_leaf(d: Path, stem: str, ca: tuple[Path, Path], *, server_ips: list[str] | None = None) -> tuple[Path, Path]:
    """A certificate (and key) ``<stem>.pem``/``<stem>-key.pem`` signed by
    ``ca``: a server certificate for ``server_ips`` (IP SANs), else a client
    certificate."""
    ext = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
           "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
    if server_ips is not None:
        ext += ["extendedKeyUsage=serverAuth", "subjectAltName=" + ",".join(f"IP:{ip}" for ip in server_ips)]
    else:
        ext += ["extendedKeyUsage=clientAuth"]
    (d / f"{stem}.ext").write_text("\n".join(ext) + "\n")
    _openssl("req", *_EC, "-keyout", f"{stem}-key.pem", "-out", f"{stem}.csr", "-subj", f"/CN=quorum test {stem}",
             cwd=d)
    (d / f"{stem}-key.pem").chmod(0o600)
    _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial",
             str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-extfile", f"{stem}.ext",
             "-out", f"{stem}.pem", cwd=d)
    return d / f"{stem}.pem", d / f"{stem}-key.pem"


def make_tls(d: Path, server_ips: list[str]) -> tuple[TLSFiles, TLSFiles]:
    """(the client's TLSFiles, the server's as TLSFiles(ca, cert, key))."""
    ca = make_ca(d)
    server = make_leaf(d, "server", ca, server_ips=server_ips)
    client = make_leaf(d, "client", ca)
    return TLSFiles(ca=ca[0], cert=client[0], key=client[1]), TLSFiles(ca=ca[0], cert=server[0], key=server[1])


# --- namespaces and addresses ----------------------------------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show").stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dest, strict=False))
    return nets


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /30 of POOL that no interface or route here uses, starting from a
    place derived from the PID, so concurrent runs start far apart."""
    used = _used_networks()
    subnets = list(POOL.subnets(new_prefix=30))
    for i in range(len(subnets)):
        net = subnets[(seed + i) % len(subnets)]
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError(f"no free /30 left in {POOL}")


def _make_netns(name: str, net: ipaddress.IPv4Network) -> str:
    """The namespace ``name`` with veth ``<name>n`` at the /30's second
    address; ``<name>h`` stays here with the first.  Returns the inner
    address."""
    host_ip, inner_ip = list(net.hosts())
    p = _ip("netns", "add", name, check=False)
    if p.returncode != 0:
        raise CannotStart(f"cannot create a network namespace ({p.stderr.strip()}): the test needs root "
                          "with CAP_SYS_ADMIN and CAP_NET_ADMIN")
    _ip("link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}n")
    _ip("link", "set", f"{name}n", "netns", name)
    _ip("addr", "add", f"{host_ip}/30", "dev", f"{name}h")
    _ip("link", "set", f"{name}h", "up")
    _ip("netns", "exec", name, "ip", "addr", "add", f"{inner_ip}/30", "dev", f"{name}n")
    _ip("netns", "exec", name, "ip", "link", "set", f"{name}n", "up")
    _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
    return str(inner_ip)


# --- cleaning up (ours now, or a crashed run's) -----------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(netns: str) -> list[int]:
    p = _ip("netns", "pids", netns, check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def _cmdline_names(pid: int, marker: str) -> bool:
    try:
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _in_cgroup(pid: int, name: str) -> bool:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return f":/{name}/" in text or f":/{name}\n" in text


def _kill_rest(name: str, netns: str | None, run_dir: Path) -> None:
    """SIGKILL every process left of this engine: those in its namespace
    (or, without one, those whose command line names its run folder, which
    is unique to it), and its containers' processes, found by the cgroup
    parent it was started with: each container has a network namespace of
    its own, and its processes outlive a killed daemon and shim."""
    procs = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    if netns is not None:
        pids = _netns_pids(netns)
    else:
        pids = [p for p in procs if _cmdline_names(p, str(run_dir) + "/")]
    pids += [p for p in procs if _in_cgroup(p, name) and p not in pids]
    for pid in pids:
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(_alive(p) and not _zombie(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    # A killed containerd may linger as a zombie that a restarted dockerd
    # would take for running: forget its PID file.
    (run_dir / "exec" / "containerd" / "containerd.pid").unlink(missing_ok=True)
    # The containers' cgroups, now empty (innermost first).
    for top in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _remove(name: str, netns: str | None, run_dir: Path, data_root: Path | None) -> None:
    _kill_rest(name, netns, run_dir)
    roots = [str(r) for r in (run_dir, data_root) if r is not None]
    # dockerd bind-mounts its data root onto itself: the root itself too.
    mounts = [m for m in (line.split()[1] for line in Path("/proc/mounts").read_text().splitlines())
              if any(m == r or m.startswith(r + "/") for r in roots)]
    for m in sorted(mounts, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    if netns is not None:
        # Deleting the host end removes its peer too (and the namespace's
        # removal would remove the peer and with it the host end).
        _ip("link", "del", f"{name}h", check=False)
        _ip("netns", "del", netns, check=False)
    for d in (data_root, run_dir):
        if d is not None and d.exists():
            shutil.rmtree(d, ignore_errors=True)
            if d.exists():
                # vfs layers can hold read-only folders; make them writable.
                subprocess.run(["chmod", "-R", "u+w", str(d)], capture_output=True)
                shutil.rmtree(d, ignore_errors=True)


def _owner_pid(name: str) -> int | None:
    rest = name[len(PREFIX):]
    pid, x, _ = rest.partition("x")
    return int(pid) if name.startswith(PREFIX) and x and pid.isdigit() else None


def cleanup_stale() -> list[str]:
    """Remove what test runs that are gone left behind (their PID, part of
    every name, no longer runs): namespaces, veths, containers' processes
    and cgroups, run folders, data roots recorded in the run folder's
    state.json.  Returns the names removed."""
    names: set[str] = set()
    if RUN_BASE.is_dir():
        names.update(p.name for p in RUN_BASE.iterdir())
    names.update(line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip())
    names.update(p.name for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}*x*"))
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            dev = parts[1].strip().split("@")[0]
            if dev.startswith(PREFIX) and dev.endswith("h"):
                names.add(dev[:-1])
    removed = []
    for name in sorted(names):
        owner = _owner_pid(name)
        if owner is None or _alive(owner):
            continue
        run_dir = RUN_BASE / name
        data_root = None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            state = json.loads((run_dir / "state.json").read_text())
            d = Path(state["data_root"])
            if d.name == f"{name}-data":       # only what we named ourselves
                data_root = d
        has_ns = name in _ip("netns", "list", check=False).stdout.split()
        _remove(name, name if has_ns else None, run_dir, data_root)
        _ip("link", "del", f"{name}h", check=False)
        removed.append(name)
    return removed


# --- the engine --------------------------------------------------------------

def _ready(admin_url: str) -> bool:
    return subprocess.run(["docker", "-H", admin_url, "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, env=_docker_env()).returncode == 0


def _docker_env() -> dict[str, str]:
    # The test's docker CLI must not pick up a DOCKER_HOST/TLS setting or a
    # context from the environment.
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}


@contextlib.contextmanager
def private_engine(tmp: Path, *, tls: bool = True, netns: bool = True) -> Iterator[EngineHost]:
    """A private dockerd, stopped and removed on exit.  ``tls``: served on
    tcp://ADDR:2376 with --tlsverify (else ``url`` is its unix socket);
    ``netns``: inside a network namespace of its own, ADDR its end of the
    veth pair (else ADDR is 127.0.0.1, on a free port)."""
    if os.geteuid() != 0:
        raise CannotStart("a private dockerd needs root (network namespace, mounts)")
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed: run tools/setup-test-deps (as root)")
    cleanup_stale()
    n = next(_counter)
    name = f"{PREFIX}{os.getpid()}x{n}"
    run_dir = RUN_BASE / name
    data_root = Path(tmp).resolve() / f"{name}-data"
    host = EngineHost(url="", tls=None, pid=0, data_root=data_root, name=name, run_dir=run_dir,
                      netns=name if netns else None)
    try:
        run_dir.mkdir(parents=True, mode=0o700)
        (run_dir / "state.json").write_text(json.dumps({"data_root": str(data_root), "netns": host.netns}))
        if netns:
            host.address = _make_netns(name, _pick_subnet(os.getpid() * 7 + n * 1013))
        else:
            host.address = "127.0.0.1"
        admin = f"unix://{run_dir}/sock"
        host.admin_url = admin
        (run_dir / "daemon.json").write_text("{}")     # not the machine's daemon.json
        cmd = ["dockerd", "--config-file", str(run_dir / "daemon.json"), "--data-root", str(data_root),
               "--exec-root", str(run_dir / "exec"), "--pidfile", str(run_dir / "pid"), "-H", admin,
               "--bridge=none", "--iptables=false", "--ip-masq=false", "--storage-driver=vfs",
               # Its containers' cgroups under a name of its own: how stop()
               # finds their processes (see _kill_rest).
               f"--cgroup-parent=/{name}"]
        if tls:
            client, server = make_tls(Path(tmp) / f"{name}-tls", [host.address])
            host.tls = client
            cmd += ["--tlsverify", "--tlscacert", str(server.ca), "--tlscert", str(server.cert),
                    "--tlskey", str(server.key), "-H", f"tcp://{host.address}:{PORT}"]
            if not netns:
                # Port 2376 on this machine's loopback may be taken.
                cmd[-1] = f"tcp://127.0.0.1:{_free_port()}"
            host.url = cmd[-1]
        else:
            host.url = admin
        if netns:
            # nsenter, not "ip netns exec": that one also gives the command a
            # private /sys without the cgroup mounts dockerd needs.
            cmd = ["nsenter", f"--net=/run/netns/{name}", "--", *cmd]
        log_path = Path(tmp) / f"{name}-dockerd.log"
        with open(log_path, "ab") as log:
            # nsenter execs dockerd: the PID is the daemon's own.
            host._proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        host.pid = host._proc.pid
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(admin):
            if host._proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise CannotStart(f"dockerd exited at start ({host._proc.returncode}): {' | '.join(tail)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT} s; see {log_path}")
            time.sleep(0.2)
        yield host
    finally:
        host.stop()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
