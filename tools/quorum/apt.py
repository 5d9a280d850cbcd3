"""A private apt configuration derived from the machine's.

quorum never writes a package archive's host name into the tree: the hosts
come from this machine's own /etc/apt sources at run time, so a mirror or a
proxy configured by the admin is honoured and nothing about it is committed.
The private configuration (under the cache) differs from the machine's in
three ways: only the Debian entries of the running release are kept, deb-src
is enabled beside each, and the package status is an empty file, so that
"what does X need" is answered for an empty system rather than for whatever
this machine happens to have installed.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FetchError

APT_SOURCES = Path("/etc/apt/sources.list")
APT_PARTS = Path("/etc/apt/sources.list.d")
# Lists older than this are refreshed before a lock or a download, since the
# archive drops superseded versions at point releases.
MAX_LIST_AGE = 6 * 3600


@dataclass(frozen=True)
class AptEntry:
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


def codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except FileNotFoundError:
        pass
    return ""


def machine_entries() -> list[AptEntry]:
    """The machine's Debian entries for its own release (one-line and
    deb822 formats).  Third-party repositories are left out: a seed must come
    from Debian's signed archive only."""
    entries: list[AptEntry] = []
    files = [APT_SOURCES] if APT_SOURCES.exists() else []
    if APT_PARTS.is_dir():
        files += sorted(APT_PARTS.glob("*.list")) + sorted(APT_PARTS.glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            entries += _parse_deb822(text)
        else:
            entries += _parse_one_line(text)
    rel = codename()
    wanted = {rel, f"{rel}-updates", f"{rel}-security"} if rel else None
    out = []
    for e in entries:
        suites = tuple(s for s in e.suites if wanted is None or s in wanted)
        if suites and "main" in e.components:
            out.append(AptEntry(e.uris, suites, ("main",), e.signed_by))
    return out


def _parse_deb822(text: str) -> list[AptEntry]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            if ":" in line:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        out.append(AptEntry(tuple(fields.get("uris", "").split()), tuple(fields.get("suites", "").split()),
                            tuple(fields.get("components", "").split()), fields.get("signed-by")))
    return out


def _parse_one_line(text: str) -> list[AptEntry]:
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        parts = line.split()[1:]
        signed_by = None
        if parts and parts[0].startswith("["):
            opts = []
            while parts:
                p = parts.pop(0)
                opts.append(p)
                if p.endswith("]"):
                    break
            m = re.search(r"signed-by=([^\s\]]+)", " ".join(opts))
            signed_by = m.group(1) if m else None
        if len(parts) >= 3:
            out.append(AptEntry((parts[0],), (parts[1],), tuple(parts[2:]), signed_by))
    return out


class PrivateApt:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._updated = False
        # One apt at a time on this private state: parallel builds of two
        # seeds would otherwise update the same lists concurrently (we turn
        # apt's own locking off, since the folders are ours).
        self._lock = threading.RLock()

    @property
    def status(self) -> Path:
        return self.root / "status"

    def _options(self) -> list[str]:
        r = self.root
        return [
            "-o", f"Dir::Etc::SourceList={os.devnull}",
            "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
            "-o", f"Dir::State={r / 'state'}",
            "-o", f"Dir::State::Lists={r / 'state' / 'lists'}",
            "-o", f"Dir::State::status={self.status}",
            "-o", f"Dir::Cache={r / 'cache'}",
            "-o", "Debug::NoLocking=1",
            # Files land in folders quorum owns; dropping to the _apt user
            # would need them world-writable.
            "-o", "APT::Sandbox::User=root",
            "-o", "APT::Install-Recommends=false",
            "-o", "Acquire::Languages=none",
        ]

    def setup(self) -> None:
        entries = machine_entries()
        if not entries:
            raise FetchError("this machine's apt configuration has no Debian entries for its release "
                             f"(read {APT_SOURCES} and {APT_PARTS}); cannot reach Debian's archive",
                             file=str(APT_PARTS))
        parts = self.root / "sources.list.d"
        parts.mkdir(parents=True, exist_ok=True)
        for d in ("state/lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        if not self.status.exists():
            self.status.write_text("")
        paras = []
        for e in entries:
            para = ["Types: deb deb-src", f"URIs: {' '.join(e.uris)}", f"Suites: {' '.join(e.suites)}",
                    f"Components: {' '.join(e.components)}"]
            if e.signed_by:
                para.append(f"Signed-By: {e.signed_by}")
            paras.append("\n".join(para))
        text = "\n\n".join(paras) + "\n"
        target = parts / "quorum.sources"
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
            stamp = self.root / "state" / "updated"
            stamp.unlink(missing_ok=True)

    def update(self, force: bool = False) -> None:
        with self._lock:
            self._update(force)

    def _update(self, force: bool) -> None:
        if self._updated and not force:
            return
        self.setup()
        stamp = self.root / "state" / "updated"
        fresh = stamp.exists() and time.time() - stamp.stat().st_mtime < MAX_LIST_AGE
        if force or not fresh:
            self.run(["apt-get", "update", "-q"], what="apt-get update")
            stamp.touch()
        self._updated = True

    def run(self, argv: list[str], *, cwd: Path | None = None, what: str = "apt") -> str:
        with self._lock:
            return self._run(argv, cwd=cwd, what=what)

    def _run(self, argv: list[str], *, cwd: Path | None, what: str) -> str:
        cmd = [argv[0], *self._options(), *argv[1:]]
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        try:
            p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
        except FileNotFoundError:
            raise FetchError(f"{argv[0]} is not installed; quorum needs apt to reach Debian's archive") from None
        except subprocess.TimeoutExpired:
            raise FetchError(f"{what} timed out") from None
        if p.returncode != 0:
            err = (p.stderr.strip().splitlines() or ["(no output)"])[-3:]
            raise FetchError(f"{what} failed: " + " | ".join(err))
        return p.stdout

    # --- queries ----------------------------------------------------------
    def resolve(self, request: list[str], arch: str = "amd64") -> list[tuple[str, str, str]]:
        """(name, version, arch) of the closure of ``request`` on an empty
        system, without recommends."""
        self.update()
        out = self.run(["apt-get", "-s", "-q", "install", f"-oAPT::Architecture={arch}", *request],
                       what="apt-get -s install " + " ".join(request))
        found = []
        for line in out.splitlines():
            m = re.match(r"^Inst (\S+) \((\S+) .*\[([a-z0-9-]+)\]\)", line)
            if m:
                name = m.group(1).split(":", 1)[0]
                found.append((name, m.group(2), m.group(3)))
        return sorted(set(found))

    def show(self, name: str, version: str, arch: str) -> dict[str, str]:
        return self.show_many([(name, version, arch)])[(name, version, arch)]

    def show_many(self, pkgs: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict[str, str]]:
        """Index records of many packages in one apt-cache call (each call
        loads the whole package cache, about half a second)."""
        if not pkgs:
            return {}
        out = self.run(["apt-cache", "show", *[f"{n}:{a}={v}" for n, v, a in pkgs]],
                       what=f"apt-cache show ({len(pkgs)} packages)")
        found: dict[tuple[str, str, str], dict[str, str]] = {}
        for para in out.split("\n\n"):
            rec = {}
            for line in para.splitlines():
                if line and line[0] not in " \t" and ":" in line:
                    k, _, v = line.partition(":")
                    rec[k] = v.strip()
            pkg, ver, arch = rec.get("Package"), rec.get("Version"), rec.get("Architecture")
            # A record without a version or an architecture could never be
            # looked up below (nor by callers, who ask by all three).
            if pkg and ver is not None and arch is not None and (pkg, ver, arch) not in found:
                found[(pkg, ver, arch)] = rec
        for n, v, a in pkgs:
            if (n, v, a) not in found and (n, v, "all") in found:
                found[(n, v, a)] = found[(n, v, "all")]
            if (n, v, a) not in found:
                raise FetchError(f"the archive has no {n} {v} ({a})")
        return found

    def download_deb(self, name: str, version: str, arch: str, dest: Path) -> Path:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self.run(["apt-get", "download", "-q", f"{name}:{arch}={version}"], cwd=dest,
                 what=f"apt-get download {name}={version}")
        debs = sorted(dest.glob("*.deb"))
        if len(debs) != 1:
            raise FetchError(f"apt-get download {name}={version} gave {len(debs)} files")
        return debs[0]

    def download_debs(self, pkgs: list[tuple[str, str, str]], dest: Path) -> list[Path]:
        """Many .debs in one apt-get call (apt fetches them in parallel and
        loads its cache once)."""
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        self.run(["apt-get", "download", "-q", *[f"{n}:{a}={v}" for n, v, a in pkgs]], cwd=dest,
                 what=f"apt-get download ({len(pkgs)} packages)")
        return sorted(dest.glob("*.deb"))

    def download_source(self, package: str, version: str | None, dest: Path) -> list[Path]:
        self.update()
        dest.mkdir(parents=True, exist_ok=True)
        spec = f"{package}={version}" if version else package
        self.run(["apt-get", "source", "--download-only", "-q", spec], cwd=dest,
                 what=f"apt-get source --download-only {spec}")
        return sorted(p for p in dest.iterdir() if p.is_file())
