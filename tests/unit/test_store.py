from __future__ import annotations

import io
import tarfile

from quorum import oci
from quorum.store import Record, Store

EPOCH = 1700000000


def staged_layout(store: Store, st, content: bytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("f")
        ti.size = len(content)
        tf.addfile(ti, io.BytesIO(content))
    lf = st / "layer.tar"
    with open(lf, "wb") as fh:
        info = oci.normalize_layer(io.BytesIO(buf.getvalue()), fh, epoch=EPOCH)
    return oci.write_layout(st / "layout", lf, info, epoch=EPOCH, name="p", version="1", namespace="ns")


def rec(img, ih="sha256:" + "1" * 64):
    return Record(name="p", kind="package", version="1", digest=img.digest, config_digest=img.config_digest,
                  layer_digest=img.layer.digest, input_hash=ih, size=img.size)


def test_publish_then_lookup(tmp_path):
    s = Store(tmp_path / "out")
    with s.staging("p") as st:
        img = staged_layout(s, st, b"one")
        s.publish(st / "layout", rec(img))
    assert s.lookup("p", "sha256:" + "1" * 64).digest == img.digest
    assert s.lookup("p", "sha256:" + "2" * 64) is None
    assert not list((tmp_path / "out" / ".tmp").iterdir())


def test_record_not_matching_layout_is_not_trusted(tmp_path):
    """A crash after the layout moved but before its record: the old record
    names another digest, so nothing counts as done."""
    s = Store(tmp_path / "out")
    with s.staging("p") as st:
        img1 = staged_layout(s, st, b"one")
        s.publish(st / "layout", rec(img1))
    with s.staging("p") as st:
        img2 = staged_layout(s, st, b"two")
        # simulate the crash: layout replaced, record still the old one
        import os
        os.replace(s.layout("p"), st / "old")
        os.replace(st / "layout", s.layout("p"))
    assert img1.digest != img2.digest
    assert s.lookup("p", "sha256:" + "1" * 64) is None


def test_staging_is_removed_even_on_error(tmp_path):
    s = Store(tmp_path / "out")
    try:
        with s.staging("p") as st:
            (st / "partial").write_text("x")
            raise RuntimeError("killed")
    except RuntimeError:
        pass
    assert not list((tmp_path / "out" / ".tmp").iterdir())


def test_lock_excludes_a_second_writer(tmp_path):
    import pytest
    from quorum.errors import QuorumError
    s = Store(tmp_path / "out")
    with s.lock():
        with pytest.raises(QuorumError, match="another quorum process"):
            with Store(tmp_path / "out").lock():
                pass


def test_a_held_lock_names_its_file_and_holder_and_exits_3(tmp_path):
    import os
    import pytest
    from quorum.errors import LockedError
    s = Store(tmp_path / "out")
    with s.lock():
        with pytest.raises(LockedError) as e:
            with Store(tmp_path / "out").lock():
                pass
    assert e.value.exit_code == 3
    assert str(tmp_path / "out" / ".quorum" / "lock") in str(e.value) and f"PID {os.getpid()}" in str(e.value)
    with Store(tmp_path / "out").lock():    # released at the end of the block
        pass


def test_keep_while_holds_the_lock_until_the_last_worker_stops(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    import pytest
    from quorum.errors import LockedError
    go = threading.Event()
    pool = ThreadPoolExecutor(1)
    fut = pool.submit(go.wait)
    with Store(tmp_path / "out").lock() as held:
        held.keep_while([fut])
    with pytest.raises(LockedError):          # the worker still runs: still held
        with Store(tmp_path / "out").lock():
            pass
    go.set()
    fut.result()
    pool.shutdown()
    with Store(tmp_path / "out").lock():
        pass
