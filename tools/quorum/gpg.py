"""GnuPG, and only GnuPG: homes, keys, signing, verifying.

Two kinds of home exist here and they never mix:

* the *user's* home (``Home.user()``), used only to sign, so that the user's
  gpg-agent, pinentry, passphrase cache and hardware tokens work as usual;
* *throwaway* homes (``Home.temporary()``), used for everything that decides
  trust.  They hold only keys quorum imported on purpose, read no gpg.conf,
  fetch no keys, and use ``--trust-model always``: GnuPG's web of trust and
  its trust database must never decide whether a quorum signature counts —
  the policy does.  They live under /tmp with a short name because gpg-agent
  puts its socket inside the home and a Unix socket path is limited to
  ~108 bytes (a long $TMPDIR would break agent start-up).

Signing goes through python-gnupg.  Verification parses GnuPG's status lines
itself, one block per ``NEWSIG``: python-gnupg's ``Verify.valid`` reflects
only the last signature seen and its ``sig_info`` drops bad signatures (no
SIG_ID), so a file with one good and one bad signature — or two signatures
by one key — would be misread.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import gnupg

from . import temps
from .errors import QuorumError

GPG = shutil.which("gpg") or "gpg"
GPGCONF = shutil.which("gpgconf") or "gpgconf"

# The short parent for throwaway homes (see the module docstring).
SHORT_TMP = "/tmp"

# Hash algorithms (RFC 4880 ids) whose collisions are practical or close:
# a signature over a SHA-1 digest can be transplanted to other bytes with the
# same digest, so it does not bind the manifest.
WEAK_HASHES = {"1": "MD5", "2": "SHA1", "3": "RIPEMD160", "11": "SHA224"}
HASH_NAMES = {**WEAK_HASHES, "8": "SHA256", "9": "SHA384", "10": "SHA512", "12": "SHA3-256", "14": "SHA3-512"}

# Options for every throwaway home.  --no-options: no gpg.conf can switch
# anything back on; no key is ever fetched or imported from a signature
# (an attacker could embed his key in the signature he made).
_TEMP_OPTIONS = ["--no-options", "--trust-model", "always", "--no-auto-key-retrieve",
                 "--no-auto-key-import", "--no-auto-key-locate", "--no-random-seed-file"]


class GpgError(QuorumError):
    """GnuPG is missing, or failed in a way that is not a verdict."""


@dataclass(frozen=True)
class KeyPart:
    """The primary key or one subkey, as ``--with-colons`` describes it."""
    fingerprint: str
    algo: int                         # RFC 4880 public-key algorithm id
    bits: int
    curve: str                        # "" for RSA/DSA
    capabilities: str                 # e.g. "sc"; "s" = may sign
    validity: str                     # "r" revoked, "e" expired, else usable as far as GnuPG knows
    expires: int | None = None        # seconds since 1970

    @property
    def can_sign(self) -> bool:
        return "s" in self.capabilities.lower()

    @property
    def usable(self) -> bool:
        return self.validity not in ("r", "e")


@dataclass(frozen=True)
class KeyInfo:
    """One public key as listed by ``--show-keys``."""
    fingerprint: str                  # the primary key's
    uids: tuple[str, ...]
    subkeys: tuple[str, ...]          # fingerprints
    has_secret: bool = False
    parts: tuple[KeyPart, ...] = ()   # the primary first, then the subkeys
    revoked_at: int | None = None     # the primary's revocation date, when revoked

    @property
    def name(self) -> str:
        return self.uids[0] if self.uids else ""

    @property
    def primary(self) -> KeyPart | None:
        return self.parts[0] if self.parts else None

    @property
    def revoked(self) -> bool:
        return self.primary is not None and self.primary.validity == "r"

    @property
    def expired(self) -> bool:
        return self.primary is not None and self.primary.validity == "e"


@dataclass(frozen=True)
class SigResult:
    """One signature out of GnuPG's status lines (one NEWSIG block)."""
    status: str                   # good | bad | expired-signature | expired-key | revoked-key | no-public-key | error
    key_id: str | None = None
    fingerprint: str | None = None    # the key that made it (may be a subkey)
    primary: str | None = None        # that key's primary key
    created: int | None = None        # seconds since 1970
    hash_algo: str | None = None
    sig_class: str | None = None
    uid: str | None = None

    @property
    def good(self) -> bool:
        return self.status == "good"


@dataclass(frozen=True)
class Verification:
    """Everything one ``gpg --verify`` said."""
    signatures: tuple[SigResult, ...]
    returncode: int
    plaintext: bool               # literal data where none belongs (a "detached" signature carrying data)
    nodata: bool                  # GnuPG found no OpenPGP data at all
    stderr: str

    def problem(self) -> str | None:
        """Why this cannot be exactly one good signature, or None."""
        if self.plaintext:
            return "not a detached signature (it carries signed data of its own)"
        if self.nodata and not self.signatures:
            return "not an OpenPGP signature (malformed armor or data)"
        if not self.signatures:
            return f"no signature found ({_last_line(self.stderr)})"
        if len(self.signatures) != 1:
            return f"holds {len(self.signatures)} signatures; exactly one is allowed per file"
        s = self.signatures[0]
        if not s.good:
            return {"bad": "BAD signature: it does not match these bytes",
                    "expired-signature": "the signature has expired",
                    "expired-key": "made by an expired key",
                    "revoked-key": "made by a revoked key",
                    "no-public-key": f"made by key {s.fingerprint or s.key_id}, which is not an anchor",
                    }.get(s.status, f"could not be checked ({_last_line(self.stderr)})")
        if self.returncode != 0:
            return f"gpg exited {self.returncode} ({_last_line(self.stderr)})"
        if s.hash_algo in WEAK_HASHES:
            return f"uses the weak hash {WEAK_HASHES[s.hash_algo]}"
        return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "no message"


def parse_status(lines: list[str]) -> tuple[list[SigResult], bool, bool]:
    """Status lines of a verification -> (signatures, plaintext seen, NODATA seen).

    Each NEWSIG starts a new signature; within it the result keyword decides
    the status, and VALIDSIG (only ever sent for a cryptographically good
    signature) supplies fingerprints, hash algorithm and class."""
    sigs: list[dict] = []
    plaintext = nodata = False
    for line in lines:
        if not line.startswith("[GNUPG:] "):
            continue
        kw, _, rest = line[9:].partition(" ")
        parts = rest.split()
        if kw == "NEWSIG":
            sigs.append({"status": None})
        elif kw == "PLAINTEXT":
            plaintext = True
        elif kw == "NODATA":
            nodata = True
        elif kw in _RESULT_KEYWORDS and sigs:
            cur = sigs[-1]
            # A bad verdict is never overwritten by a later good one.
            if cur["status"] in (None, "good"):
                cur["status"] = _RESULT_KEYWORDS[kw]
            if parts:
                cur.setdefault("key_id", parts[0])
            if kw in ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG") and len(parts) > 1:
                cur["uid"] = unquote(rest.split(" ", 1)[1])
            if kw == "ERRSIG":
                cur["status"] = "no-public-key" if len(parts) > 5 and parts[5] == "9" else "error"
                if len(parts) > 6 and parts[6] != "-":
                    cur["fingerprint"] = parts[6]
        elif kw == "VALIDSIG" and sigs and len(parts) >= 10:
            sigs[-1].update(fingerprint=parts[0], created=int(parts[2]) if parts[2].isdigit() else None,
                            hash_algo=parts[7], sig_class=parts[8], primary=parts[9], valid=True)
    out = []
    for s in sigs:
        status = s.get("status") or "error"
        if status == "good" and not s.get("valid"):
            status = "error"      # GOODSIG without VALIDSIG: never count it
        out.append(SigResult(status=status, key_id=s.get("key_id"), fingerprint=s.get("fingerprint"),
                             primary=s.get("primary"), created=s.get("created"), hash_algo=s.get("hash_algo"),
                             sig_class=s.get("sig_class"), uid=s.get("uid")))
    return out, plaintext, nodata


_RESULT_KEYWORDS = {"GOODSIG": "good", "BADSIG": "bad", "EXPSIG": "expired-signature",
                    "EXPKEYSIG": "expired-key", "REVKEYSIG": "revoked-key", "ERRSIG": "error"}


def parse_show_keys(text: str) -> list[KeyInfo]:
    """``--with-colons --show-keys`` output -> keys (primary + subkeys).
    With ``--with-sig-list`` the primary's self-revocation (``rev`` record,
    class 20) supplies the date it was revoked."""
    keys: list[dict] = []
    last = None
    for line in text.splitlines():
        f = line.split(":")
        rec = f[0]
        if rec in ("pub", "sec", "sub", "ssb"):
            if rec in ("pub", "sec"):
                keys.append({"fpr": None, "uids": [], "subs": [], "secret": rec == "sec", "parts": [],
                             "revoked_at": None})
                last = "primary"
            elif keys:
                last = "sub"
                if rec == "ssb":
                    keys[-1]["secret"] = True
            if keys:
                keys[-1]["parts"].append({"validity": _field(f, 1), "bits": _int(_field(f, 2)) or 0,
                                          "algo": _int(_field(f, 3)) or 0, "expires": _int(_field(f, 6)),
                                          "capabilities": _field(f, 11), "curve": _field(f, 16), "fpr": ""})
        elif rec == "fpr" and keys and len(f) > 9:
            if last == "primary" and keys[-1]["fpr"] is None:
                keys[-1]["fpr"] = f[9]
                keys[-1]["parts"][-1]["fpr"] = f[9]
            elif last == "sub":
                keys[-1]["subs"].append(f[9])
                keys[-1]["parts"][-1]["fpr"] = f[9]
            last = None
        elif rec == "rev" and keys and len(keys[-1]["parts"]) == 1 and _field(f, 10).startswith("20"):
            keys[-1]["revoked_at"] = _int(_field(f, 5))
        elif rec == "uid" and keys and len(f) > 9:
            keys[-1]["uids"].append(_unescape_colons(f[9]))
    return [KeyInfo(fingerprint=k["fpr"] or "", uids=tuple(k["uids"]), subkeys=tuple(k["subs"]),
                    has_secret=k["secret"], revoked_at=k["revoked_at"],
                    parts=tuple(KeyPart(fingerprint=p["fpr"], algo=p["algo"], bits=p["bits"], curve=p["curve"],
                                        capabilities=p["capabilities"], validity=p["validity"],
                                        expires=p["expires"]) for p in k["parts"]))
            for k in keys]


def _field(f: list[str], i: int) -> str:
    return f[i] if len(f) > i else ""


def _int(s: str) -> int | None:
    return int(s) if s.isdigit() else None


def _unescape_colons(s: str) -> str:
    # --with-colons escapes ':' and control characters as \xNN.
    return bytes(s, "latin-1").decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


class Home:
    """A GnuPG home directory (``path`` None = the user's own)."""

    def __init__(self, path: Path | None, *, temporary: bool = False, agent: bool = True):
        self.path = path
        # Not "self.temporary": that would shadow the temporary() classmethod
        # on every instance.
        self.is_temporary = temporary
        if shutil.which(GPG) is None and not os.path.exists(GPG):
            raise GpgError("gpg not found: install GnuPG (Debian: apt-get install gnupg)")
        options = list(_TEMP_OPTIONS) if temporary else []
        if temporary and not agent:
            # A verification home never needs secret keys, so no agent may
            # be started (and left running) on its behalf.
            options.append("--no-autostart")
        self.options = options
        env = dict(os.environ)
        if temporary:
            env.pop("GNUPGHOME", None)
        self.gpg = gnupg.GPG(gpgbinary=GPG, gnupghome=str(path) if path else None, options=options, env=env)

    # --- construction --------------------------------------------------------
    @classmethod
    def user(cls) -> "Home":
        """The user's home ($GNUPGHOME or ~/.gnupg), with its agent and tokens."""
        gh = os.environ.get("GNUPGHOME")
        return cls(Path(gh) if gh else None)

    @classmethod
    @contextmanager
    def temporary(cls, *, agent: bool = False) -> Iterator["Home"]:
        # Homes of killed runs are collected (their PID is in the name).
        temps.sweep(Path(SHORT_TMP), "qg-")
        d = temps.mkdtemp(Path(SHORT_TMP), "qg-")
        os.chmod(d, 0o700)
        try:
            home = cls(d, temporary=True, agent=agent)
            # An empty trust database, made on purpose: without one, GnuPG
            # stops with "Fatal: can't open trustdb" as soon as it meets a
            # revoked or expired key, so one expired anchor would break every
            # verification.  It holds no ownertrust: --trust-model always
            # still decides nothing by it.  (Under --trust-model always GnuPG
            # would not create the file, hence the model for this one call.)
            home.run(["--trust-model", "pgp", "--import-ownertrust"], b"")
            yield home
        finally:
            if agent:
                kill_agent(d)
            shutil.rmtree(d, ignore_errors=True)

    # --- low level -------------------------------------------------------------
    def _base_cmd(self) -> list[str]:
        cmd = [GPG, "--batch", "--no-tty", "--status-fd", "1"]
        if self.path is not None:
            cmd += ["--homedir", str(self.path)]
        return cmd + self.options

    def run(self, args: list[str], data: bytes | None = None) -> tuple[int, list[str], str]:
        """Run gpg with status lines on stdout; -> (rc, status lines, stderr)."""
        try:
            p = subprocess.run(self._base_cmd() + args, input=data or b"", capture_output=True, timeout=120)
        except FileNotFoundError:
            raise GpgError(f"cannot run {GPG}: install GnuPG") from None
        except subprocess.TimeoutExpired:
            raise GpgError("gpg did not answer within 120 s (a pinentry waiting for input?)") from None
        out = p.stdout.decode("utf-8", "replace").splitlines()
        return p.returncode, out, p.stderr.decode("utf-8", "replace")

    def scratch(self, name: str, data: bytes) -> Path:
        """A file inside a throwaway home (never inside the user's)."""
        assert self.is_temporary and self.path is not None
        d = self.path / "scratch"
        d.mkdir(mode=0o700, exist_ok=True)
        p = d / name
        p.write_bytes(data)
        return p

    # --- keys --------------------------------------------------------------------
    def show_keys(self, key_data: bytes) -> list[KeyInfo]:
        """The keys in ``key_data``, without importing anything."""
        _, lines, _ = self.run(["--with-colons", "--with-sig-list", "--show-keys"], key_data)
        return parse_show_keys("\n".join(lines))

    def import_keys(self, key_data: bytes) -> list[str]:
        """Import public keys; -> primary fingerprints GnuPG reports."""
        res = self.gpg.import_keys(key_data)
        return sorted({r["fingerprint"] for r in res.results if r.get("fingerprint")})

    def export_public(self, fingerprint: str) -> bytes:
        data = self.gpg.export_keys(fingerprint, armor=True)
        return data.encode("ascii") if isinstance(data, str) else data

    def list_keys(self, *, secret: bool = False) -> list[KeyInfo]:
        _, lines, _ = self.run(["--with-colons", "--list-secret-keys" if secret else "--list-keys"])
        return parse_show_keys("\n".join(lines))

    # --- signing -------------------------------------------------------------------
    def sign(self, data: bytes, key: str | None, *, detach: bool = True, passphrase: str | None = None) -> tuple[bytes, str]:
        """Sign ``data``; -> (signature bytes, fingerprint of the signing key).

        Detached signatures are ASCII-armored; an attached signature (the
        containers "simple signing" form) is binary.  No passphrase is passed
        unless given: the agent asks through the user's pinentry, or uses
        its cache or the token."""
        # --local-user, not python-gnupg's keyid (= --default-key): with a
        # key that is not there, --default-key quietly signs with another.
        res = self.gpg.sign(data, detach=detach, clearsign=False, binary=not detach, passphrase=passphrase,
                            extra_args=["--local-user", key] if key else None)
        if not res.fingerprint or not res.data:
            raise GpgError(_sign_failure(res, key))
        return bytes(res.data), res.fingerprint

    # --- verifying ----------------------------------------------------------------
    def verify_detached(self, signature: bytes, data: bytes) -> Verification:
        """Check a detached signature over ``data`` (in a throwaway home)."""
        sig = self.scratch("sig", signature)
        rc, lines, err = self.run(["--verify", str(sig), "-"], data)
        sigs, plaintext, nodata = parse_status(lines)
        if plaintext:
            # Literal data inside a "detached" signature: it signs whatever
            # it carries, not our bytes.
            sigs = [SigResult(status="error") for _ in sigs] or [SigResult(status="error")]
        return Verification(tuple(sigs), rc, plaintext, nodata, err)

    def verify_attached(self, signed: bytes) -> tuple[Verification, bytes]:
        """Check an attached signature; -> (verification, the signed payload)."""
        src = self.scratch("signed", signed)
        out = src.parent / "payload"       # beside it, in the home's scratch folder
        out.unlink(missing_ok=True)
        rc, lines, err = self.run(["--output", str(out), "--decrypt", str(src)])
        sigs, _, nodata = parse_status(lines)       # literal data is the point here
        payload = out.read_bytes() if out.exists() else b""
        return Verification(tuple(sigs), rc, False, nodata, err), payload


def _sign_failure(res: gnupg.Sign, key: str | None) -> str:
    who = f"key {key!r}" if key else "GnuPG's default key"
    status = getattr(res, "status", None) or ""
    detail = _last_line(getattr(res, "stderr", "") or "")
    hint = ""
    if "pinentry" in (res.stderr or "").lower() or "passphrase" in status or "Inappropriate ioctl" in (res.stderr or ""):
        hint = " (the agent could not ask for the passphrase: run 'export GPG_TTY=$(tty)', or unlock the key first)"
    elif "secret key" in (res.stderr or "").lower() or "invalid signer" in status:
        hint = " (no secret key for it here: set QUORUM_SIGNING_KEY or git config user.signingkey)"
    return f"signing with {who} failed: {status or detail}{hint}"


def kill_agent(home: Path) -> None:
    """Stop the agent of a home this process created (by its socket, not by name)."""
    try:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "gpg-agent"],
                       capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def is_fingerprint(s: str) -> bool:
    """A v4 (40 hex) or v5 (64 hex) fingerprint in GnuPG's upper-case form."""
    return len(s) in (40, 64) and all(c in "0123456789ABCDEF" for c in s)
