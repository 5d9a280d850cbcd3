"""Verbs of the trust half: sign, verify, policy (rotate, sign)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .lazy import lazy
from ..text import printable
from .ui import table

if TYPE_CHECKING:   # for annotations only: the verbs import their libraries lazily
    from ..verify import Report as VerifyReport

signlib = lazy("quorum.sign")
verifylib = lazy("quorum.verify")
policymod = lazy("quorum.policy")
trustroot = lazy("quorum.trustroot")
translog = lazy("quorum.translog")


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sign", parents=[parent], help="sign the hash manifest (and each image) with your OpenPGP key",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check that every artifact in out/ matches manifests/manifest.json (you sign only what you "
                    "rebuilt), then write an armored detached signature of the manifest's bytes to "
                    "manifests/signatures/<your primary fingerprint>.asc (replacing your earlier one), append "
                    "the signing to manifests/log.jsonl, and write one containers 'simple signing' signature "
                    "per image below manifests/sigstore/.  The key is --key, else $QUORUM_SIGNING_KEY, else "
                    "'git config user.signingkey', else GnuPG's default key; your gpg-agent asks for the "
                    "passphrase or the token as usual (set GPG_TTY=$(tty) on a terminal).",
        epilog="examples:\n"
               "  quorum sign --release            first maintainer: stamp expires + commit, then sign\n"
               "  quorum sign --release --expires-in 30d\n"
               "  quorum sign                      everyone else: sign the committed manifest\n"
               "exit status: 0 signed, 1 refused (artifacts differ, not released, expired, GnuPG failed)")
    p.add_argument("--release", action="store_true",
                   help="stamp the manifest's expires and tree.commit first (drops signatures over the old bytes)")
    p.add_argument("--expires-in", default="90d", metavar="DURATION",
                   help="with --release: validity from now, e.g. 12h, 90d, 8w (default 90d)")
    p.add_argument("--commit", default=None, metavar="SHA",
                   help="with --release: the commit the artifacts were built from (default: HEAD of a clean checkout)")
    p.add_argument("--key", default=None, metavar="KEY",
                   help="signing key (fingerprint, or FPR! for one exact subkey)")
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "verify", parents=[parent], help="check the manifest's signatures against the trust policy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check manifests/signatures/ in a throwaway GnuPG home holding only the anchor keys of "
                    "manifests/policy.yaml (never your keyring or trust database).  Every role needs its "
                    "threshold of distinct primary keys; the manifest must not be expired nor older than what "
                    "this machine accepted before ($XDG_STATE_HOME/quorum/); the transparency log must be an "
                    "unbroken chain holding every counted signature; a changed policy must be signed by a "
                    "threshold of the previous version's rotation role.",
        epilog="A first use needs a pinned root ('quorum trust pin DIGEST' or --root DIGEST) or an explicit "
               "--trust-on-first-use; the tree is remembered by that root, not by its name.\n"
               "exit status: 0 the policy is satisfied, 1 it is not, 3 a file or argument is malformed")
    p.add_argument("--accept-serial", type=int, default=None, metavar="N",
                   help="forget the remembered serial and log head and accept serial N or higher (a deliberate "
                        "reset, e.g. after a withdrawn release)")
    p.add_argument("--accept-policy", action="store_true",
                   help="trust the current policy without checking its rotation chain (a deliberate reset)")
    p.add_argument("--root", default=None, metavar="DIGEST",
                   help="the trust root to start from on first use: a policy version's sha256 (sha256:HEX), "
                        "published by the project and checked by you out of band (like 'quorum trust pin')")
    p.add_argument("--trust-on-first-use", action="store_true",
                   help="on a machine that trusts no root for this tree yet, trust its policy version 1 as found")
    p.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                   help="where accepted serials are remembered (default $XDG_STATE_HOME/quorum)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "log", parents=[parent], help="print the transparency log: signings and policy rotations",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read manifests/log.jsonl, check its hash chain, and print every entry: manifest "
                    "signings, policy rotations and their approvals (docs/spec/log.md).",
        epilog="exit status: 0 the chain is whole, 1 it is broken or malformed")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("trust", parents=[parent], help="pin the trust root of a tree (pin)")
    tsub = p.add_subparsers(dest="trust_verb", metavar="ACTION")
    tp = tsub.add_parser("pin", parents=[parent], help="trust a tree from the policy with this digest on",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Remember DIGEST (the sha256 of one of a tree's policy versions, as the "
                                     "project publishes it and 'quorum verify' prints it) as a trust root: "
                                     "'quorum verify' then accepts a tree holding that policy version and "
                                     "checks every rotation after it.  Get the digest from the project "
                                     "through another channel than the repository itself.",
                         epilog="example:\n  quorum trust pin sha256:3f1c…   then: quorum verify")
    tp.add_argument("digest", metavar="DIGEST", help="sha256:<64 hex digits>")
    tp.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                    help="where trust roots are remembered (default $XDG_STATE_HOME/quorum)")
    tp.set_defaults(func=cmd_trust_pin)
    p.set_defaults(func=lambda args: (p.print_help(), 3)[1])

    p = sub.add_parser("policy", parents=[parent], help="rotate the trust policy (rotate, sign)")
    psub = p.add_subparsers(dest="policy_verb", metavar="ACTION")
    rp = psub.add_parser("rotate", parents=[parent], help="install the next version of the policy",
                         description="Keep the current manifests/policy.yaml as policy-history/<version>.yaml "
                                     "and install NEW (whose version must be one higher).  It is accepted by "
                                     "verifiers once a threshold of the old version's rotation role ran "
                                     "'quorum policy sign'.")
    rp.add_argument("new", type=Path, metavar="NEW", help="the new policy file")
    rp.set_defaults(func=cmd_policy_rotate)
    sp = psub.add_parser("sign", parents=[parent], help="approve the current policy as the previous version's "
                                                        "rotation role",
                         description="Sign manifests/policy.yaml into policy-signatures/<version>/<fpr>.asc.  "
                                     "Only keys of the previous version's rotation role may.")
    sp.add_argument("--key", default=None, metavar="KEY", help="signing key (default as for 'quorum sign')")
    sp.set_defaults(func=cmd_policy_sign)
    p.set_defaults(func=lambda args: (p.print_help(), 3)[1])


def cmd_sign(args: argparse.Namespace) -> int:
    report = signlib.sign(args.tree, key=args.key, release=args.release,
                          expires_in=signlib.parse_duration(args.expires_in), commit=args.commit)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
        return 0
    for p in report.removed:
        print(f"removed {p} (a signature over the manifest's previous bytes)")
    if report.released:
        print(f"released serial {report.serial}: expires and commit stamped into manifests/manifest.json")
    print(f"signed  manifest sha256:{report.manifest_sha256[:16]}… serial {report.serial} as "
          f"{report.uid} {report.fingerprint}")
    print(f"wrote   {report.signature}")
    print(f"logged  entry {report.log_entry['seq']} in manifests/log.jsonl")
    print(f"wrote   {len(report.images)} image signature(s) below manifests/sigstore/")
    if report.attestations:
        print(f"wrote   {len(report.attestations)} signed attestation(s) below manifests/attestations/")
    for w in report.warnings:
        print(f"warning: {w}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    report = verifylib.verify(args.tree, state_dir=args.state_dir, accept_serial=args.accept_serial,
                              accept_policy=args.accept_policy, pinned_root=args.root,
                              trust_on_first_use=args.trust_on_first_use)
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True))
    else:
        print(render(report))
    return 0 if report.ok else 1


def render(report: VerifyReport) -> str:
    lines = [f"tree {report.tree}  commit {report.commit or '-'}  serial {report.serial}  "
             f"expires {report.expires or '-'}  policy v{report.policy_version}",
             f"manifest sha256:{report.manifest_sha256}"]
    if report.root:
        lines.append(f"root sha256:{report.root.digest}  (policy v{report.root.version}, {report.root.source})")
    lines.append("")
    rows = []
    for r in report.roles:
        who = "\n".join(f"{n or '?'}  {f}" for f, n in r.signers) or "-"
        word = "ok" if r.ok else ("NOT MET" if r.policy_trusted else "POLICY NOT APPROVED")
        verdict = f"{word} ({len(r.signers)}/{r.threshold})"
        if r.rebuilders:
            # Rebuild attestations (docs/spec/attestations.md).
            verdict += (f"; rebuilt by {r.rebuilders}+ each" if not r.short else
                        f"; {len(r.short)} artifact(s) rebuilt by fewer than {r.rebuilders}: "
                        + ", ".join(f"{n} ({c})" for n, c in sorted(r.short.items())[:5]))
        rows.append([r.name, str(r.threshold), who, verdict])
    lines.append(table(rows, ["role", "threshold", "signed by (name, fingerprint)", "verdict"]))
    uncounted = [c for c in report.signatures if c.problem]
    if uncounted:
        lines += ["", "not counted:"] + [f"  {c.file.name}: {c.problem}" for c in uncounted]
    if report.notes:
        lines += [""] + [f"note: {n}" for n in report.notes]
    if report.problems:
        lines += [""] + [f"REFUSED: {p}" for p in report.problems]
    lines += ["", "verdict: " + ("ACCEPTED (the policy is satisfied)" if report.ok else "REFUSED")]
    # User ids and file names come from the tree (an attacker's key may be
    # named "\x1b[2J…"): each line is made safe for the terminal.
    return "\n".join(printable(line) for ln in lines for line in ln.split("\n"))


def cmd_log(args: argparse.Namespace) -> int:
    files = policymod.TrustFiles(args.tree)
    entries = translog.read(files.log)
    head = translog.replay(entries, files.log)
    if args.json:
        print(json.dumps({"ok": True, "entries": entries, "head": {"seq": head.seq, "hash": head.hash}},
                         sort_keys=True))
        return 0
    # The tree name in an entry is whatever the log's writer put there.
    rows = [[printable(c) for c in (str(e["seq"]), e["time"], *_log_event(e), e.get("signer", "-"))]
            for e in entries]
    print(table(rows, ["seq", "time (UTC)", "event", "what", "by"]))
    print(f"\n{head.seq} entries; chain whole; head {head.hash}")
    return 0


def _log_event(e: dict) -> tuple[str, str]:
    kind = e.get("kind")
    if kind == "policy-rotate":
        return "policy rotated", f"version {e['policy_version']} sha256:{e['policy_sha256'][:16]}…"
    if kind == "policy-sign":
        return "policy approved", f"version {e['policy_version']} sha256:{e['policy_sha256'][:16]}…"
    return "manifest signed", f"{e['tree']} serial {e['serial']} sha256:{e['manifest_sha256'][:16]}…"


def cmd_trust_pin(args: argparse.Namespace) -> int:
    path, new = trustroot.pin(args.state_dir or trustroot.default_state_dir(), args.digest)
    if args.json:
        print(json.dumps({"ok": True, "state": str(path), "new": new}, sort_keys=True))
    else:
        print(f"{'pinned' if new else 'already trusted'}: {path}")
    return 0


def cmd_policy_rotate(args: argparse.Namespace) -> int:
    pol = signlib.rotate_policy(args.tree, args.new)
    if args.json:
        print(json.dumps({"version": pol.version, "sha256": pol.sha256}))
    else:
        print(f"installed policy version {pol.version}; the previous version's "
              f"{signlib.previous_policy(policymod.TrustFiles(args.tree), pol.version).rotation_role}s "
              "now approve it with 'quorum policy sign'")
    return 0


def cmd_policy_sign(args: argparse.Namespace) -> int:
    fpr, path = signlib.sign_policy(args.tree, key=args.key)
    if args.json:
        print(json.dumps({"signer": fpr, "signature": str(path)}))
    else:
        print(f"signed policy as {fpr}: wrote {path}")
    return 0
