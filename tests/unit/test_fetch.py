"""The source cache: only pinned bytes get in."""
from __future__ import annotations

import hashlib
import os
import http.server
import threading

import pytest

from quorum.errors import FetchError
from quorum.fetch import SourceCache
from quorum.model import Source


def src(url: str, data: bytes, file="f.txt") -> Source:
    return Source(sha256=hashlib.sha256(data).hexdigest(), urls=(url,), file=file)


def test_file_url_fetched_and_cached(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"good")
    c = SourceCache(tmp_path / "cache")
    s = src(f"file://{tmp_path}/f.txt", b"good")
    p = c.fetch(s)
    assert p.read_bytes() == b"good" and p == c.path(s.sha256)
    (tmp_path / "f.txt").unlink()
    assert c.fetch(s) == p  # from the cache now


def test_mismatch_names_file_origin_hashes_and_caches_nothing(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"tampered")
    c = SourceCache(tmp_path / "cache")
    s = src(f"file://{tmp_path}/f.txt", b"good")
    with pytest.raises(FetchError) as ei:
        c.fetch(s, where="packages/x/package.yaml")
    msg = str(ei.value)
    assert "f.txt" in msg and f"file://{tmp_path}/f.txt: mismatch" in msg
    # The pin is named; the local file's own hash is not (a definition
    # pointing at file:///etc/shadow must not learn its digest).
    assert s.sha256 in msg and hashlib.sha256(b"tampered").hexdigest() not in msg and "other bytes" in msg
    assert "packages/x/package.yaml" in msg
    assert not c.has(s.sha256)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_tries_every_origin_in_order_on_a_cold_fetch(tmp_path):
    (tmp_path / "good.txt").write_bytes(b"good")
    (tmp_path / "mirror.txt").write_bytes(b"good")
    c = SourceCache(tmp_path / "cache")
    s = Source(sha256=hashlib.sha256(b"good").hexdigest(), file="f.txt",
               urls=(f"file://{tmp_path}/missing.txt", f"file://{tmp_path}/good.txt", f"file://{tmp_path}/mirror.txt"))
    events = []
    c.fetch(s, emit=events.append)
    assert [e["origin"].rsplit("/", 1)[1] for e in events] == ["missing.txt", "good.txt", "mirror.txt"]
    events.clear()
    c.fetch(s, emit=events.append)
    assert events == []     # cached now: no origin is asked again


def test_an_origin_contradicting_the_pin_stops_the_fetch_and_caches_nothing(tmp_path):
    (tmp_path / "good.txt").write_bytes(b"good")
    (tmp_path / "bad.txt").write_bytes(b"bad")
    c = SourceCache(tmp_path / "cache")
    s = Source(sha256=hashlib.sha256(b"good").hexdigest(), file="f.txt",
               urls=(f"file://{tmp_path}/good.txt", f"file://{tmp_path}/bad.txt"))
    with pytest.raises(FetchError, match="origins disagree") as ei:
        c.fetch(s)
    assert "bad.txt: mismatch" in str(ei.value) and "good.txt: ok" in str(ei.value)
    assert not c.has(s.sha256)


def test_http_origin_on_loopback(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"served")

    class H(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        c = SourceCache(tmp_path / "cache")
        p = c.fetch(src(f"http://127.0.0.1:{srv.server_address[1]}/f.txt", b"served"))
        assert p.read_bytes() == b"served"
    finally:
        srv.shutdown()


def test_all_origins_must_agree(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"same")
    (tmp_path / "b.txt").write_bytes(b"other")
    c = SourceCache(tmp_path / "cache")
    s = Source(sha256=hashlib.sha256(b"same").hexdigest(), file="f.txt",
               urls=(f"file://{tmp_path}/a.txt", f"file://{tmp_path}/b.txt"))
    with pytest.raises(FetchError, match="origins disagree"):
        c.fetch(s, all_origins=True)


def test_corrupted_cache_entry_is_found_and_replaced(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"good")
    c = SourceCache(tmp_path / "cache")
    s = src(f"file://{tmp_path}/f.txt", b"good")
    c.fetch(s)
    p = c.path(s.sha256)
    p.chmod(0o644)
    p.write_bytes(b"rotten")
    events = []
    assert c.fetch(s, verify=True, emit=events.append) == p
    assert p.read_bytes() == b"good"
    assert [e for e in events if e["event"] == "cache-corrupt"]


def test_corrupted_cache_entry_is_not_kept_by_all_origins(tmp_path):
    (tmp_path / "f.txt").write_bytes(b"good")
    c = SourceCache(tmp_path / "cache")
    s = src(f"file://{tmp_path}/f.txt", b"good")
    c.fetch(s)
    c.path(s.sha256).chmod(0o644)
    c.path(s.sha256).write_bytes(b"rotten")
    assert c.fetch(s, all_origins=True).read_bytes() == b"good"


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "dir"])
def test_file_urls_must_be_regular_files(tmp_path, target):
    from quorum.fetch import _download
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    elif target == "dir":
        target = str(tmp_path)
    with pytest.raises(FetchError):
        _download(f"file://{target}", tmp_path / "out")


def test_downloads_are_bounded_and_redirects_keep_the_scheme(tmp_path):
    import http.server
    import threading
    from quorum.fetch import _download

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "https://127.0.0.1:1/x")
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1000):          # "endless", but bounded for the test
                    self.wfile.write(b"z" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        with pytest.raises(FetchError, match="more than 100000 bytes"):
            _download(base + "/endless", tmp_path / "a", limit=100_000)
        with pytest.raises(FetchError, match="redirected from http: to https:"):
            _download(base + "/redirect", tmp_path / "b")
    finally:
        srv.shutdown()
