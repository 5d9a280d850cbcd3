"""The GnuPG wrapper: status parsing per signature, key listing, homes."""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trust_keys import keyring  # noqa: E402,F401

from quorum.gpg import Home, is_fingerprint, parse_status  # noqa: E402

A = "A" * 40
B = "B" * 40


def test_each_newsig_block_is_its_own_verdict():
    # python-gnupg's Verify.valid would say True here (the last one is good)
    # and its sig_info would not even list the bad one.
    lines = ["[GNUPG:] NEWSIG", f"[GNUPG:] BADSIG {B[-16:]} Bob <b@x>",
             "[GNUPG:] NEWSIG", f"[GNUPG:] SIG_ID x 2026-01-01 1", f"[GNUPG:] GOODSIG {A[-16:]} Alice <a@x>",
             f"[GNUPG:] VALIDSIG {A} 2026-01-01 1 0 4 0 22 8 00 {A}"]
    sigs, plaintext, nodata = parse_status(lines)
    assert [s.status for s in sigs] == ["bad", "good"] and not plaintext and not nodata
    assert sigs[1].primary == A and sigs[1].hash_algo == "8" and sigs[1].uid == "Alice <a@x>"


def test_goodsig_without_validsig_never_counts():
    sigs, _, _ = parse_status(["[GNUPG:] NEWSIG", f"[GNUPG:] GOODSIG {A[-16:]} Alice"])
    assert sigs[0].status == "error"


def test_a_later_good_line_cannot_undo_a_bad_one():
    lines = ["[GNUPG:] NEWSIG", f"[GNUPG:] EXPKEYSIG {A[-16:]} Alice", f"[GNUPG:] GOODSIG {A[-16:]} Alice",
             f"[GNUPG:] VALIDSIG {A} 2026-01-01 1 0 4 0 22 8 00 {A}"]
    assert parse_status(lines)[0][0].status == "expired-key"


def test_subkey_signature_reports_its_primary():
    sigs, _, _ = parse_status(["[GNUPG:] NEWSIG", f"[GNUPG:] GOODSIG {B[-16:]} E",
                               f"[GNUPG:] VALIDSIG {B} 2026-01-01 1 0 4 0 22 10 00 {A}"])
    assert sigs[0].fingerprint == B and sigs[0].primary == A


def test_errsig_without_key():
    sigs, _, _ = parse_status(["[GNUPG:] NEWSIG", f"[GNUPG:] ERRSIG {A[-16:]} 22 8 00 1 9 {A}",
                               f"[GNUPG:] NO_PUBKEY {A[-16:]}"])
    assert sigs[0].status == "no-public-key" and sigs[0].fingerprint == A


def test_uid_is_percent_unescaped():
    sigs, _, _ = parse_status(["[GNUPG:] NEWSIG", f"[GNUPG:] GOODSIG {A[-16:]} Al%0Aice",
                               f"[GNUPG:] VALIDSIG {A} 2026-01-01 1 0 4 0 22 8 00 {A}"])
    assert sigs[0].uid == "Al\nice"


def test_fingerprint_form():
    assert is_fingerprint(A) and is_fingerprint("0" * 64)
    assert not is_fingerprint(A.lower()) and not is_fingerprint(A[:-1]) and not is_fingerprint(A + " ")


def test_show_keys_lists_primaries_and_subkeys(keyring):
    with Home.temporary() as h:
        keys = h.show_keys(keyring["erin"].public + keyring["alice"].public)
        assert [k.fingerprint for k in keys] == [keyring["erin"].fpr, keyring["alice"].fpr]
        assert keys[0].subkeys == (keyring["erin"].sub,) and keys[0].name == keyring["erin"].uid
        assert h.list_keys() == []            # show-keys imported nothing
        assert h.show_keys(b"garbage") == []


def test_temporary_home_is_short_private_and_removed():
    with Home.temporary() as h:
        path = h.path
        assert len(str(path)) < 30 and (os.stat(path).st_mode & 0o777) == 0o700
    assert not path.exists()


def test_verification_in_temporary_home(keyring):
    data = b"payload\n"
    sig, signer = keyring.home.sign(data, keyring["carol"].fpr)
    assert signer == keyring["carol"].fpr
    with Home.temporary() as h:
        assert h.verify_detached(sig, data).problem().startswith("made by key")   # no anchors yet
        h.import_keys(keyring["carol"].public)
        assert h.verify_detached(sig, data).problem() is None
        assert "BAD" in h.verify_detached(sig, data + b"x").problem()
