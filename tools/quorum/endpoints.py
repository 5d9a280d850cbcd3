"""Where the engines are, and how quorum may reach them (docs/spec/engines.md).

An engine endpoint is a Docker-API daemon: on this machine (``unix://``), on
another machine over TLS (``tcp://``) or through OpenSSH (``ssh://``).  The
Docker API is root on the machine that serves it, and whatever the engine
returns becomes an artifact quorum signs, so the transport is the security
boundary of a build farm:

* ``tcp://`` without TLS is refused unless the host is loopback: anyone on
  the network path could run containers on the builder and swap the layers
  it sends back.
* TLS always verifies the daemon against the CA the user named (docker-py
  would skip verification if told ``verify=False``; nothing here can say so).
* ``ssh://`` goes through the OpenSSH client and its known_hosts; a
  configuration that would accept an unknown host key is refused.
* Credentials never reach a message or a log: every URL shown to a person
  goes through ``redact``.

This module parses and checks; it never connects.  The engine kinds under
``engines/`` build a client from ``docker_client_kwargs``.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DefinitionError, InputError, QuorumError
from .text import printable

# Where the user's own list lives, under $XDG_CONFIG_HOME (default ~/.config).
USER_CONFIG = Path("quorum") / "engines.yaml"
DEFAULT_LOCAL = "unix:///var/run/docker.sock"
FLAG = "--engine"

# More concurrent builds than this on one daemon is a typo (slots=1000), not
# a machine: the largest builders have a few hundred cores.
MAX_SLOTS = 256
MAX_ENGINES = 256

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
LABEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")
# Host names and IPv4 addresses; IPv6 comes in brackets and is checked by
# ipaddress.  Nothing here can start with "-" (an ssh option) or hold a
# space, quote or shell metacharacter.
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?\Z")
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
_PORT_RE = re.compile(r"^[0-9]{1,5}\Z")
_SLOTS_RE = re.compile(r"^[0-9]{1,4}\Z")     # int() alone would take " 7", "+7", "1_0", "٧"
# A unix socket path: absolute, plain characters, bounded like sun_path.
_SOCKET_RE = re.compile(r"^/[A-Za-z0-9._+/-]{1,106}\Z")
_OPTION_KEY_RE = re.compile(r"^[a-z]{1,16}\Z")


@dataclass(frozen=True)
class TLSFiles:
    """Client-side TLS material for a tcp:// engine."""
    ca: Path               # CA that signed the daemon's certificate (verification is never off)
    cert: Path             # client certificate
    key: Path              # client key


@dataclass(frozen=True)
class EngineSpec:
    url: str                                   # unix:///path, tcp://host:port, ssh://user@host[:port]
    name: str                                  # display name; default: redact(url)
    slots: int = 1                             # concurrent builds on this engine
    labels: tuple[tuple[str, str], ...] = ()   # sorted (key, value) pairs, e.g. (("cpu","amd"),)
    tls: TLSFiles | None = None
    # Where the engine was listed (file or None for a flag, and field), so
    # that check_transport's errors point at the line to fix.
    origin: tuple[str | None, str] = field(default=(None, FLAG), compare=False)

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


# --- URLs --------------------------------------------------------------------

def redact(url: str) -> str:
    """``url`` safe to print or log: a password, any user name but an ssh
    login, and any query or fragment (where tokens travel) become ``***``;
    control characters are escaped.  Works on any text, parsable or not."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not a URL; a credential may still hide in "user:pw@host".
        rest, scheme = url, ""
    cut = _first(rest, "?#")
    head, tail = rest[:cut], rest[cut:]
    if tail:
        tail = tail[0] + "***"
    # The user part ends at the last "@" before any query, not at the first
    # "/": a password may hold an unencoded "/" or ",", and none of it may
    # show.
    at = head.rfind("@")
    if at != -1:
        userinfo = head[:at]
        keep = scheme == "ssh" and _USER_RE.match(userinfo)
        head = f"{userinfo if keep else '***'}{head[at:]}"
    return printable(f"{scheme}{sep}{head}{tail}")


def _first(text: str, chars: str) -> int:
    """Index of the first of ``chars`` in ``text``, or len(text)."""
    return min([i for i in (text.find(c) for c in chars) if i != -1], default=len(text))


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str | None
    port: int | None
    user: str | None
    path: str | None


def _parse_url(url: str, err: Any) -> _Parsed:
    """Split and check an endpoint URL; ``err(message)`` makes the error.
    Messages show the URL only through redact."""
    shown = redact(url)
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise err(f"{shown} contains white space or control characters")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("unix", "tcp", "ssh"):
        raise err(f"{shown} is not an engine URL: expected unix:///PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]")
    if scheme == "unix":
        if not _SOCKET_RE.match(rest) or ".." in rest.split("/"):
            raise err(f"{shown}: expected unix:///absolute/path/to/socket (three slashes; letters, digits, . _ + - "
                      "and /; no '..'; at most 107 characters)")
        return _Parsed("unix", None, None, None, rest)
    if any(c in rest for c in "/?#"):
        raise err(f"{shown}: no path, query or fragment allowed in an engine URL")
    netloc = rest
    user = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        if scheme == "tcp":
            raise err(f"{shown}: a tcp:// engine takes no user or password; its client certificate "
                      "(tls) says who you are")
        if ":" in userinfo:
            # A password in a URL ends up in shell history, process lists
            # and logs; OpenSSH would not use it anyway.
            raise err(f"{shown}: no password in an ssh:// URL; use a key (ssh-agent) and ~/.ssh/config")
        if not _USER_RE.match(userinfo):
            raise err(f"{shown}: the user name is not a plain login name")
        user = userinfo
    port: int | None = None
    if netloc.startswith("["):
        host, close, after = netloc[1:].partition("]")
        if not close:
            raise err(f"{shown}: an IPv6 address needs its closing ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise err(f"{shown}: {printable(host)!r:.60} is not an IPv6 address") from None
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise err(f"{shown}: expected :PORT after the address")
    else:
        host, colon, port_text_ = netloc.partition(":")
        port_text = port_text_ if colon else None
        if not _HOST_RE.match(host):
            raise err(f"{shown}: expected a host name or address (letters, digits, '.' and '-')")
    if port_text is not None:
        if not _PORT_RE.match(port_text) or not 1 <= int(port_text) <= 65535:
            raise err(f"{shown}: the port must be a number from 1 to 65535")
        port = int(port_text)
    elif scheme == "tcp":
        raise err(f"{shown}: give the port (the Docker daemon listens for TLS on 2376)")
    return _Parsed(scheme, host, port, user, None)


def is_loopback(host: str | None) -> bool:
    """The literal name localhost, 127.0.0.0/8 or ::1 (also as ::ffff:127.x):
    traffic that never leaves this machine."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


# --- the --engine flag --------------------------------------------------------

def parse_engine_arg(text: str, *, cwd: Path | None = None) -> EngineSpec:
    """``URL[,slots=N][,label=KEY=VALUE]...[,name=NAME][,tls=DIR]`` (the
    --engine flag); ``tls=DIR`` names a folder holding ca.pem, cert.pem and
    key.pem (Docker's layout), relative to ``cwd``."""
    def err(msg: str) -> InputError:
        return InputError(msg, field=FLAG)
    if not text:
        raise err("expected URL[,slots=N][,label=KEY=VALUE]...")
    if any(ord(c) < 33 or ord(c) == 127 or c.isspace() for c in text):
        # A newline could forge a second line of a log or an error.
        raise err(f"{redact(text)}: white space or control characters are not allowed in --engine "
                  "(list an engine whose TLS folder has a space in engines.yaml)")
    url, *options = _split_flag(text)
    _parse_url(url, err)   # first: a bad URL must not be echoed by an option's error
    slots = 1
    name: str | None = None
    labels: dict[str, str] = {}
    tls = None
    seen: set[str] = set()
    for opt in options:
        key, eq, value = opt.partition("=")
        if not eq or not _OPTION_KEY_RE.match(key):
            # Not echoed: with a comma in a password, this part could be
            # the rest of it.
            raise err(f"{redact(url)}: after the URL, expected KEY=VALUE options separated by ',' "
                      "(slots=N, label=KEY=VALUE, name=NAME, tls=DIR)")
        if key in seen and key != "label":
            raise err(f"{redact(url)}: {key}= is given twice")
        seen.add(key)
        if key == "slots":
            slots = _slots(value, lambda m: err(f"{redact(url)}: slots: {m}"))
        elif key == "name":
            if not NAME_RE.match(value):
                raise err(f"{redact(url)}: name= expects letters, digits, '.', '_' or '-' (at most 64)")
            name = value
        elif key == "label":
            k, eq2, v = value.partition("=")
            if not eq2 or not LABEL_KEY_RE.match(k) or not LABEL_VALUE_RE.match(v):
                raise err(f"{redact(url)}: label= expects KEY=VALUE, KEY of lower-case letters, digits, '.', '_', "
                          "'-' and VALUE of letters, digits, '.', '_', '+', '-'")
            if k in labels:
                raise err(f"{redact(url)}: label {k!r} is given twice")
            labels[k] = v
        elif key == "tls":
            if not value:
                raise err(f"{redact(url)}: tls= expects a folder holding ca.pem, cert.pem and key.pem")
            d = Path(value).expanduser()
            d = d if d.is_absolute() else (cwd or Path.cwd()) / d
            tls = TLSFiles(ca=d / "ca.pem", cert=d / "cert.pem", key=d / "key.pem")
        else:
            raise err(f"{redact(url)}: unknown option {key!r} (known: label, name, slots, tls)")
    spec = EngineSpec(url=url, name=name or redact(url), slots=slots, labels=tuple(sorted(labels.items())), tls=tls,
                      origin=(None, FLAG))
    _check_tls_scheme(spec, err)
    return spec


def _split_flag(text: str) -> list[str]:
    """URL and options.  A user part ("user:pass,word@host") may hold a
    comma: split after it (as redact draws the line), so no piece of a
    password becomes an "option" that an error message would echo."""
    scheme, sep, rest = text.partition("://")
    if sep:
        at = rest.rfind("@", 0, _first(rest, "?#"))
        if at != -1:
            url_tail, *options = rest[at + 1:].split(",")
            return [f"{scheme}{sep}{rest[:at + 1]}{url_tail}", *options]
    return text.split(",")


def _slots(value: Any, err: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise err("expected a whole number")
    if isinstance(value, str):
        if not _SLOTS_RE.match(value):
            raise err("expected a whole number")
        value = int(value)
    if not 1 <= value <= MAX_SLOTS:
        raise err(f"must be between 1 and {MAX_SLOTS}")
    return value


def _check_tls_scheme(spec: EngineSpec, err: Any) -> None:
    if spec.tls is not None and not spec.url.startswith("tcp://"):
        raise err(f"{redact(spec.url)}: TLS files apply to tcp:// engines only "
                  "(unix:// is local, ssh:// is encrypted by OpenSSH)")


# --- engines.yaml and quorum.yaml's engines: ---------------------------------

def engines_from_yaml(value: Any, file: Path, base: Path, *, key: str = "engines") -> tuple[EngineSpec, ...]:
    """The ``engines:`` list of a YAML document already parsed by the tree's
    hardened loader; relative TLS paths are relative to ``base``.  Errors
    are DefinitionErrors naming the file and the field."""
    from .tree import _Fields     # the tree's field reader: one validator for every format
    if not isinstance(value, list):
        raise DefinitionError("expected a list of engines (each with at least url:)", file=str(file), field=key)
    if not value:
        raise DefinitionError("lists no engine; leave the field out to use the local engine", file=str(file), field=key)
    if len(value) > MAX_ENGINES:
        raise DefinitionError(f"more than {MAX_ENGINES} engines", file=str(file), field=key)
    specs = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        f = _Fields(item, file, where)
        url = f.get("url", str, required=True, what="an engine URL (unix://, tcp:// or ssh://)")
        _parse_url(url, lambda m, f=f: f.err("url", m))
        name = f.string("name", NAME_RE, what="a name (letters, digits, '.', '_', '-')")
        slots = _slots(f.get("slots", (int, str), default=1, what="a whole number"),
                       lambda m: f.err("slots", m))
        labels = []
        for k, v in sorted(f.get("labels", dict, default={}, what="a mapping of KEY: VALUE").items(),
                           key=lambda kv: str(kv[0])):
            if not isinstance(k, str) or not LABEL_KEY_RE.match(k):
                raise f.err(f"labels.{printable(str(k))[:40]}", "expected a label key (lower-case letters, digits, "
                            "'.', '_', '-')")
            if isinstance(v, bool) or not isinstance(v, (str, int)) or not LABEL_VALUE_RE.match(str(v)):
                raise f.err(f"labels.{k}", "expected a label value (letters, digits, '.', '_', '+', '-')")
            labels.append((k, str(v)))
        tls = None
        if f.data.get("tls") is not None:
            t = _Fields(f.get("tls", dict, what="a mapping with ca:, cert: and key:"), file, f"{where}.tls")
            paths = {}
            for part in ("ca", "cert", "key"):
                p = t.string(part, required=True, what="a file path")
                assert p is not None
                if not p or "\0" in p or any(ord(c) < 32 for c in p):
                    raise t.err(part, "expected a file path")
                path = Path(p).expanduser()
                paths[part] = path if path.is_absolute() else base / path
            t.finish()
            tls = TLSFiles(**paths)
        else:
            f.used.add("tls")
        f.finish()
        spec = EngineSpec(url=url, name=name or redact(url), slots=slots, labels=tuple(labels), tls=tls,
                          origin=(str(file), where))
        _check_tls_scheme(spec, lambda m: f.err("tls", m))
        specs.append(spec)
    _check_unique(specs, lambda m: DefinitionError(m, file=str(file), field=key))
    return tuple(specs)


def _check_unique(specs: list[EngineSpec], err: Any) -> None:
    urls: dict[str, str] = {}
    names: set[str] = set()
    for s in specs:
        if s.url in urls:
            raise err(f"{redact(s.url)} is listed twice; give it more slots instead")
        urls[s.url] = s.name
        if s.name in names:
            raise err(f"the name {s.name!r} is used twice; names tell engines apart in reports")
        names.add(s.name)


def user_config_path(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_CONFIG_HOME/quorum/engines.yaml, or ~/.config/... when the
    variable is unset or relative (the XDG spec says to ignore a relative one)."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / USER_CONFIG
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".config" / USER_CONFIG


def load_user_config(path: Path) -> tuple[EngineSpec, ...]:
    """The user's engines.yaml: ``engines:`` and nothing else, read like
    every file quorum reads (regular, bounded, no symlink, no FIFO)."""
    from .tree import _Fields, load_yaml
    doc = load_yaml(path, error=InputError)
    f = _Fields(doc, path)
    specs = engines_from_yaml(f.get("engines", list, required=True, what="a list of engines"), path, path.parent)
    f.finish()
    return specs


def local_spec(env: Mapping[str, str] = os.environ) -> EngineSpec:
    """The engine quorum used before pools: $DOCKER_HOST, else the local
    socket.  With $DOCKER_TLS_VERIFY or $DOCKER_CERT_PATH set, TLS from
    $DOCKER_CERT_PATH (default ~/.docker) — always verified: docker-py's
    own from_env would use TLS *without* verification when only
    DOCKER_CERT_PATH is set."""
    url = env.get("DOCKER_HOST") or DEFAULT_LOCAL
    _parse_url(url, lambda m: InputError(m, field="DOCKER_HOST"))
    tls = None
    if env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_CERT_PATH"):
        d = Path(env.get("DOCKER_CERT_PATH") or Path(env.get("HOME") or "~").expanduser() / ".docker")
        tls = TLSFiles(ca=d / "ca.pem", cert=d / "cert.pem", key=d / "key.pem")
    spec = EngineSpec(url=url, name=redact(url), tls=tls, origin=(None, "DOCKER_HOST"))
    _check_tls_scheme(spec, lambda m: InputError(m + " (unset DOCKER_TLS_VERIFY and DOCKER_CERT_PATH)",
                                                 field="DOCKER_HOST"))
    return spec


def load_specs(tree_root: Path, cli: list[str], *, env: Mapping[str, str] = os.environ) -> list[EngineSpec]:
    """The engines of this run, from the first place that lists any:
    --engine flags, else quorum.yaml's ``engines:``, else the user's
    engines.yaml, else the local engine.  Lists are not merged: a tree's CI
    that names its builders must not also pick up a developer's."""
    if cli:
        specs = [parse_engine_arg(t) for t in cli]
        if len(specs) > MAX_ENGINES:
            raise InputError(f"more than {MAX_ENGINES} engines", field=FLAG)
        _check_unique(specs, lambda m: InputError(m, field=FLAG))
        return specs
    from .tree import load_config
    tree_engines = load_config(Path(tree_root)).engines
    if tree_engines:
        return list(tree_engines)
    path = user_config_path(env)
    if os.path.lexists(path):     # a dangling symlink is reported, not taken for "no file"
        return list(load_user_config(path))
    return [local_spec(env)]


# --- transport security ----------------------------------------------------

def _where(spec: EngineSpec, sub: str | None = None) -> dict[str, str | None]:
    file, fld = spec.origin
    return {"file": file, "field": f"{fld}.{sub}" if sub and file is not None else fld}


def check_transport(spec: EngineSpec) -> None:
    """Refuse an endpoint quorum must not talk to: InputError (exit 3) with
    the reason and the remedy.  Reads the TLS files' metadata and asks
    OpenSSH for its effective configuration; never connects."""
    p = _parse_url(spec.url, lambda m: InputError(m, **_where(spec)))
    if p.scheme == "tcp":
        if spec.tls is None:
            if is_loopback(p.host):
                return
            raise InputError(
                f"{redact(spec.url)} has no TLS: the Docker API is root on that machine, so anyone on the network "
                "path could run containers there and swap the artifacts it builds; give the engine TLS files "
                "(tls: {ca, cert, key} in YAML, or --engine URL,tls=DIR) or reach it with ssh://USER@HOST",
                **_where(spec))
        _check_tls_files(spec)
    elif p.scheme == "ssh":
        _check_ssh(spec, p)


def _check_tls_files(spec: EngineSpec) -> None:
    assert spec.tls is not None
    for part in ("ca", "cert", "key"):
        path = getattr(spec.tls, part)
        where = _where(spec, f"tls.{part}")
        try:
            # stat, not lstat: a certificate kept as a symlink is common and
            # harmless; what matters is that the target is a regular file
            # (a FIFO would block the TLS library's read forever).
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"TLS {part} file {printable(str(path))} not found", **where) from None
        except OSError as e:
            raise InputError(f"TLS {part} file {printable(str(path))}: {e.strerror}", **where) from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"TLS {part} file {printable(str(path))} is not a regular file", **where)
        if part == "key" and st.st_mode & 0o077:
            # Like OpenSSH with an unprotected private key: whoever else can
            # read it can drive the builder as root.  Refused, not warned
            # about: a warning scrolls away in CI logs.
            raise InputError(f"TLS key {printable(str(path))} is readable by other users (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {printable(str(path))}", **where)


# OpenSSH settings (as `ssh -G` prints them) under which an unknown host key
# would be taken without a person comparing its fingerprint.
_UNSAFE_HOST_KEY_CHECKING = {"false", "no", "off", "accept-new"}


def _check_ssh(spec: EngineSpec, p: _Parsed) -> None:
    """docker-py runs ``ssh -- HOST docker system dial-stdio`` with the
    user's OpenSSH configuration (quorum never uses its paramiko path,
    whose host-key policy is docker-py's to change).  Ask OpenSSH what it
    would do for this host and refuse a configuration that trusts a new
    host key on first sight: the builder's identity is its host key."""
    where = _where(spec)
    ssh = shutil.which("ssh")
    if ssh is None:
        raise InputError(f"{redact(spec.url)} needs the OpenSSH client: apt-get install openssh-client", **where)
    args = [ssh, "-G"]
    if p.user:
        args += ["-l", p.user]
    if p.port:
        args += ["-p", str(p.port)]
    assert p.host is not None
    try:
        out = subprocess.run([*args, "--", p.host], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InputError(f"{redact(spec.url)}: cannot ask ssh for its configuration ({type(e).__name__})",
                         **where) from None
    options = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        options[k.lower()] = v.strip().lower()
    if "stricthostkeychecking" not in options:
        raise InputError(f"{redact(spec.url)}: 'ssh -G' did not report StrictHostKeyChecking; "
                         "check the OpenSSH client and ~/.ssh/config", **where)
    if options["stricthostkeychecking"] in _UNSAFE_HOST_KEY_CHECKING:
        raise InputError(
            f"{redact(spec.url)}: OpenSSH is configured to accept an unknown host key for this host "
            f"(StrictHostKeyChecking {printable(options['stricthostkeychecking'])}), so a machine in the middle "
            "could pose as the builder; set StrictHostKeyChecking yes for it in ~/.ssh/config and add its host "
            "key to ~/.ssh/known_hosts after comparing the fingerprint", **where)


def docker_client_kwargs(spec: EngineSpec) -> dict[str, Any]:
    """Keyword arguments for docker.APIClient / docker.DockerClient.  TLS
    verifies the daemon's certificate against spec.tls.ca, never the system
    store and never not at all; ssh:// uses the OpenSSH client
    (use_ssh_client), so ~/.ssh/config, the agent and known_hosts apply."""
    kwargs: dict[str, Any] = {"base_url": spec.url}
    if spec.url.startswith("ssh://"):
        kwargs["use_ssh_client"] = True
    elif spec.tls is not None:
        ca = str(spec.tls.ca)
        kwargs["tls"] = _pinned_tls()(client_cert=(str(spec.tls.cert), str(spec.tls.key)), ca_cert=ca, verify=ca)
    return kwargs


@functools.cache
def _pinned_tls() -> type:
    """docker-py's TLSConfig, made to keep its CA.  docker-py hands the CA
    to a requests Session, and requests replaces a session's CA with
    $REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE when either is set (many
    machines set them to the system store): the builder would then be
    trusted on any public CA's word instead of the CA the user named.
    trust_env=False stops that (and, with it, proxies and .netrc from the
    environment, which the Docker API has no use for).  It is set while
    docker-py configures the client, before its first request."""
    import docker.tls

    class PinnedTLSConfig(docker.tls.TLSConfig):
        def configure_client(self, client: Any) -> None:
            super().configure_client(client)
            client.trust_env = False
            if not client.verify:       # never: verify is always the CA's path
                raise InputError("TLS without verification is never used")
    return PinnedTLSConfig


def describe(spec: EngineSpec) -> str:
    """One line for a person: name, URL (redacted), slots, labels."""
    labels = ",".join(f"{k}={v}" for k, v in spec.labels)
    shown = redact(spec.url)
    head = shown if spec.name == shown else f"{printable(spec.name)} ({shown})"
    return f"{head}, {spec.slots} slot{'s' if spec.slots != 1 else ''}" + (f", {labels}" if labels else "")

