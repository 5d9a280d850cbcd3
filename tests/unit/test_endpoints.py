"""Engine endpoints (docs/spec/engines.md): the --engine grammar, the
engines: lists, their precedence, and the transport rules.  Hostile input
gives one error naming where it came from, and no credential ever appears
in an error."""
from __future__ import annotations

import os
import shutil
import stat
import textwrap
import threading
from pathlib import Path

import docker
import pytest

from quorum import endpoints
from quorum.endpoints import (EngineSpec, TLSFiles, check_transport, docker_client_kwargs, load_specs,
                              parse_engine_arg, redact)
from quorum.errors import DefinitionError, InputError, QuorumError
from quorum.tree import load_config

SECRET = "s3cr3tPW"


def error_of(fn, *args, **kw) -> str:
    with pytest.raises(QuorumError) as ei:
        fn(*args, **kw)
    text = str(ei.value)
    assert "\n" not in text
    return text


# --- the --engine flag --------------------------------------------------------

def test_flag_with_every_option():
    s = parse_engine_arg("tcp://10.0.0.2:2376,slots=4,label=os=linux,label=cpu=amd,name=b2,tls=certs",
                         cwd=Path("/home/me"))
    assert s == EngineSpec(url="tcp://10.0.0.2:2376", name="b2", slots=4, labels=(("cpu", "amd"), ("os", "linux")),
                           tls=TLSFiles(ca=Path("/home/me/certs/ca.pem"), cert=Path("/home/me/certs/cert.pem"),
                                        key=Path("/home/me/certs/key.pem")))
    assert s.label("cpu") == "amd" and s.label("gpu") is None


@pytest.mark.parametrize("url", ["unix:///var/run/docker.sock", "tcp://builder-2.example:2376", "tcp://[fd00::2]:2376",
                                 "ssh://builder", "ssh://me@builder:2222", "ssh://me@[fd00::2]:22"])
def test_flag_urls_accepted(url):
    s = parse_engine_arg(url)
    assert (s.url, s.name, s.slots, s.labels, s.tls) == (url, url, 1, (), None)


@pytest.mark.parametrize("text, says", [
    ("", "expected URL"),
    ("unix:///tmp/a b", "white space"),
    ("unix:///tmp/a\nb", "white space"),
    ("tcp://h:2376,slots=2\n", "white space"),
    ("tcp://h:2376\t", "white space"),
    ("http://h:2376", "not an engine URL"),
    ("h:2376", "not an engine URL"),
    ("unix://var/run/docker.sock", "three slashes"),
    ("unix:///run/../etc/sock", "no '..'"),
    ("unix:///" + "a" * 200, "at most 107"),
    ("tcp://h", "give the port"),
    ("tcp://h:0", "1 to 65535"),
    ("tcp://h:99999", "1 to 65535"),
    ("tcp://h:23x", "1 to 65535"),
    ("tcp://h:2376/v1.41", "no path"),
    ("tcp://-h:2376", "host name"),
    ("tcp://h;reboot:2376", "host name"),
    ("tcp://[fd00::zz]:2376", "not an IPv6 address"),
    ("ssh://-oProxyCommand=touch@h", "plain login name"),
    ("ssh://h/home", "no path"),
    ("tcp://h:1,slots=0", "between 1 and 256"),
    ("tcp://h:1,slots=257", "between 1 and 256"),
    ("tcp://h:1,slots=99999999999999999999", "whole number"),
    ("tcp://h:1,slots=1_0", "whole number"),
    ("tcp://h:1,slots=+2", "whole number"),
    ("tcp://h:1,slots=2.0", "whole number"),
    ("tcp://h:1,slots=\u0663", "whole number"),          # an Arabic-Indic 3: int() would take it
    ("tcp://h:1,slots=", "whole number"),
    ("tcp://h:1,slots=2,slots=3", "given twice"),
    ("tcp://h:1,label=cpu", "KEY=VALUE"),
    ("tcp://h:1,label=cpu=a=b", "KEY=VALUE"),           # a value cannot smuggle another "="
    ("tcp://h:1,label=cpu=amd;rm", "KEY=VALUE"),
    ("tcp://h:1,label=CPU=amd", "KEY=VALUE"),
    ("tcp://h:1,label=cpu=amd,label=cpu=intel", "given twice"),
    ("tcp://h:1,name=../x", "name="),
    ("tcp://h:1,bogus=1", "unknown option"),
    ("tcp://h:1,slots", "KEY=VALUE options"),
    ("tcp://h:1,,slots=1", "KEY=VALUE options"),
    ("unix:///s,tls=/certs", "tcp:// engines only"),
    ("ssh://h,tls=/certs", "tcp:// engines only"),
    ("tcp://h:1,tls=", "folder holding"),
])
def test_flag_refused(text, says):
    with pytest.raises(InputError) as ei:
        parse_engine_arg(text)
    assert ei.value.field == "--engine"
    assert says in str(ei.value) and "\n" not in str(ei.value)


# Every way a credential can sit in a URL, including ones that break the
# URL's syntax (a "," or "/" in a password), and ones followed by options
# that are themselves wrong.
CREDENTIAL_URLS = [
    f"tcp://admin:{SECRET}@h:2376", f"tcp://{SECRET}@h:2376", f"tcp://admin:{SECRET}@h:2376,slots=2",
    f"tcp://admin:{SECRET[:3]},{SECRET[3:]}@h:2376", f"tcp://admin:{SECRET[:3]}/{SECRET[3:]}@h:2376,slots=x",
    f"tcp://admin:{SECRET[:3]},{SECRET[3:]}@h:2376,bogus", f"ssh://me:{SECRET}@h", f"ssh://me:{SECRET}@h:22,slots=0",
    f"tcp://h:2376?token={SECRET}", f"tcp://h:2376#{SECRET}", f"tcp://h:2376/?access_token={SECRET},slots=2",
    f"tcp://admin:{SECRET}@h", f"tcp://admin:{SECRET}@h:2376,label=a", f"unix:///s?{SECRET}",
    f"tcp://admin:{SECRET}@h :2376", f"tcp://admin:{SECRET}@h\n:2376",
]


def _no_secret(text: str) -> None:
    # Not even a piece of it: a password split at a "," must not leak its tail.
    for part in (SECRET, SECRET[:3], SECRET[3:]):
        assert part not in text, text


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
def test_no_credential_in_any_error(url, tmp_path):
    _no_secret(error_of(parse_engine_arg, url))
    # The same URL in a file, and in DOCKER_HOST.
    (tmp_path / "quorum.yaml").write_text(f"name: t\nengines:\n  - url: {url!r}\n")
    _no_secret(error_of(load_config, tmp_path))
    _no_secret(error_of(endpoints.local_spec, {"DOCKER_HOST": url}))


def test_no_credential_from_check_transport():
    # A spec made by hand (not through the parser) is still checked, and
    # still redacted.
    spec = EngineSpec(url=f"tcp://admin:{SECRET}@10.0.0.2:2376", name="b")
    _no_secret(error_of(check_transport, spec))


@pytest.mark.parametrize("url, shown", [
    (f"tcp://admin:{SECRET}@h:2376", "tcp://***@h:2376"),
    (f"tcp://{SECRET}@h:2376", "tcp://***@h:2376"),
    (f"tcp://a:{SECRET[:3]}/{SECRET[3:]}@h:2376", "tcp://***@h:2376"),
    (f"ssh://me:{SECRET}@h", "ssh://***@h"),
    ("ssh://me@h:22", "ssh://me@h:22"),
    (f"https://{SECRET}@example.org/x?y", "https://***@example.org/x?***"),
    (f"tcp://h:2376?t={SECRET}", "tcp://h:2376?***"),
    (f"tcp://h:2376#{SECRET}", "tcp://h:2376#***"),
    (f"admin:{SECRET}@h", "***@h"),
    ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ("tcp://h:1\x1b[2J", "tcp://h:1\\x1b[2J"),          # a terminal escape cannot reach the screen
    ("tcp://[::1", "tcp://[::1"),
])
def test_redact(url, shown):
    assert redact(url) == shown


# --- engines: in quorum.yaml and engines.yaml ---------------------------------

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_quorum_yaml_engines(tmp_path):
    write(tmp_path / "quorum.yaml", """\
        name: t
        engines:
          - url: tcp://10.0.0.2:2376
            name: b2
            slots: 3
            labels: {cpu: amd, gen: 3}
            tls: {ca: certs/ca.pem, cert: /etc/q/cert.pem, key: ~/key.pem}
          - url: unix:///var/run/docker.sock
        """)
    b2, local = load_config(tmp_path).engines
    assert (b2.name, b2.slots, b2.labels) == ("b2", 3, (("cpu", "amd"), ("gen", "3")))
    # Relative paths are the tree's; ~ is the user's home.
    assert b2.tls == TLSFiles(ca=tmp_path.resolve() / "certs/ca.pem", cert=Path("/etc/q/cert.pem"),
                              key=Path("~/key.pem").expanduser())
    assert (local.name, local.slots, local.tls) == ("unix:///var/run/docker.sock", 1, None)
    assert b2.origin == (str(tmp_path.resolve() / "quorum.yaml"), "engines[0]")


@pytest.mark.parametrize("engines, field, says", [
    ("[]", "engines", "lists no engine"),
    ("{url: unix:///s}", "engines", "expected a list"),
    ("[unix:///s]", "engines[0]", "expected a mapping"),
    ("[{name: x}]", "engines[0].url", "required"),
    ("[{url: 'tcp://h'}]", "engines[0].url", "give the port"),
    ("[{url: 'unix:///s', slots: true}]", "engines[0].slots", "expected a whole number"),
    ("[{url: 'unix:///s', slots: 0}]", "engines[0].slots", "between 1 and"),
    ("[{url: 'unix:///s', slots: 100000000000000000000000}]", "engines[0].slots", "out of range"),
    ("[{url: 'unix:///s', slot: 2}]", "engines[0].slot", "unknown field (did you mean 'slots'?)"),
    ("[{url: 'unix:///s', labels: {cpu: [amd]}}]", "engines[0].labels.cpu", "label value"),
    ("[{url: 'unix:///s', labels: {'a b': x}}]", "engines[0].labels.a b", "label key"),
    ("[{url: 'unix:///s', labels: {cpu: \"amd\\nx\"}}]", "engines[0].labels.cpu", "label value"),
    ("[{url: 'unix:///s', tls: {ca: a, cert: b, key: c}}]", "engines[0].tls", "tcp:// engines only"),
    ("[{url: 'tcp://h:1', tls: {ca: a, cert: b}}]", "engines[0].tls.key", "required"),
    ("[{url: 'tcp://h:1', tls: {ca: a, cert: b, key: c, pass: d}}]", "engines[0].tls.pass", "unknown field"),
    ("[{url: 'tcp://h:1', tls: {ca: a, cert: b, key: \"c\\n\"}}]", "engines[0].tls.key", "file path"),
    ("[{url: 'unix:///s'}, {url: 'unix:///s'}]", "engines", "listed twice"),
    ("[{url: 'unix:///s', name: a}, {url: 'unix:///t', name: a}]", "engines", "used twice"),
])
def test_quorum_yaml_engines_refused(tmp_path, engines, field, says):
    write(tmp_path / "quorum.yaml", f"name: t\nengines: {engines}\n")
    with pytest.raises(DefinitionError) as ei:
        load_config(tmp_path)
    e = ei.value
    assert (e.file, e.field) == (str(tmp_path.resolve() / "quorum.yaml"), field), str(e)
    assert says in e.message


def test_hardened_yaml_loader_is_the_trees(tmp_path):
    """engines.yaml is read like every tree file: duplicate keys and
    anchors/aliases are refused."""
    cfg = write(tmp_path / "c" / "quorum" / "engines.yaml",
                "engines:\n  - url: unix:///s\n    slots: 1\n    slots: 9\n")
    assert "duplicate key" in error_of(endpoints.load_user_config, cfg)
    write(cfg, "engines:\n  - &e {url: 'unix:///s'}\n  - *e\n")
    assert "anchors" in error_of(endpoints.load_user_config, cfg)
    write(cfg, "engines: [{url: 'unix:///s'}]\nextra: 1\n")
    assert "extra: unknown field" in error_of(endpoints.load_user_config, cfg)


def test_user_config_symlink_and_fifo_refused(tmp_path):
    real = write(tmp_path / "real.yaml", "engines: [{url: 'unix:///s'}]\n")
    cfg = tmp_path / "c" / "quorum" / "engines.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.symlink_to(real)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c")}
    assert "symbolic link" in error_of(load_specs, tree_without_engines(tmp_path), [], env=env)
    cfg.unlink()
    cfg.symlink_to(tmp_path / "gone.yaml")                # dangling: reported, not taken for "no file"
    assert "symbolic link" in error_of(load_specs, tree_without_engines(tmp_path), [], env=env)
    cfg.unlink()
    os.mkfifo(cfg)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(error_of(load_specs, tree_without_engines(tmp_path), [],
                                                               env=env)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert "named pipe" in result[0] and str(cfg) in result[0]


def tree_without_engines(tmp_path: Path) -> Path:
    write(tmp_path / "tree" / "quorum.yaml", "name: t\n")
    return tmp_path / "tree"


# --- precedence ------------------------------------------------------------------

def test_precedence(tmp_path):
    tree = tree_without_engines(tmp_path)
    xdg = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path / "home"), "DOCKER_HOST": "unix:///run/d.sock"}
    # Nothing listed anywhere: the local engine as today, from DOCKER_HOST.
    assert [s.url for s in load_specs(tree, [], env=env)] == ["unix:///run/d.sock"]
    assert [s.url for s in load_specs(tree, [], env={"HOME": "/nonexistent"})] == ["unix:///var/run/docker.sock"]
    # The user's engines.yaml; relative TLS paths are its folder's.
    write(xdg / "quorum" / "engines.yaml", """\
        engines:
          - {url: 'tcp://10.0.0.9:2376', tls: {ca: ca.pem, cert: cert.pem, key: key.pem}, slots: 2}
        """)
    (user,) = load_specs(tree, [], env=env)
    assert (user.url, user.slots, user.tls.ca) == ("tcp://10.0.0.9:2376", 2, xdg / "quorum" / "ca.pem")
    # A relative XDG_CONFIG_HOME is ignored (the XDG rule): ~/.config instead.
    write(tmp_path / "home" / ".config" / "quorum" / "engines.yaml", "engines: [{url: 'unix:///home.sock'}]\n")
    assert [s.url for s in load_specs(tree, [], env=dict(env, XDG_CONFIG_HOME="rel"))] == ["unix:///home.sock"]
    # The tree's list wins over the user's (a tree's CI names its builders)...
    write(tree / "quorum.yaml", "name: t\nengines: [{url: 'unix:///tree.sock'}]\n")
    assert [s.url for s in load_specs(tree, [], env=env)] == ["unix:///tree.sock"]
    # ...and flags win over both; lists are never merged.
    specs = load_specs(tree, ["unix:///a.sock,slots=2", "ssh://me@b"], env=env)
    assert [(s.url, s.slots) for s in specs] == [("unix:///a.sock", 2), ("ssh://me@b", 1)]
    assert "listed twice" in error_of(load_specs, tree, ["unix:///a.sock", "unix:///a.sock,slots=2"], env=env)


def test_local_engine_tls_from_docker_environment(tmp_path):
    env = {"DOCKER_HOST": "tcp://10.0.0.3:2376", "DOCKER_CERT_PATH": str(tmp_path)}
    s = endpoints.local_spec(env)
    # docker-py's from_env would use TLS without verification here (no
    # DOCKER_TLS_VERIFY); quorum always verifies.
    assert s.tls == TLSFiles(ca=tmp_path / "ca.pem", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    s = endpoints.local_spec({"DOCKER_HOST": "tcp://10.0.0.3:2376", "DOCKER_TLS_VERIFY": "1", "HOME": "/h"})
    assert s.tls is not None and s.tls.ca == Path("/h/.docker/ca.pem")
    e = error_of(endpoints.local_spec, {"DOCKER_HOST": "tcp://10.0.0.3"})
    assert e.startswith("DOCKER_HOST: ")


# --- transport rules -------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "[::1]", "localhost", "[::ffff:127.0.0.1]"])
def test_plain_tcp_allowed_on_loopback(host):
    check_transport(parse_engine_arg(f"tcp://{host}:2375"))


@pytest.mark.parametrize("host", ["10.0.0.2", "192.168.1.5", "builder", "[fd00::1]", "127.1", "localhost.example",
                                  "0.0.0.0"])
def test_plain_tcp_refused_elsewhere_saying_why(host):
    e = error_of(check_transport, parse_engine_arg(f"tcp://{host}:2375"))
    assert e.startswith("--engine: ") and "has no TLS" in e and "root on that machine" in e
    assert "tls=DIR" in e and "ssh://" in e


def tls_dir(d: Path, key_mode: int = 0o600) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in ("ca.pem", "cert.pem", "key.pem"):
        (d / n).write_text("not checked here\n")
    (d / "key.pem").chmod(key_mode)
    return d


def test_tls_files_checked(tmp_path):
    d = tls_dir(tmp_path / "certs")
    spec = parse_engine_arg(f"tcp://10.0.0.2:2376,tls={d}")
    check_transport(spec)
    (d / "key.pem").chmod(0o640)
    e = error_of(check_transport, spec)
    assert "readable by other users (mode 0640)" in e and f"chmod 600 {d / 'key.pem'}" in e
    (d / "key.pem").chmod(0o600)
    (d / "ca.pem").unlink()
    assert f"TLS ca file {d / 'ca.pem'} not found" in error_of(check_transport, spec)
    os.mkfifo(d / "ca.pem")                                # would block the TLS library's read
    assert "not a regular file" in error_of(check_transport, spec)
    (d / "ca.pem").unlink()
    (d / "ca.pem").mkdir()
    assert "not a regular file" in error_of(check_transport, spec)


def test_tls_error_names_yaml_file_and_field(tmp_path):
    tls_dir(tmp_path / "certs", key_mode=0o644)
    write(tmp_path / "quorum.yaml", "name: t\nengines:\n  - url: tcp://10.0.0.2:2376\n"
                                    "    tls: {ca: certs/ca.pem, cert: certs/cert.pem, key: certs/key.pem}\n")
    (spec,) = load_config(tmp_path).engines
    with pytest.raises(InputError) as ei:
        check_transport(spec)
    assert (ei.value.file, ei.value.field) == (str(tmp_path.resolve() / "quorum.yaml"), "engines[0].tls.key")


def fake_ssh(tmp_path: Path, monkeypatch, config: str) -> None:
    """OpenSSH itself, reading a config of the test's (ssh reads the real
    user's ~/.ssh/config from the password database, not from $HOME)."""
    real = shutil.which("ssh")
    if real is None:
        pytest.fail("ssh is not installed: run tools/setup-test-deps (as root), or apt-get install openssh-client",
                    pytrace=False)
    cfg = write(tmp_path / "ssh_config", config)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec {real} -F {cfg} "$@"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.parametrize("setting", ["no", "accept-new", "off"])
def test_ssh_refused_when_it_would_accept_an_unknown_host_key(tmp_path, monkeypatch, setting):
    fake_ssh(tmp_path, monkeypatch, f"Host builder\n  StrictHostKeyChecking {setting}\n")
    e = error_of(check_transport, parse_engine_arg("ssh://me@builder:2222"))
    assert "accept an unknown host key" in e and "StrictHostKeyChecking yes" in e
    # Another host, under OpenSSH's default ("ask": never accepted silently).
    check_transport(parse_engine_arg("ssh://me@other"))


def test_ssh_allowed_with_strict_host_keys(tmp_path, monkeypatch):
    fake_ssh(tmp_path, monkeypatch, "Host *\n  StrictHostKeyChecking yes\n")
    spec = parse_engine_arg("ssh://me@builder")
    check_transport(spec)
    # docker-py hands the connection to OpenSSH (its known_hosts, agent and
    # config), never to its paramiko path.
    assert docker_client_kwargs(spec) == {"base_url": "ssh://me@builder", "use_ssh_client": True}


def test_ssh_without_openssh_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "apt-get install openssh-client" in error_of(check_transport, parse_engine_arg("ssh://b"))


def test_client_kwargs_verify_against_the_named_ca_only(tmp_path, monkeypatch):
    d = tls_dir(tmp_path / "certs")
    spec = parse_engine_arg(f"tcp://10.0.0.2:2376,tls={d}")
    kw = docker_client_kwargs(spec)
    assert kw["base_url"] == "tcp://10.0.0.2:2376" and kw["tls"].verify == str(d / "ca.pem")
    # A real client (a fixed API version: no request is made here).  requests
    # would swap its CA for $REQUESTS_CA_BUNDLE unless told not to trust the
    # environment; the integration test shows it on a live daemon.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    client = docker.APIClient(version="1.41", **kw)
    assert client.verify == str(d / "ca.pem") and client.trust_env is False
    assert client.cert == (str(d / "cert.pem"), str(d / "key.pem"))
    assert client.base_url == "https://10.0.0.2:2376"
    assert docker_client_kwargs(parse_engine_arg("unix:///s")) == {"base_url": "unix:///s"}
    assert docker_client_kwargs(parse_engine_arg("tcp://127.0.0.1:2375")) == {"base_url": "tcp://127.0.0.1:2375"}


def test_describe_is_one_redacted_line():
    s = parse_engine_arg("tcp://10.0.0.2:2376,slots=2,label=cpu=amd,name=b2")
    assert endpoints.describe(s) == "b2 (tcp://10.0.0.2:2376), 2 slots, cpu=amd"
