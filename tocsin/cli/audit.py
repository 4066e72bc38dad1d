"""``tocsin audit``: the signing key, and verifying, exporting and searching the trail."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tocsin.cli.exit_codes import EXIT_OK, EXIT_PROBLEMS
from tocsin.cli.lookups import checked_ticket, current_settings
from tocsin.cli.output import write_output


def cmd_audit_keygen(args: argparse.Namespace) -> int:
    from tocsin.audit import AuditKey, public_path

    settings = current_settings()
    path = args.key or settings.audit_key_path
    key = AuditKey.generate(path, overwrite=args.force)
    print(f"created audit signing key {key.key_id}")
    print(f"  private: {path} (keep it secret; only Tocsin's runs need it)")
    print(f"  public:  {public_path(path)} (give it to whoever verifies audit exports)")
    if args.key and args.key != settings.audit_key_path:
        print(f"  set TOCSIN_AUDIT__KEY_PATH={path} so that runs sign with it")
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from tocsin.errors import InputError
    from tocsin.evidence import verify_export_file, verify_incident

    if args.file is not None:
        if args.public_key is None:
            raise InputError(
                "verifying an export needs the public key: --public-key KEY.pub",
                "the key is the signing key's .pub file, from whoever exported the trail",
            )
        result = verify_export_file(args.file, args.public_key, args.anchor)
        key_used: Path | None = args.public_key
        if args.ticket and args.ticket != result.incident:
            raise InputError(f"{args.file} is the trail of {result.incident}, not {args.ticket}")
    else:
        if not args.ticket:
            raise InputError("name the incident: tocsin audit verify INC-1 (or --file EXPORT)")
        settings = current_settings()
        result, key_used = verify_incident(
            settings,
            checked_ticket(settings, args.ticket, or_gateway=True),
            public_key_file=args.public_key,
            anchor=args.anchor,
            check_anchors=not args.offline,
        )
    if args.json:
        print(json.dumps({**result.as_data(), "public_key": str(key_used) if key_used else None}))
        return EXIT_OK if result.ok else EXIT_PROBLEMS
    if result.ok:
        print(f"{result.incident}: audit trail intact: {result.records} records, ", end="")
        print(f"{result.checkpoints} signed checkpoints")
    else:
        count = len(result.problems)
        print(f"{result.incident}: audit trail NOT intact: {count} problem{'s' * (count > 1)}")
        for problem in result.problems:
            print(f"  {problem.message}")
    if result.head:
        print(f"  head: sha256:{result.head} (record {result.records})")
    if key_used is None:
        print("  signatures NOT checked: no public key (give --public-key KEY.pub)")
    else:
        keys = ", ".join(sorted(result.key_ids)) or "none"
        print(f"  signatures checked with {key_used} (checkpoints signed by key {keys})")
    if result.anchor_seq is not None:
        print(f"  anchor {args.anchor} found: record {result.anchor_seq}")
    for place in result.anchors:
        if not place.reachable:
            continue
        count = len(place.heads)
        found = "" if count else " (none found)"
        state = " — NOT all in the chain" if place.mismatched else ""
        if count and not place.mismatched:
            numbers = ", ".join(str(result.hashes[h.head]) for h in place.heads)
            state = f", in the chain (record{'s' * (count > 1)} {numbers})"
        print(f"  published heads in {place.place}: {count}{found}{state}")
    for note in result.notes:
        print(f"  note: {note}")
    return EXIT_OK if result.ok else EXIT_PROBLEMS


def cmd_audit_export(args: argparse.Namespace) -> int:
    from tocsin.evidence import export_incident

    settings = current_settings()
    ticket = checked_ticket(settings, args.ticket, or_gateway=True)
    export = export_incident(settings, ticket)
    if args.output is None:
        sys.stdout.write(export.text)
    else:
        write_output(args.output, export.text.encode("utf-8"))
        print(f"wrote {export.lines} lines to {args.output}", file=sys.stderr)
    if export.signed:
        return EXIT_OK
    problems = export.verification.problems
    print(
        f"the audit trail of {ticket} is NOT intact ({len(problems)} "
        f"problem{'s' * (len(problems) > 1)}), so the export was NOT signed over its last "
        f"record: {problems[0].message}",
        file=sys.stderr,
    )
    print(f"  `tocsin audit verify {ticket}` lists every problem", file=sys.stderr)
    return EXIT_PROBLEMS


def cmd_audit_hmac(args: argparse.Namespace) -> int:
    import getpass

    from tocsin.audit import AuditKey

    settings = current_settings()
    key = AuditKey.load(settings.audit_key_path)
    prompt = "e-mail address: " if args.email else "secret: "
    value = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
    if args.email:
        value = value.strip().lower()
    print(key.redact(value))
    return EXIT_OK


_AUDIT_COMMANDS = {
    "keygen": cmd_audit_keygen,
    "verify": cmd_audit_verify,
    "export": cmd_audit_export,
    "hmac": cmd_audit_hmac,
}


def cmd_audit(args: argparse.Namespace) -> int:
    """``tocsin audit ACTION``: the command of that action."""
    return _AUDIT_COMMANDS[args.audit_command](args)
