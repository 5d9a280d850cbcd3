"""manifests/log.jsonl: the hash-chained transparency log of signings.

One canonical JSON object per line.  Each entry carries the hash of the one
before it and its own hash, so removing, reordering or editing any entry
breaks the chain at that line, and a verifier that remembers the head it
last accepted notices a log that was cut short or rewritten.  ``time`` is
the only wall-clock value quorum records anywhere; it never enters the
manifest.  See docs/spec/log.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import canon
from .errors import QuorumError
from .gpg import is_fingerprint
from .safeio import JSON_LIMIT, loads_json, read_regular

LOG_LIMIT = JSON_LIMIT

GENESIS = "0" * 64
# A signing of the manifest: the original entry, without a "kind" field.
FIELDS = ("hash", "manifest_sha256", "prev", "seq", "serial", "signature_sha256", "signer", "time", "tree")
# Policy events carry their kind.  A rotation installs a new version; an
# approval is one old maintainer's signature over it.
KIND_FIELDS = {
    "policy-rotate": ("hash", "kind", "policy_sha256", "policy_version", "prev", "seq", "time", "tree"),
    "policy-sign": ("hash", "kind", "policy_sha256", "policy_version", "prev", "seq", "signature_sha256",
                    "signer", "time", "tree"),
}
_INTS = ("seq", "serial", "policy_version")
_HEXES = ("hash", "manifest_sha256", "prev", "signature_sha256", "policy_sha256")
_HEXES_RE = re.compile(r"^[0-9a-f]{64}\Z")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


class LogError(QuorumError):
    """The log is malformed or its chain is broken."""


@dataclass(frozen=True)
class Head:
    seq: int          # 0 for an empty log
    hash: str


def entry_hash(entry: dict) -> str:
    """sha256 of the entry's canonical compact JSON without its own hash."""
    return canon.sha256_bytes(canon.dumps({k: v for k, v in entry.items() if k != "hash"}))


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """The inverse of ``timestamp``."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def read(path: Path) -> list[dict]:
    """All entries, each checked for shape and for its canonical spelling
    (one spelling per entry, so the file's bytes are fixed by its content)."""
    if not path.exists() and not path.is_symlink():
        return []
    # Bounded and checked: a FIFO here would hang verify, a huge file exhaust memory.
    data = read_regular(path, limit=LOG_LIMIT, error=LogError, what="log")
    if data and not data.endswith(b"\n"):
        raise LogError("the last line is not terminated (a torn write?)", file=path)
    return [_parse_line(line, path, i) for i, line in enumerate(data.split(b"\n")[:-1], start=1)]


def _parse_line(line: bytes, path: Path, lineno: int) -> dict:
    where = f"line {lineno}"
    try:
        e = loads_json(line.decode("utf-8"), file=path, error=LogError)
    except (UnicodeDecodeError, LogError):
        raise LogError("not a JSON object", file=path, field=where) from None
    if not isinstance(e, dict):
        raise LogError("not a JSON object", file=path, field=where)
    kind = e.get("kind")
    expected = FIELDS if kind is None else KIND_FIELDS.get(kind) if isinstance(kind, str) else None
    if expected is None:
        raise LogError(f"unknown kind {kind!r:.40} (known: {', '.join(KIND_FIELDS)})", file=path, field=where)
    if tuple(sorted(e)) != expected:
        raise LogError(f"expected exactly the fields {', '.join(expected)}", file=path, field=where)
    ok = (all(isinstance(e[k], int) and not isinstance(e[k], bool) for k in _INTS if k in e)
          and all(isinstance(e[k], str) and _HEXES_RE.match(e[k]) for k in _HEXES if k in e)
          and ("signer" not in e or (isinstance(e["signer"], str) and is_fingerprint(e["signer"])))
          and isinstance(e["time"], str) and _TIME.match(e["time"]) and isinstance(e["tree"], str))
    if not ok:
        raise LogError("a field has the wrong type or form", file=path, field=where)
    if canon.dumps(e) != line:
        raise LogError("not in canonical form (sorted keys, no spaces)", file=path, field=where)
    return e


def replay(entries: list[dict], path: Path | str = "log") -> Head:
    """Walk the chain from the start; -> the head.  Any gap, reordering or
    edit shows up as the first line whose seq, prev or hash is wrong."""
    prev = GENESIS
    for i, e in enumerate(entries, start=1):
        where = f"line {i}"
        if e["seq"] != i:
            raise LogError(f"seq is {e['seq']}, expected {i} (an entry was removed or reordered)",
                           file=path, field=where)
        if e["prev"] != prev:
            raise LogError("prev does not match the hash of the entry before (an entry was removed or altered)",
                           file=path, field=where)
        if entry_hash(e) != e["hash"]:
            raise LogError("hash does not match the entry's content (the entry was altered)",
                           file=path, field=where)
        prev = e["hash"]
    return Head(seq=len(entries), hash=prev)


def check_extends(entries: list[dict], known: Head, path: Path | str = "log") -> None:
    """The log must still contain the head this machine accepted before: a
    shorter log, or a different entry at that position, is history being
    rewritten."""
    if known.seq == 0:
        return
    if len(entries) < known.seq:
        raise LogError(f"has {len(entries)} entries, but this machine already accepted entry {known.seq} "
                       "(the log was cut short)", file=path)
    if entries[known.seq - 1]["hash"] != known.hash:
        raise LogError(f"entry {known.seq} differs from the one this machine accepted (the log was rewritten)",
                       file=path, field=f"line {known.seq}")


def append(path: Path, *, tree: str, serial: int, manifest_sha256: str, signer: str,
           signature_sha256: str, now: datetime) -> dict:
    """Append one signing to the log (refusing to extend a broken chain)."""
    return _append(path, now, {"tree": tree, "serial": serial, "manifest_sha256": manifest_sha256,
                               "signer": signer, "signature_sha256": signature_sha256})


def append_policy(path: Path, *, kind: str, tree: str, version: int, policy_sha256: str, now: datetime,
                  signer: str | None = None, signature_sha256: str | None = None) -> dict:
    """Append a policy event: ``policy-rotate`` (a new version installed)
    or ``policy-sign`` (an approval of it by ``signer``)."""
    fields: dict = {"kind": kind, "tree": tree, "policy_version": version, "policy_sha256": policy_sha256}
    if kind == "policy-sign":
        fields.update(signer=signer, signature_sha256=signature_sha256)
    return _append(path, now, fields)


def _append(path: Path, now: datetime, fields: dict) -> dict:
    entries = read(path)
    head = replay(entries, path)
    entry = {"seq": head.seq + 1, "time": timestamp(now), **fields, "prev": head.hash}
    entry["hash"] = entry_hash(entry)
    if tuple(sorted(entry)) != (KIND_FIELDS[entry["kind"]] if "kind" in entry else FIELDS):
        raise LogError(f"internal: entry fields {sorted(entry)}", file=path)
    # Every line was checked to be canonical, so this rewrites the old bytes
    # exactly and adds one line.
    canon.atomic_write(path, b"".join(canon.dumps(e) + b"\n" for e in entries + [entry]))
    return entry


def find(entries: list[dict], *, signer: str, signature_sha256: str, manifest_sha256: str) -> dict | None:
    for e in entries:
        # Only signings of the manifest: a policy approval by the same key
        # is not a signature of the manifest.
        if ("kind" not in e and e["signer"] == signer and e["signature_sha256"] == signature_sha256
                and e["manifest_sha256"] == manifest_sha256):
            return e
    return None
